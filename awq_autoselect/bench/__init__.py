"""``benchmark_versions()``: AWQ kernel versions side by side on single-query latency.

The modules, in the order data flows: :mod:`.benchmark` (the entry point), :mod:`.runner` (loading, runs,
results), :mod:`.decoders` (eager and CUDA-graph decode loops), :mod:`.timing` (timed and profiled runs),
:mod:`.traffic` (bytes a decode step reads, peak bandwidth), :mod:`.metadata` (where it ran), :mod:`.records`
(the immutable results and their files; JSON and CSV through :mod:`awq_autoselect._codec`), :mod:`.plot`.
Importing this package imports no torch.
"""

from __future__ import annotations

from .benchmark import benchmark_versions
from .plot import check_plot_destination, plot
from .records import (
    JSON_SCHEMA,
    SCHEMA,
    BatchResult,
    BenchmarkMode,
    BenchmarkReport,
    BenchmarkRow,
    BenchmarkSettings,
    KernelShare,
    LatencyStats,
    LoadSummary,
    RunKind,
    RunMetadata,
    RunRef,
    RunSample,
    Status,
    VersionResult,
    check_report_destination,
    read_csv,
    validate_report_dict,
)
from .traffic import KNOWN_BANDWIDTH_GBPS, datasheet_bandwidth_gbps

__all__ = [
    "JSON_SCHEMA",
    "KNOWN_BANDWIDTH_GBPS",
    "SCHEMA",
    "BatchResult",
    "BenchmarkMode",
    "BenchmarkReport",
    "BenchmarkRow",
    "BenchmarkSettings",
    "KernelShare",
    "LatencyStats",
    "LoadSummary",
    "RunKind",
    "RunMetadata",
    "RunRef",
    "RunSample",
    "Status",
    "VersionResult",
    "benchmark_versions",
    "check_plot_destination",
    "check_report_destination",
    "datasheet_bandwidth_gbps",
    "plot",
    "read_csv",
    "validate_report_dict",
]


def __dir__() -> list[str]:
    return __all__
