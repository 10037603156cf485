"""Installed package versions and version comparisons: every one goes through ``packaging``.

``dist_version(name)`` reads a distribution's version without importing it; :func:`release` and
:func:`satisfies` compare versions the way pip does (``2.13.0+cpu`` is 2.13.0; a pre-release of 2.6 is not
``>= 2.6``... unless asked), so a local build tag or a ``.dev`` suffix never breaks a check.
"""

from __future__ import annotations

import importlib.metadata
import logging

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

__all__ = ["dist_version", "release", "satisfies"]

logger = logging.getLogger(__name__)


def dist_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or ``None`` when it is not installed (or unreadable)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    except Exception as exc:  # a broken dist-info must not break a probe
        logger.debug("cannot read the version of %s: %s", name, exc)
        return None


def _parse(version: str | None) -> Version | None:
    if not version:
        return None
    try:
        return Version(version.strip())
    except InvalidVersion:
        logger.debug("not a version: %r", version)
        return None


def release(version: str | None, parts: int = 3) -> tuple[int, ...]:
    """The first ``parts`` numbers of a version's release (``"2.13.0+cpu"`` -> ``(2, 13, 0)``); ``()`` if none."""
    parsed = _parse(version)
    return () if parsed is None else tuple(parsed.release[:parts])


def satisfies(version: str | None, specifier: SpecifierSet | str) -> bool:
    """Whether ``version`` is in the range ``specifier`` (``">=2.6"``); local tags and pre-releases count by
    their release numbers (``2.6.0a0+git`` satisfies ``>=2.6``, as the torch nightlies that have the ops do)."""
    parsed = _parse(version)
    if parsed is None:
        return False
    try:
        spec = specifier if isinstance(specifier, SpecifierSet) else SpecifierSet(specifier)
    except InvalidSpecifier:
        return False
    return spec.contains(Version(parsed.base_version), prereleases=True)
