"""awq_autoselect: which AutoAWQ kernel should this model use on this GPU, and does it actually work here?

The four verbs and what they return are here; everything else is imported from its own module
(``awq_autoselect.checkpoint``, ``.catalogue``, ``.environment``, ``.conversion``, ``.testing``, ``.errors``,
...; docs/architecture.md lists them). ``import awq_autoselect`` is cheap: it imports neither torch, nor pynvml,
nor awq. Those are imported inside the functions that need them.
"""

from __future__ import annotations

import logging

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


def __dir__() -> list[str]:
    return __all__
