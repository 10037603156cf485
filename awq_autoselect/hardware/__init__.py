"""Which NVIDIA GPUs this process would see as ``cuda:0, cuda:1, ...``, and their compute capability.

Invariant: detection never initializes a CUDA context (see :mod:`.detect`). The modules: :mod:`.records` (the
results), :mod:`.visible` (``CUDA_VISIBLE_DEVICES``), :mod:`.mapping` (CUDA's numbering applied to a device
table), one module per source (:mod:`.nvml`, :mod:`.torch_source`, :mod:`.smi`) and :mod:`.detect` (the entry
point and its cache). Importing this package imports neither pynvml nor torch.
"""

from __future__ import annotations

from .detect import detect_compute_capability
from .nvml import driver_version
from .records import Detection, DetectionAttempt, DetectionSource, GPUInfo
from .visible import DeviceId, DeviceIdKind, VisibleDevices, parse_cuda_visible_devices

__all__ = [
    "Detection",
    "DetectionAttempt",
    "DetectionSource",
    "DeviceId",
    "DeviceIdKind",
    "GPUInfo",
    "VisibleDevices",
    "detect_compute_capability",
    "driver_version",
    "parse_cuda_visible_devices",
]


def __dir__() -> list[str]:
    return __all__
