"""Device arguments: one parser for every ``device=`` the library takes, and one resolver to a torch device.

:func:`parse_device` reads ``"cuda"``, ``"cuda:1"``, ``"cpu"``, ``"xpu"``, ``"mps"`` without torch (selection plans
for devices this process may not have). :func:`resolve_device` turns a device argument into a ``torch.device``
that exists here (torch imported inside).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import InvalidDeviceSpecError

if TYPE_CHECKING:
    import torch

__all__ = ["DeviceSpec", "parse_device", "resolve_device"]

_DEVICE_RE = re.compile(r"([a-z_]+)(?::(\d+))?")
_KNOWN_TYPES = frozenset({"cuda", "cpu", "xpu", "mps"})


@dataclass(frozen=True)
class DeviceSpec:
    """A device type and an optional index: ``DeviceSpec("cuda", 1)`` for ``"cuda:1"``."""

    type: str
    index: int | None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


def parse_device(device: object) -> DeviceSpec:
    """Read a device argument (a string, or anything whose ``str()`` is one, such as a ``torch.device``).

    Raises:
        InvalidDeviceSpecError: not ``type`` or ``type:index`` of a known device type.
    """
    text = str(device).strip().lower()
    match = _DEVICE_RE.fullmatch(text)
    if match is None or match.group(1) not in _KNOWN_TYPES:
        raise InvalidDeviceSpecError(
            f"device {device!r}: expected 'cuda', 'cuda:N', 'cpu', 'xpu' or 'mps' (e.g. device='cuda:1')"
        )
    index = match.group(2)
    return DeviceSpec(match.group(1), None if index is None else int(index))


def resolve_device(device: object | None) -> torch.device:
    """The ``torch.device`` a device argument names here; ``None`` means the current CUDA device, else the CPU.

    A CUDA device without an index becomes the current one (``cuda:0`` unless changed).

    Raises:
        InvalidDeviceSpecError: a malformed argument, CUDA (or MPS, XPU) where this torch cannot use it, or a GPU
            index this process does not see.
    """
    import torch

    if device is None:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    spec = parse_device(device)
    if spec.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidDeviceSpecError(
                f"device {device!r}: CUDA is not available in this process (torch {torch.__version__}); "
                "use device='cpu'"
            )
        count = torch.cuda.device_count()
        if spec.index is not None and spec.index >= count:
            raise InvalidDeviceSpecError(
                f"device {device!r}: this process sees {count} GPU(s) (cuda:0 to cuda:{count - 1}); pick one of "
                "those or check CUDA_VISIBLE_DEVICES"
            )
        return torch.device("cuda", torch.cuda.current_device() if spec.index is None else spec.index)
    if spec.type != "cpu" and not _available(spec.type):
        # Checked here, before any work: torch would only fail at the first tensor moved there.
        raise InvalidDeviceSpecError(
            f"device {device!r}: torch {torch.__version__} cannot use {spec.type} in this process (its backend "
            "reports it unavailable); use device='cpu' or 'cuda'"
        )
    return torch.device(spec.type) if spec.index is None else torch.device(spec.type, spec.index)


def _available(device_type: str) -> bool:
    """Whether this torch can run on ``device_type`` (``"mps"`` or ``"xpu"``) here."""
    import torch

    if device_type == "mps":
        return bool(torch.backends.mps.is_available())
    backend = getattr(torch, device_type, None)
    is_available = getattr(backend, "is_available", None)
    return bool(is_available()) if callable(is_available) else False
