"""capability.py: ComputeCapability parses every common spelling, compares as a tuple, names its architecture."""

from __future__ import annotations

import pytest

from awq_autoselect.capability import ARCHITECTURES, ComputeCapability, architecture_name
from awq_autoselect.errors import InvalidCapabilityError


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("8.6", (8, 6)),
        (8.6, (8, 6)),
        (9.0, (9, 0)),
        ("sm_86", (8, 6)),
        ("sm86", (8, 6)),
        ("86", (8, 6)),
        ("compute_90", (9, 0)),
        ("sm_90a", (9, 0)),
        (" 12.0 ", (12, 0)),
        ((7, 5), (7, 5)),
        (ComputeCapability(10, 0), (10, 0)),
    ],
)
def test_parse(value: object, expected: tuple[int, int]) -> None:
    assert ComputeCapability.parse(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["8", "abc", "", (8,), (8, "6"), True, -1.0, "100.0", None, [8, 6]])
def test_parse_refuses(bad: object) -> None:
    with pytest.raises(InvalidCapabilityError):
        ComputeCapability.parse(bad)  # type: ignore[arg-type]


def test_value_semantics() -> None:
    cc = ComputeCapability.parse("8.9")
    assert str(cc) == "8.9"
    assert cc.sm == "sm_89"
    assert cc >= (8, 0)
    assert cc < ComputeCapability(9, 0)
    assert cc.architecture == "Ada Lovelace"
    assert {cc, ComputeCapability(8, 9)} == {cc}


@pytest.mark.parametrize(
    ("capability", "name"),
    [
        ("7.5", "Turing"),
        ("8.0", "Ampere"),
        ("8.6", "Ampere"),
        ("9.0", "Hopper"),
        ("12.0", "Blackwell"),
        ("6.1", "Pascal"),
    ],
)
def test_architecture_names(capability: str, name: str) -> None:
    assert architecture_name(capability) == name


def test_unknown_minor_falls_back_to_the_major_and_unknown_majors_say_so() -> None:
    assert architecture_name("9.9") == "Hopper"
    assert architecture_name("42.0") == "unknown"
    assert all(example for _, example in ARCHITECTURES.values())
