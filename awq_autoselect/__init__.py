"""awq_autoselect: which AutoAWQ kernel should this model use on this GPU, and does it actually work here?

``import awq_autoselect`` is cheap: it imports neither torch, nor pynvml, nor awq. Those are imported inside
the functions that need them.
"""

from __future__ import annotations

from ._version import __version__
from .benchmark import BenchmarkReport, benchmark_versions
from .capability import ComputeCapability
from .catalogue import CATALOGUE, Kernel, KernelSpec, Layout, Regime
from .checkpoint import CheckpointInfo, QuantConfig, read_checkpoint
from .conversion import convert_checkpoint
from .environment import Environment, ModuleState, ModuleStatus, probe_environment
from .errors import (
    AwqAutoselectError,
    CheckpointError,
    CheckpointNotFoundError,
    ConversionError,
    CorruptCheckpointError,
    CudaContextPoisonedError,
    FallbackWarning,
    InvalidCapabilityError,
    InvalidDeviceSpecError,
    KernelFailedError,
    NoCompatibleKernelError,
    NotAwqCheckpointError,
    UnknownVersionError,
    UnsupportedModelTypeError,
    UnsupportedQuantConfigError,
    VersionUnavailableError,
)
from .hardware import Detection, DetectionAttempt, DetectionSource, GPUInfo, detect_compute_capability
from .loading import Attempt, LoadReport, LoadResult, ProbeResult, load_dense_baseline, load_quantized_auto
from .selection import Candidate, Selection, Workload, select_awq_version
from .synthetic import make_synthetic_checkpoint

__all__ = [
    "CATALOGUE",
    "Attempt",
    "AwqAutoselectError",
    "BenchmarkReport",
    "Candidate",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "ComputeCapability",
    "ConversionError",
    "CorruptCheckpointError",
    "CudaContextPoisonedError",
    "Detection",
    "DetectionAttempt",
    "DetectionSource",
    "Environment",
    "FallbackWarning",
    "GPUInfo",
    "InvalidCapabilityError",
    "InvalidDeviceSpecError",
    "Kernel",
    "KernelFailedError",
    "KernelSpec",
    "Layout",
    "LoadReport",
    "LoadResult",
    "ModuleState",
    "ModuleStatus",
    "NoCompatibleKernelError",
    "NotAwqCheckpointError",
    "ProbeResult",
    "QuantConfig",
    "Regime",
    "Selection",
    "UnknownVersionError",
    "UnsupportedModelTypeError",
    "UnsupportedQuantConfigError",
    "VersionUnavailableError",
    "Workload",
    "__version__",
    "benchmark_versions",
    "convert_checkpoint",
    "detect_compute_capability",
    "load_dense_baseline",
    "load_quantized_auto",
    "make_synthetic_checkpoint",
    "probe_environment",
    "read_checkpoint",
    "select_awq_version",
]


def __dir__() -> list[str]:
    return __all__
