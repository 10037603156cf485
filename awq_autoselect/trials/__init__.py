"""Trials: every candidate kernel run on layers of the checkpoint's shapes, in its own child process, measured.

A kernel that crashes (a signal, an illegal memory access), does not import or returns wrong numbers is *broken*
for that shape on that machine, with the reason, and never touches the caller's process; a trial that times out or
runs out of memory is *inconclusive* and says nothing about the kernel (:class:`FailureCause`). The results are
cached on disk (:mod:`.cache`), keyed by everything that changes the answer: only ok ones, and broken ones that a
second child process repeated. :mod:`.records` holds what is measured, :mod:`.host` how busy the machine is,
:mod:`.child` runs in the child process, :mod:`.interleave` runs the children of one run round by round in
alternation, :mod:`.runner` decides what runs (the cache, the locks, confirmations).
"""

from __future__ import annotations

from .cache import CACHE_ENV, TrialCache, cache_dir, cached_trials, layer_shapes
from .host import sample_host
from .records import (
    DecodeMode,
    FailureCause,
    HostLoad,
    LayerShape,
    RowTiming,
    ShapeResult,
    TrialReport,
    TrialResult,
    TrialStatus,
)
from .runner import (
    PROGRESS_ENV,
    TIMEOUT_ENV,
    TRIALS_ENV,
    progress_enabled,
    run_trials,
    trials_enabled,
)

__all__ = [
    "CACHE_ENV",
    "PROGRESS_ENV",
    "TIMEOUT_ENV",
    "TRIALS_ENV",
    "DecodeMode",
    "FailureCause",
    "HostLoad",
    "LayerShape",
    "RowTiming",
    "ShapeResult",
    "TrialCache",
    "TrialReport",
    "TrialResult",
    "TrialStatus",
    "cache_dir",
    "cached_trials",
    "layer_shapes",
    "progress_enabled",
    "run_trials",
    "sample_host",
    "trials_enabled",
]


def __dir__() -> list[str]:
    return __all__
