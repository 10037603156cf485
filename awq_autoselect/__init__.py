"""awq_autoselect: which AutoAWQ kernel should this model use on this GPU, and does it actually work here?

The four verbs and what they return are here; everything else is imported from its own module
(``awq_autoselect.checkpoint``, ``.catalogue``, ``.environment``, ``.conversion``, ``.testing``, ``.errors``,
...; docs/architecture.md lists them). ``import awq_autoselect`` is cheap: it imports neither torch, nor pynvml,
nor awq. Those are imported inside the functions that need them.
"""

from __future__ import annotations

import importlib
import logging
import warnings

from ._version import __version__
from .bench import BenchmarkReport, benchmark_versions
from .capability import ComputeCapability
from .catalogue import Kernel
from .errors import AwqAutoselectError, FallbackWarning
from .hardware import Detection, detect_compute_capability
from .loading import LoadReport, LoadResult, load_quantized_auto
from .selection import Selection, select_awq_version
from .workload import Workload

__all__ = [
    "AwqAutoselectError",
    "BenchmarkReport",
    "ComputeCapability",
    "Detection",
    "FallbackWarning",
    "Kernel",
    "LoadReport",
    "LoadResult",
    "Selection",
    "Workload",
    "__version__",
    "benchmark_versions",
    "detect_compute_capability",
    "load_quantized_auto",
    "select_awq_version",
]

# A library logs; it never prints. Without this, Python's last-resort handler would print our warnings to stderr.
logging.getLogger(__name__).addHandler(logging.NullHandler())

#: Top-level names of 0.1.0 that live in their own modules now: they still resolve here, with a
#: DeprecationWarning, until 0.3.0 (CHANGELOG.md lists them).
DEPRECATED_NAMES: dict[str, str] = {
    "CATALOGUE": "catalogue",
    "KernelSpec": "catalogue",
    "Layout": "catalogue",
    "Regime": "catalogue",
    "CheckpointInfo": "checkpoint",
    "QuantConfig": "checkpoint",
    "read_checkpoint": "checkpoint",
    "convert_checkpoint": "conversion",
    "Environment": "environment",
    "ModuleState": "environment",
    "ModuleStatus": "environment",
    "probe_environment": "environment",
    "DetectionAttempt": "hardware",
    "DetectionSource": "hardware",
    "GPUInfo": "hardware",
    "Attempt": "loading",
    "ProbeResult": "loading",
    "load_dense_baseline": "loading",
    "Candidate": "selection",
    "make_synthetic_checkpoint": "testing",
    "CheckpointError": "errors",
    "CheckpointNotFoundError": "errors",
    "ConversionError": "errors",
    "CorruptCheckpointError": "errors",
    "CudaContextPoisonedError": "errors",
    "InvalidCapabilityError": "errors",
    "InvalidDeviceSpecError": "errors",
    "KernelFailedError": "errors",
    "NoCompatibleKernelError": "errors",
    "NotAwqCheckpointError": "errors",
    "UnknownVersionError": "errors",
    "UnsupportedModelTypeError": "errors",
    "UnsupportedQuantConfigError": "errors",
    "VersionUnavailableError": "errors",
}


def __getattr__(name: str) -> object:
    module = DEPRECATED_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"awq_autoselect.{name} is deprecated: import it from awq_autoselect.{module} (removed in 0.3.0)",
        DeprecationWarning,
        stacklevel=2,
    )
    from ._moved import resolved

    return resolved(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return __all__
