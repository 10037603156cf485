"""Compute capability as a value, and the architecture table behind it.

Imports nothing heavy: no torch, no pynvml. The table is NVIDIA's (developer.nvidia.com/cuda-gpus and
cuda-legacy-gpus, CUDA C Programming Guide); see docs/compute-capability.md for the sources and for the
corrections to the user's original notes (7.5 is Turing, RTX 30 is 8.6, RTX 40 is 8.9, GTX 10 is Pascal 6.1).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import InvalidCapabilityError

__all__ = [
    "ARCHITECTURES",
    "CapabilityLike",
    "ComputeCapability",
    "architecture_name",
]


def __dir__() -> list[str]:
    return __all__


class ComputeCapability(NamedTuple):
    """A CUDA compute capability. Compares as a tuple; prints as ``8.6``.

    >>> ComputeCapability(8, 6) >= (8, 0)
    True
    >>> str(ComputeCapability.parse("9.0"))
    '9.0'
    """

    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def sm(self) -> str:
        """The SASS target name, e.g. ``sm_86``."""
        return f"sm_{self.major}{self.minor}"

    @property
    def architecture(self) -> str:
        """The architecture's name (``Ampere``), or ``unknown`` for a capability not in the table."""
        return architecture_name(self)

    @classmethod
    def parse(cls, value: CapabilityLike) -> ComputeCapability:
        """Read a capability from ``8.6``, ``"8.6"``, ``"sm_86"``, ``"86"``, ``(8, 6)`` or another instance.

        Raises:
            InvalidCapabilityError: the value is not a capability (e.g. ``"8"``, ``"abc"``, ``-1.0``).
        """
        if isinstance(value, ComputeCapability):
            return value
        if isinstance(value, tuple):
            items: tuple[object, ...] = value
            if len(items) == 2:
                major, minor = items
                if type(major) is int and type(minor) is int:
                    return cls._checked(major, minor, value)
            raise InvalidCapabilityError(f"compute capability {value!r}: expected a (major, minor) pair of ints")
        if isinstance(value, bool):
            raise InvalidCapabilityError(f"compute capability {value!r}: expected e.g. 8.6 or '8.6'")
        if isinstance(value, float):
            text = f"{value:.1f}"
        elif isinstance(value, int):
            text = str(value)
        elif isinstance(value, str):
            text = value.strip().lower()
        else:
            raise InvalidCapabilityError(f"compute capability {value!r}: expected e.g. 8.6, '8.6' or (8, 6)")
        match = re.fullmatch(r"(?:sm_?|compute_)?(\d{1,2})\.(\d)|(?:sm_?|compute_)?(\d{1,2})(\d)a?", text)
        if match is None:
            raise InvalidCapabilityError(
                f"compute capability {value!r}: expected 'major.minor' such as '8.6' (or 'sm_86')"
            )
        if match.group(1) is not None:
            return cls._checked(int(match.group(1)), int(match.group(2)), value)
        return cls._checked(int(match.group(3)), int(match.group(4)), value)

    @classmethod
    def _checked(cls, major: int, minor: int, original: object) -> ComputeCapability:
        if not (1 <= major <= 99 and 0 <= minor <= 9):
            raise InvalidCapabilityError(f"compute capability {original!r}: major must be 1..99 and minor 0..9")
        return cls(major, minor)


CapabilityLike = ComputeCapability | tuple[int, int] | str | float | int

# (major, minor) -> (architecture, example GPUs). Source: NVIDIA's CUDA GPU tables (see module docstring).
ARCHITECTURES: dict[tuple[int, int], tuple[str, str]] = {
    (3, 0): ("Kepler", "GTX 680, Tesla K10"),
    (3, 5): ("Kepler", "Tesla K20, K40"),
    (3, 7): ("Kepler", "Tesla K80"),
    (5, 0): ("Maxwell", "GTX 750 Ti"),
    (5, 2): ("Maxwell", "GTX 900 series, TITAN X"),
    (5, 3): ("Maxwell", "Jetson Nano"),
    (6, 0): ("Pascal", "Tesla P100, Quadro GP100"),
    (6, 1): ("Pascal", "GTX 1050-1080 Ti, TITAN Xp, P40, P4"),
    (6, 2): ("Pascal", "Jetson TX2"),
    (7, 0): ("Volta", "V100, TITAN V"),
    (7, 2): ("Volta", "Jetson AGX Xavier"),
    (7, 5): ("Turing", "RTX 20 series, GTX 16 series, T4, TITAN RTX, Quadro RTX"),
    (8, 0): ("Ampere", "A100, A30"),
    (8, 6): ("Ampere", "RTX 30 series, A40, A10, A16, A2, RTX A2000-A6000"),
    (8, 7): ("Ampere", "Jetson AGX Orin, Orin NX, Orin Nano"),
    (8, 9): ("Ada Lovelace", "RTX 40 series, L4, L40, L40S, RTX 6000 Ada"),
    (9, 0): ("Hopper", "H100, H200, GH200"),
    (10, 0): ("Blackwell", "B200, GB200"),
    (10, 3): ("Blackwell", "B300, GB300"),
    (11, 0): ("Blackwell", "Jetson T5000, T4000"),
    (12, 0): ("Blackwell", "RTX 50 series, RTX PRO Blackwell"),
    (12, 1): ("Blackwell", "GB10 (DGX Spark)"),
}

_MAJOR_NAMES = {
    3: "Kepler",
    5: "Maxwell",
    6: "Pascal",
    7: "Volta",
    8: "Ampere",
    9: "Hopper",
    10: "Blackwell",
    11: "Blackwell",
    12: "Blackwell",
}


def architecture_name(capability: CapabilityLike) -> str:
    """The architecture of a capability: ``Turing`` for 7.5, ``Ada Lovelace`` for 8.9, ``unknown`` if new."""
    cc = ComputeCapability.parse(capability)
    known = ARCHITECTURES.get((cc.major, cc.minor))
    if known is not None:
        return known[0]
    return _MAJOR_NAMES.get(cc.major, "unknown")
