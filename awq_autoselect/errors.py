"""Every exception and warning class awq_autoselect raises, under one root and four bases.

=============================  ==========================================================  =========  =========
base                           what went wrong                                             builtin    CLI exit
=============================  ==========================================================  =========  =========
:class:`InvalidArgumentError`  an argument's value: a version name, a capability, a        ValueError 2
                               device, a count out of range, a missing optional package
:class:`InputError`            a file or folder: a checkpoint that is missing, not AWQ,    ValueError 3
                               unsupported or corrupt (a Hub model not found, gated or
                               not cached offline); an impossible conversion; an
                               output path that would destroy data or cannot be written
:class:`KernelError`           nothing could run: no kernel fits, the one asked for        Runtime-   1
                               cannot run here, or every kernel tried failed               Error
:class:`CudaContextPoisonedError`  a kernel broke this process's CUDA context              Runtime-   4
                                                                                           Error
=============================  ==========================================================  =========  =========

Each subclass also inherits the builtin a caller would catch anyway (``FileNotFoundError`` for a missing
checkpoint, ``PermissionError`` for a gated Hub model, ``OSError`` for an unwritable output, ``ImportError`` for a
missing optional package). Messages name the input, say what was expected and what to do. "No GPU" is not an
error: detection returns a result with reasons.

This module imports nothing of the package (annotations included): every other module imports it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

__all__ = [
    "AwqAutoselectError",
    "CheckpointAccessError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CheckpointWarning",
    "ConversionError",
    "CorruptCheckpointError",
    "CudaContextPoisonedError",
    "FallbackWarning",
    "InputError",
    "InvalidArgumentError",
    "InvalidCapabilityError",
    "InvalidDeviceSpecError",
    "InvalidReportError",
    "KernelError",
    "KernelFailedError",
    "MissingDependencyError",
    "NoCompatibleKernelError",
    "NotAwqCheckpointError",
    "OutputPathError",
    "TrialCacheWarning",
    "UnknownVersionError",
    "UnsupportedCheckpointError",
    "VersionUnavailableError",
]


class AwqAutoselectError(Exception):
    """Root of every error raised by awq_autoselect."""


# --- 1. a bad argument (exit 2) ----------------------------------------------------------------------------


class InvalidArgumentError(AwqAutoselectError, ValueError):
    """An argument's value cannot be used: out of range, malformed, or naming something that does not exist."""


class UnknownVersionError(InvalidArgumentError):
    """A kernel version name that awq_autoselect does not know."""


class InvalidCapabilityError(InvalidArgumentError):
    """A compute capability that cannot be parsed (expected e.g. ``8.6``, ``"8.6"`` or ``(8, 6)``)."""


class InvalidDeviceSpecError(InvalidArgumentError):
    """A malformed ``CUDA_VISIBLE_DEVICES`` entry or device argument, or a device this process does not have."""


class MissingDependencyError(InvalidArgumentError, ImportError):
    """An option needs an optional package that is not installed (matplotlib for plots, triton for
    ``backend="triton"``). The message names the package and how to install it."""


# --- 2. a bad input file or folder (exit 3) ----------------------------------------------------------------


class InputError(AwqAutoselectError, ValueError):
    """A file or folder given as input or output cannot be used."""


class CheckpointError(InputError):
    """A checkpoint directory cannot be used. Subclasses say why."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path does not exist, or a file the checkpoint needs is missing."""


class CheckpointAccessError(CheckpointError, PermissionError):
    """A Hugging Face Hub model this machine may not download: gated (its conditions not accepted), or the Hub
    refused the credentials. The message says how to log in (``hf auth login`` or ``HF_TOKEN``)."""


class NotAwqCheckpointError(CheckpointError):
    """The directory is a model, but not one quantized by AutoAWQ (no ``quantization_config`` with awq)."""


class UnsupportedCheckpointError(CheckpointError):
    """An AWQ checkpoint nothing here can run: its bits, group size or layout, its model type, or a model type
    that needs another transformers version (the message names the versions that work)."""


class CorruptCheckpointError(CheckpointError):
    """A weights file is truncated or unreadable, its tensors do not fit the model, or they hold NaN or inf."""


class ConversionError(InputError):
    """A packed layout cannot be converted to the requested one (e.g. asymmetric weights to Marlin)."""


class OutputPathError(InputError, OSError):
    """An output path cannot be used: writing there would delete, replace or change something awq_autoselect
    did not write itself (the source, a folder of the user's, a file that is not one of our reports), or the path
    cannot be written at all (a read-only file system, no permission, no space)."""


class InvalidReportError(InputError):
    """A JSON or CSV file is not a benchmark report of this version's schema."""


# --- 3. no kernel could run (exit 1) -----------------------------------------------------------------------


class KernelError(AwqAutoselectError, RuntimeError):
    """No kernel version could run: none fits, the one asked for cannot run here, or every one tried failed."""


class NoCompatibleKernelError(KernelError):
    """No kernel version can run this checkpoint here. ``reasons`` maps every candidate to why it was rejected."""

    def __init__(self, message: str, reasons: Mapping[str, tuple[str, ...]]) -> None:
        super().__init__(message)
        self.reasons: Mapping[str, tuple[str, ...]] = dict(reasons)


class VersionUnavailableError(KernelError):
    """A version the caller named explicitly cannot run here (and fallback was not allowed)."""

    def __init__(self, message: str, version: str, reasons: tuple[str, ...]) -> None:
        super().__init__(message)
        self.version = version
        self.reasons = reasons


class _Attempt(Protocol):
    """What an attempt of the fallback walk offers (:class:`awq_autoselect.loading.records.Attempt` is the one
    the loader raises with; its ``str()`` is one line: the kernel and how it ended)."""

    @property
    def kernel(self) -> str: ...  # a catalogue.Kernel, a str enum
    @property
    def fused(self) -> bool: ...
    @property
    def stage(self) -> str: ...  # "trial", "unmeasured", "skipped", "load", "probe" or "ok"
    @property
    def ok(self) -> bool: ...
    @property
    def error_type(self) -> str | None: ...
    @property
    def message(self) -> str: ...
    @property
    def seconds(self) -> float: ...


class KernelFailedError(KernelError):
    """Every candidate kernel failed to load or to pass the probe. ``attempts`` lists each one, in order
    (:class:`awq_autoselect.loading.records.Attempt` records)."""

    def __init__(self, message: str, attempts: Sequence[_Attempt] = ()) -> None:
        super().__init__(message)
        self.attempts: tuple[_Attempt, ...] = tuple(attempts)


# --- 4. the CUDA context is gone (exit 4) ------------------------------------------------------------------


class CudaContextPoisonedError(AwqAutoselectError, RuntimeError):
    """A CUDA error (e.g. an illegal memory access) left this process's CUDA context unusable.

    Nothing more can run on the GPU in this process. Start a new process; ``awq-autoselect tune PATH`` measures
    every kernel in child processes, so the next load avoids the one that crashed.
    """


# --- warnings ----------------------------------------------------------------------------------------------


class FallbackWarning(UserWarning):
    """A slower or different path was taken than the one requested or preferred. The message says why."""


class CheckpointWarning(UserWarning):
    """A checkpoint's files disagree, or one of them cannot be read, and the loader could go on: the message names
    the file, the values and the one used (as transformers or AutoAWQ would use it), and how to fix the files."""


class TrialCacheWarning(UserWarning):
    """The trial cache folder cannot be used (not writable, a file in its place, or inside a model checkpoint):
    nothing is cached, so trials run again on every load. Warned once per process and folder; the message names
    ``AWQ_AUTOSELECT_CACHE_DIR``, the fix."""


def __dir__() -> list[str]:
    return sorted(__all__)
