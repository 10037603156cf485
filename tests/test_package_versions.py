"""_packages.py: versions compared the way pip does, through packaging."""

from __future__ import annotations

import pytest

from awq_autoselect._packages import dist_version, release, satisfies


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("2.13.0+cpu", (2, 13, 0)),
        ("2.6", (2, 6)),
        ("2.6.0a0+git1234", (2, 6, 0)),
        ("v1.2.3", (1, 2, 3)),
        ("garbage", ()),
        (None, ()),
        ("", ()),
    ],
)
def test_release(version: str | None, expected: tuple[int, ...]) -> None:
    assert release(version) == expected


@pytest.mark.parametrize(
    ("version", "spec", "ok"),
    [
        ("2.13.0+cpu", ">=2.6", True),
        ("2.5.1", ">=2.6", False),
        ("2.6.0a0+git", ">=2.6", True),
        ("2.6.0", ">=2.6,<2.7", True),
        ("2.7.1", ">=2.6,<2.7", False),
        (None, ">=2.6", False),
        ("2.6", "not a spec", False),
    ],
)
def test_satisfies(version: str | None, spec: str, ok: bool) -> None:
    assert satisfies(version, spec) is ok


def test_dist_version() -> None:
    assert dist_version("packaging")
    assert dist_version("autoawq") == "0.2.9"
    assert dist_version("no-such-distribution-here") is None
