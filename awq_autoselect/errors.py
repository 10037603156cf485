"""Every exception and warning class awq_autoselect raises.

Each error subclasses :class:`AwqAutoselectError` and, where one fits, the builtin that callers would catch
anyway (``ValueError`` for bad input, ``FileNotFoundError`` for a missing path, ``RuntimeError`` for a kernel
that fails at run time). Messages name the input, say what was expected and what to do.

"No GPU" is not an error: detection returns an empty result with reasons.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AwqAutoselectError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConversionError",
    "CorruptCheckpointError",
    "CudaContextPoisonedError",
    "FallbackWarning",
    "InvalidBenchmarkSettingsError",
    "InvalidCapabilityError",
    "InvalidDeviceSpecError",
    "InvalidReportError",
    "InvalidWorkloadError",
    "KernelFailedError",
    "NoCompatibleKernelError",
    "NotAwqCheckpointError",
    "OutputDirNotEmptyError",
    "OutputPathError",
    "PlotUnavailableError",
    "StaticDecodeError",
    "SyntheticSpecError",
    "TorchInt4InputError",
    "TritonUnavailableError",
    "UnknownModuleError",
    "UnknownVersionError",
    "UnsupportedModelTypeError",
    "UnsupportedQuantConfigError",
    "VersionUnavailableError",
]


def __dir__() -> list[str]:
    return __all__


class AwqAutoselectError(Exception):
    """Base class of every error raised by awq_autoselect."""


# --- bad input: a checkpoint ------------------------------------------------------------------------------


class CheckpointError(AwqAutoselectError, ValueError):
    """A checkpoint directory cannot be used. Subclasses say why."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path does not exist, or a file the checkpoint needs is missing."""


class NotAwqCheckpointError(CheckpointError):
    """The directory is a model, but not one quantized by AutoAWQ (no ``quantization_config`` with awq)."""


class UnsupportedQuantConfigError(CheckpointError):
    """The checkpoint's quantization config is AWQ but uses bits, group size or layout nothing here supports."""


class UnsupportedModelTypeError(CheckpointError):
    """The model type in config.json is not one AutoAWQ 0.2.9 can load."""


class CorruptCheckpointError(CheckpointError):
    """A weights file is truncated, unreadable, or its tensors do not match the model's shapes."""


class OutputPathError(CheckpointError, OSError):
    """An output path cannot be used: writing there would delete, replace or change something awq_autoselect
    did not write itself (the source, a folder of the user's, a file that is not one of our reports), or the
    path cannot be written at all (a read-only file system, no permission, no space)."""


class ConversionError(AwqAutoselectError, ValueError):
    """A packed layout cannot be converted to the requested one (e.g. asymmetric weights to Marlin)."""


# --- bad input: names and values ---------------------------------------------------------------------------


class UnknownVersionError(AwqAutoselectError, ValueError):
    """A kernel version name that awq_autoselect does not know."""


class InvalidCapabilityError(AwqAutoselectError, ValueError):
    """A compute capability that cannot be parsed (expected e.g. ``8.6``, ``"8.6"`` or ``(8, 6)``)."""


class InvalidDeviceSpecError(AwqAutoselectError, ValueError):
    """A malformed ``CUDA_VISIBLE_DEVICES`` entry or device argument."""


# --- selection ---------------------------------------------------------------------------------------------


class NoCompatibleKernelError(AwqAutoselectError, RuntimeError):
    """No kernel version can run this checkpoint here. ``reasons`` maps every candidate to why it was rejected."""

    def __init__(self, message: str, reasons: dict[str, tuple[str, ...]]) -> None:
        super().__init__(message)
        self.reasons = reasons


class VersionUnavailableError(AwqAutoselectError, RuntimeError):
    """A version the caller named explicitly cannot run here (and fallback was not allowed)."""

    def __init__(self, message: str, version: str, reasons: tuple[str, ...]) -> None:
        super().__init__(message)
        self.version = version
        self.reasons = reasons


# --- loading -----------------------------------------------------------------------------------------------


class KernelFailedError(AwqAutoselectError, RuntimeError):
    """Every candidate kernel failed to load or to pass the probe. ``attempts`` lists each failure."""

    def __init__(self, message: str, attempts: Sequence[object] = ()) -> None:
        super().__init__(message)
        self.attempts = tuple(attempts)


class CudaContextPoisonedError(AwqAutoselectError, RuntimeError):
    """A CUDA error (e.g. an illegal memory access) left this process's CUDA context unusable.

    Nothing more can run on the GPU in this process. Probe in a fresh process instead, e.g.
    ``awq-autoselect load PATH --version gemm``, and pass the working version to ``load_quantized_auto``.
    """


# --- errors specific to one feature ----------------------------------------------------------------------


class InvalidBenchmarkSettingsError(AwqAutoselectError, ValueError):
    """An argument of :func:`benchmark_versions` is out of range (e.g. ``repeats=0``, ``new_tokens=1``)."""


class InvalidReportError(AwqAutoselectError, ValueError):
    """A JSON or CSV file is not a benchmark report of schema :data:`SCHEMA`."""


class PlotUnavailableError(AwqAutoselectError, ImportError):
    """:func:`plot` needs matplotlib, which is not installed."""


class UnknownModuleError(AwqAutoselectError, KeyError):
    """A module name that the environment probe does not report on."""

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument; show the message as written.
        return str(self.args[0]) if self.args else ""


class InvalidWorkloadError(AwqAutoselectError, ValueError):
    """A workload with a non-positive batch size or token count."""


class TorchInt4InputError(AwqAutoselectError, ValueError):
    """An input to :class:`TorchInt4Linear` whose last dimension is not the layer's ``in_features``."""


class StaticDecodeError(AwqAutoselectError, ValueError):
    """A request the static-cache decoder cannot serve: wrong shapes, a full cache, a model without a cache."""


class SyntheticSpecError(AwqAutoselectError, ValueError):
    """An argument of :func:`make_synthetic_checkpoint` is invalid (unknown shape, layer count, device)."""


class OutputDirNotEmptyError(OutputPathError):
    """The output path of :func:`make_synthetic_checkpoint` is a file or a non-empty directory."""


class TritonUnavailableError(AwqAutoselectError, ImportError):
    """``backend="triton"`` was asked for, but triton does not import here."""


# --- warnings ----------------------------------------------------------------------------------------------


class FallbackWarning(UserWarning):
    """A slower or different kernel was used than the one requested or preferred. The message says why."""
