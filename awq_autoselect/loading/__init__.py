"""``load_quantized_auto()``: load an AWQ checkpoint with a kernel proven to work on this machine.

:mod:`.load` walks the kernel chain; :mod:`.hooks` builds the model for one kernel through AutoAWQ's own
``from_quantized``; :mod:`.probe` checks the result numerically; :mod:`.records` holds what is reported.
"""

from __future__ import annotations

from .load import load_dense_baseline, load_quantized_auto
from .probe import DEFAULT_PROBE_TOLERANCE
from .records import Attempt, LayerCheck, LoadReport, LoadResult, ProbeResult

__all__ = [
    "DEFAULT_PROBE_TOLERANCE",
    "Attempt",
    "LayerCheck",
    "LoadReport",
    "LoadResult",
    "ProbeResult",
    "load_dense_baseline",
    "load_quantized_auto",
]


def __dir__() -> list[str]:
    return __all__
