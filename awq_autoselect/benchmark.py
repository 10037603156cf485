"""``benchmark_versions()``: single-query latency of AWQ kernel versions, side by side, as immutable records.

Each requested version is loaded through :func:`awq_autoselect.loading.load_quantized_auto` with
``fallback=False`` (a version that cannot run here is reported *unavailable* with the loader's reason, never
silently replaced) and then timed doing what a chat request does: a prefill of ``prompt_tokens``, then greedy
decode of exactly ``new_tokens`` tokens, end of sequence ignored. Per version and batch size the report holds
time to first token (TTFT), per-token decode latency (TPOT: mean, median, p90, p99, std), tokens/s, end-to-end
latency, GPU kernel time per decode token from a separate profiled run, peak GPU memory attributable to the
version, and the weight bandwidth that kernel time implies. docs/benchmarks.md explains every number.

Method, in short: warmup runs are kept apart from measured runs; versions are interleaved (A B A B ...) so
drift hits all of them alike; inputs are random token ids from a fixed seed (or a prompt text); timing is
``torch.cuda.synchronize`` + ``time.perf_counter`` around every step; the profiler runs only in its own,
untimed run. A version that cannot load or fails while running is a result (status and reason), not a crash.

Results serialise to JSON (schema ``awq-autoselect.bench/1``, declared in :data:`JSON_SCHEMA`), CSV (one row
per version and batch size) and Markdown. This module imports torch only inside functions.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import enum
import gc
import importlib.metadata
import inspect
import io
import json
import logging
import math
import os
import platform
import re
import socket
import subprocess
import sys
import time
import types
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeAlias, Union

from ._writing import write_file
from .catalogue import parse_kernel
from .checkpoint import CheckpointInfo, read_checkpoint
from .errors import (
    CudaContextPoisonedError,
    InvalidBenchmarkSettingsError,
    InvalidReportError,
    KernelFailedError,
    PlotUnavailableError,
    VersionUnavailableError,
)

if TYPE_CHECKING:
    import torch

    from .loading import LoadReport, LoadResult

__all__ = [
    "JSON_SCHEMA",
    "KNOWN_BANDWIDTH_GBPS",
    "SCHEMA",
    "BatchResult",
    "BenchmarkMode",
    "BenchmarkReport",
    "BenchmarkRow",
    "BenchmarkSettings",
    "InvalidBenchmarkSettingsError",
    "InvalidReportError",
    "JSONValue",
    "KernelShare",
    "LatencyStats",
    "LoadSummary",
    "PlotUnavailableError",
    "RunKind",
    "RunMetadata",
    "RunRef",
    "RunSample",
    "Status",
    "VersionResult",
    "benchmark_versions",
    "datasheet_bandwidth_gbps",
    "plot",
    "read_csv",
    "validate_report_dict",
]


def __dir__() -> list[str]:
    return __all__


logger = logging.getLogger(__name__)

SCHEMA = "awq-autoselect.bench/1"

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None

# Peak DRAM bandwidth in GB/s (10^9 B/s) from the vendors' datasheets, matched against the lower-cased
# ``torch.cuda.get_device_name()``. First match wins, so specific patterns come before general ones
# ("gh200" before "h200", "a100 ... 80gb ... pcie" before "a100 ... 80gb" before "a100").
KNOWN_BANDWIDTH_GBPS: tuple[tuple[str, float], ...] = (
    (r"\bgh200\b.*\b144g", 4900.0),  # GH200 with 144 GB HBM3e
    (r"\bgh200\b", 4000.0),  # GH200 with 96 GB HBM3
    (r"\bh200\b", 4800.0),  # H200 SXM and NVL
    (r"\bh100\b.*\bnvl\b", 3900.0),
    (r"\bh100\b.*\bpcie\b", 2000.0),
    (r"\bh100\b", 3350.0),  # H100 SXM5 ("NVIDIA H100 80GB HBM3")
    (r"\bb200\b", 8000.0),
    (r"\ba100\b.*80\s?gb.*\bpcie\b|\ba100\b.*\bpcie\b.*80\s?gb", 1935.0),
    (r"\ba100\b.*80\s?gb", 2039.0),
    (r"\ba100\b", 1555.0),  # A100 40 GB, SXM4 and PCIe
    (r"\ba30\b", 933.0),
    (r"\ba40\b", 696.0),
    (r"\ba10g?\b", 600.0),
    (r"\bl40s?\b", 864.0),
    (r"\bl4\b", 300.0),
    (r"\bt4\b", 320.0),
    (r"\bv100\b", 900.0),
    (r"\brtx 5090\b", 1792.0),
    (r"\brtx 4090\b", 1008.0),
    (r"\brtx 4080\b", 717.0),
    (r"\brtx 3090 ti\b", 1008.0),
    (r"\brtx 3090\b", 936.0),
    (r"\brtx 6000 ada\b", 960.0),
    (r"\brtx a6000\b", 768.0),
)

_FP16_NAME = "fp16"
_CPU_DENSE_NAME = "float32"
_AUTO = "auto"
# Bytes per element of the KV cache assumed for the KV-read estimate (fp16/bf16 caches).
_KV_ITEMSIZE = 2
_TOP_KERNELS = 5
_COPY_BYTES = 256 * 1024 * 1024
# Suffixes of input-embedding tables across the architectures AutoAWQ supports.
_EMBEDDING_SUFFIXES = (
    "embed_tokens.weight",
    "wte.weight",
    "word_embeddings.weight",
    "embed_in.weight",
    "tok_embeddings.weight",
)
_OUTPUT_SUFFIXES = ("lm_head.weight", "embed_out.weight", "output.weight")
_QUANT_SUFFIXES = ("qweight", "qzeros", "scales", "bias")


# --------------------------------------------------------------------------------------------------------------
# errors (module-local until errors.py grows them)


# --------------------------------------------------------------------------------------------------------------
# value types


class Status(str, enum.Enum):
    """Outcome of a version (or of one batch size of it)."""

    OK = "ok"
    UNAVAILABLE = "unavailable"  # the loader says it cannot run here (static check, load or probe failure)
    FAILED = "failed"  # it loaded, then raised while being measured (e.g. out of memory at this batch size)

    def __str__(self) -> str:
        return self.value


class RunKind(str, enum.Enum):
    """What a run was for."""

    WARMUP = "warmup"
    MEASURED = "measured"
    PROFILE = "profile"  # the untimed torch.profiler run that gives GPU kernel time

    def __str__(self) -> str:
        return self.value


class BenchmarkMode(str, enum.Enum):
    """Whether all versions were resident at once and interleaved, or loaded one after another."""

    INTERLEAVED = "interleaved"
    SEQUENTIAL = "sequential"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class LatencyStats:
    """Summary of a sample of latencies in milliseconds. Percentiles interpolate linearly between ranks."""

    count: int
    mean: float
    median: float
    p90: float
    p99: float
    std: float  # sample standard deviation (n - 1); 0.0 for a single value
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> LatencyStats:
        """Summarise ``values`` (milliseconds).

        Raises:
            ValueError: ``values`` is empty.
        """
        if not values:
            raise ValueError("LatencyStats.of() needs at least one value")
        ordered = sorted(values)
        n = len(ordered)
        mean = math.fsum(ordered) / n
        var = math.fsum((v - mean) ** 2 for v in ordered) / (n - 1) if n > 1 else 0.0
        # fsum can put the mean a rounding error outside [min, max] for identical values; clamp it back.
        mean = min(max(mean, ordered[0]), ordered[-1])
        return cls(
            count=n,
            mean=mean,
            median=_percentile(ordered, 50.0),
            p90=_percentile(ordered, 90.0),
            p99=_percentile(ordered, 99.0),
            std=math.sqrt(var),
            min=ordered[0],
            max=ordered[-1],
        )


def _percentile(ordered: Sequence[float], q: float) -> float:
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    frac = pos - low
    value = ordered[low] + (ordered[high] - ordered[low]) * frac
    return min(max(value, ordered[low]), ordered[high])


@dataclass(frozen=True)
class RunRef:
    """One run in the order it happened (``order`` counts from 0 over the whole benchmark)."""

    order: int
    version: str
    batch_size: int
    kind: RunKind
    repeat: int  # 0-based index among the runs of this kind for this version and batch size


@dataclass(frozen=True)
class RunSample:
    """The wall-clock timings of one warmup or measured run."""

    order: int  # position in :attr:`BenchmarkReport.run_order`
    repeat: int
    ttft_ms: float  # prefill forward + argmax of the first new token, synchronised
    step_ms: tuple[float, ...]  # each decode step (one forward + argmax, synchronised); new_tokens - 1 of them
    e2e_ms: float  # first token's prefill start to the last token; == ttft_ms + sum(step_ms)
    peak_delta_bytes: int | None  # CUDA: peak allocated during the run minus allocated at its start


@dataclass(frozen=True)
class KernelShare:
    """One GPU kernel name's share of a profiled decode (per decode step)."""

    name: str
    ms_per_token: float
    calls_per_token: float


@dataclass(frozen=True)
class LoadSummary:
    """What the loader reported for a version (see :class:`awq_autoselect.loading.LoadReport`)."""

    requested: str
    kernel: str | None  # the kernel that ran; None for the dense baseline
    device: str
    dtype: str
    fused: bool
    conversions: tuple[str, ...]
    attempts: tuple[str, ...]  # every load attempt, in words
    probe: str | None  # the numeric probe's verdict, in words; None if it did not run
    seconds: float


@dataclass(frozen=True)
class BatchResult:
    """One version at one batch size. Statistics are None when no measured run completed."""

    version: str
    batch_size: int
    status: Status
    reason: str | None
    ttft_ms: LatencyStats | None  # over measured runs
    tpot_ms: LatencyStats | None  # over every decode step of every measured run
    e2e_ms: LatencyStats | None  # over measured runs
    tokens_per_s: float | None  # per sequence: 1000 / tpot_ms.median
    aggregate_tokens_per_s: float | None  # all sequences: batch_size * tokens_per_s
    kernel_ms_per_token: float | None  # GPU busy time per decode step, from the profiled run
    kernel_time_note: str | None  # why kernel time is missing, if it is
    top_kernels: tuple[KernelShare, ...]
    weight_bytes_per_token: int | None  # weights one decode step reads (docs/benchmarks.md)
    kv_bytes_per_token: int | None  # KV cache one decode step reads, mean over the steps (not in bandwidth)
    achieved_bandwidth_gbps: float | None  # weight_bytes_per_token / kernel time, 10^9 B/s
    bandwidth_fraction: float | None  # of the card's peak (RunMetadata.peak_bandwidth_gbps)
    state_bytes: int | None  # CUDA memory the decoder keeps between runs (static cache, graph pool)
    peak_run_delta_bytes: int | None  # max over measured runs of RunSample.peak_delta_bytes
    peak_memory_bytes: int | None  # weights + state + peak run delta: what this version needs on the GPU
    graph_enabled: bool | None  # cuda_graph only: whether decode ran from a captured graph
    graph_fallback_reason: str | None
    warmups: tuple[RunSample, ...]
    samples: tuple[RunSample, ...]


@dataclass(frozen=True)
class VersionResult:
    """One requested version: how it loaded and its results per batch size."""

    version: str  # as requested: a kernel name, "auto", or the dense baseline ("fp16", "float32" on CPU)
    status: Status
    reason: str | None
    load: LoadSummary | None
    load_s: float | None  # wall time of the loader call, probe included
    weights_bytes: int | None  # CUDA memory allocated by loading it (allocated after - before)
    model_bytes: int | None  # bytes of the model's parameters and buffers, any device
    batches: tuple[BatchResult, ...]

    @property
    def kernel(self) -> str | None:
        """The kernel that ran (None if it did not load, or for the dense baseline)."""
        return self.load.kernel if self.load is not None else None

    def batch(self, batch_size: int) -> BatchResult:
        """The result at ``batch_size``.

        Raises:
            KeyError: no result for that batch size.
        """
        for result in self.batches:
            if result.batch_size == batch_size:
                return result
        raise KeyError(f"version {self.version!r} has no result at batch size {batch_size}")


@dataclass(frozen=True)
class BenchmarkSettings:
    """The arguments a benchmark ran with (normalised)."""

    path: str
    versions: tuple[str, ...]
    prompt_tokens: int
    new_tokens: int
    batch_sizes: tuple[int, ...]
    repeats: int
    warmup: int
    device: str | None
    include_fp16: bool
    cuda_graph: bool
    prompt: str | None
    seed: int
    kernel_time: bool


@dataclass(frozen=True)
class RunMetadata:
    """Where and with what a benchmark ran."""

    timestamp: str  # ISO 8601, UTC, when the benchmark started
    hostname: str
    python: str
    platform: str
    device: str  # "cuda:0", "cpu"
    gpu_name: str | None
    gpu_capability: str | None
    gpu_memory_bytes: int | None
    driver_version: str | None
    torch_version: str | None
    cuda_version: str | None  # the CUDA runtime torch was built with
    triton_version: str | None
    transformers_version: str | None
    autoawq_version: str | None
    awq_autoselect_version: str
    cpu_threads: int | None  # torch.get_num_threads()
    peak_bandwidth_gbps: float | None
    peak_bandwidth_source: str | None  # "datasheet: <pattern>", "measured device-to-device copy", "user"


@dataclass(frozen=True)
class BenchmarkRow:
    """One CSV row: a version at a batch size, flattened."""

    version: str
    batch_size: int
    status: Status
    reason: str | None
    kernel: str | None
    ttft_ms_median: float | None
    tpot_ms_mean: float | None
    tpot_ms_median: float | None
    tpot_ms_p90: float | None
    tpot_ms_p99: float | None
    tpot_ms_std: float | None
    tokens_per_s: float | None
    aggregate_tokens_per_s: float | None
    e2e_ms_median: float | None
    kernel_ms_per_token: float | None
    peak_memory_bytes: int | None
    achieved_bandwidth_gbps: float | None
    bandwidth_fraction: float | None
    graph_enabled: bool | None


@dataclass(frozen=True)
class BenchmarkReport:
    """Everything one :func:`benchmark_versions` call measured. Immutable; JSON, CSV and Markdown out."""

    settings: BenchmarkSettings
    metadata: RunMetadata
    mode: BenchmarkMode
    notes: tuple[str, ...]
    results: tuple[VersionResult, ...]
    run_order: tuple[RunRef, ...]
    schema: str = SCHEMA

    def result(self, version: str) -> VersionResult:
        """The result of ``version`` (as requested).

        Raises:
            KeyError: that version was not benchmarked.
        """
        for result in self.results:
            if result.version == version:
                return result
        known = ", ".join(r.version for r in self.results)
        raise KeyError(f"version {version!r} is not in this report (it has {known})")

    # --- JSON ---------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, JSONValue]:
        """A JSON-compatible dict that validates against :data:`JSON_SCHEMA`."""
        data = _to_json(self)
        assert isinstance(data, dict)
        return data

    def to_json(self, *, indent: int | None = 1) -> str:
        """The report as JSON text (schema :data:`SCHEMA`)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` to ``path`` and return it.

        Raises:
            OutputPathError: ``path`` lies inside the benchmarked checkpoint, or exists and is not a benchmark
                report (JSON of schema :data:`SCHEMA`), or cannot be written.
        """
        return write_file(path, self.to_json(), owned=_is_json_report, sources=[self.settings.path], what="--json")

    @classmethod
    def from_dict(cls, data: Mapping[str, JSONValue]) -> BenchmarkReport:
        """Rebuild a report from :meth:`to_dict` output.

        Raises:
            InvalidReportError: the data is not a report of schema :data:`SCHEMA` (every problem is listed).
        """
        problems = validate_report_dict(data)
        if problems:
            shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
            raise InvalidReportError(f"not a valid {SCHEMA} benchmark report: {shown}")
        report = _from_json(cls, data, "$")
        assert isinstance(report, BenchmarkReport)
        return report

    @classmethod
    def from_json(cls, text: str) -> BenchmarkReport:
        """Parse :meth:`to_json` output.

        Raises:
            InvalidReportError: not JSON, or not a report of schema :data:`SCHEMA`.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidReportError(f"benchmark report: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise InvalidReportError(f"benchmark report: expected a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)

    @classmethod
    def read_json(cls, path: str | os.PathLike[str]) -> BenchmarkReport:
        """Read a report written by :meth:`write_json`.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            InvalidReportError: the file is not a report of schema :data:`SCHEMA`.
        """
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    # --- CSV ----------------------------------------------------------------------------------------------

    def rows(self) -> tuple[BenchmarkRow, ...]:
        """One row per version and batch size (a version that did not load gets a row per batch size)."""
        rows: list[BenchmarkRow] = []
        for result in self.results:
            if not result.batches:
                for batch_size in self.settings.batch_sizes:
                    rows.append(_empty_row(result, batch_size))
                continue
            for batch in result.batches:
                tpot = batch.tpot_ms
                rows.append(
                    BenchmarkRow(
                        version=result.version,
                        batch_size=batch.batch_size,
                        status=batch.status,
                        reason=batch.reason,
                        kernel=result.kernel,
                        ttft_ms_median=batch.ttft_ms.median if batch.ttft_ms else None,
                        tpot_ms_mean=tpot.mean if tpot else None,
                        tpot_ms_median=tpot.median if tpot else None,
                        tpot_ms_p90=tpot.p90 if tpot else None,
                        tpot_ms_p99=tpot.p99 if tpot else None,
                        tpot_ms_std=tpot.std if tpot else None,
                        tokens_per_s=batch.tokens_per_s,
                        aggregate_tokens_per_s=batch.aggregate_tokens_per_s,
                        e2e_ms_median=batch.e2e_ms.median if batch.e2e_ms else None,
                        kernel_ms_per_token=batch.kernel_ms_per_token,
                        peak_memory_bytes=batch.peak_memory_bytes,
                        achieved_bandwidth_gbps=batch.achieved_bandwidth_gbps,
                        bandwidth_fraction=batch.bandwidth_fraction,
                        graph_enabled=batch.graph_enabled,
                    )
                )
        return tuple(rows)

    def to_csv(self) -> str:
        """:meth:`rows` as CSV text with a header row (empty cell = not measured)."""
        buffer = io.StringIO()
        names = [f.name for f in dataclasses.fields(BenchmarkRow)]
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(names)
        for row in self.rows():
            writer.writerow([_csv_cell(getattr(row, name)) for name in names])
        return buffer.getvalue()

    def write_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_csv` to ``path`` and return it (read it back with :func:`read_csv`).

        Raises:
            OutputPathError: as :meth:`write_json`, for a file that is not a benchmark CSV.
        """
        return write_file(path, self.to_csv(), owned=_is_csv_report, sources=[self.settings.path], what="--csv")

    def write_markdown(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_markdown` to ``path``, after a first line that marks the file as a benchmark report.

        Raises:
            OutputPathError: as :meth:`write_json`, for a file that does not start with that line.
        """
        text = f"{MARKDOWN_MARKER}\n{self.to_markdown()}"
        return write_file(path, text, owned=_is_markdown_report, sources=[self.settings.path], what="--markdown")

    # --- Markdown -----------------------------------------------------------------------------------------

    def to_markdown(self) -> str:
        """A Markdown table, one row per version and batch size, with a caption and the unavailable reasons."""
        meta, s = self.metadata, self.settings
        where = meta.gpu_name or f"CPU ({meta.platform})"
        decode = "CUDA graph" if s.cuda_graph else "eager"
        lines = [
            f"Decode latency on {where}: prompt {s.prompt_tokens} tokens, {s.new_tokens} new tokens, {decode} decode, "
            f"{s.repeats} measured runs after {s.warmup} warmup, {self.mode.value}. torch {meta.torch_version}, "
            f"transformers {meta.transformers_version}, autoawq {meta.autoawq_version}.",
            "",
            "| version | kernel | batch | status | TTFT ms | TPOT ms p50 | p90 | p99 | tok/s | GPU ms/tok "
            "| GB/s | % peak BW | peak mem MiB |",
            "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in self.rows():
            lines.append(
                "| "
                + " | ".join(
                    [
                        _md(row.version),
                        _md(row.kernel or "-"),
                        str(row.batch_size),
                        row.status.value,
                        _num(row.ttft_ms_median, 2),
                        _num(row.tpot_ms_median, 3),
                        _num(row.tpot_ms_p90, 3),
                        _num(row.tpot_ms_p99, 3),
                        _num(row.aggregate_tokens_per_s, 1),
                        _num(row.kernel_ms_per_token, 3),
                        _num(row.achieved_bandwidth_gbps, 1),
                        _num(row.bandwidth_fraction * 100 if row.bandwidth_fraction is not None else None, 1),
                        _num(row.peak_memory_bytes / 2**20 if row.peak_memory_bytes is not None else None, 1),
                    ]
                )
                + " |"
            )
        reasons = [f"- {_md(r.version)} at batch {r.batch_size}: {_md(r.reason)}" for r in self.rows() if r.reason]
        if reasons:
            lines += ["", *reasons]
        if self.notes:
            lines += ["", *(f"- {_md(n)}" for n in self.notes)]
        return "\n".join(lines) + "\n"


#: First line of a Markdown report file (:meth:`BenchmarkReport.write_markdown`): how an existing file is known
#: to be ours, and so may be replaced.
MARKDOWN_MARKER = "<!-- awq-autoselect benchmark report -->"
_PLOT_SOFTWARE = "awq-autoselect benchmark plot"


def _first_bytes(path: Path, count: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(count)
    except OSError:
        return b""


def _is_json_report(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and str(data.get("schema", "")).startswith("awq-autoselect.bench/")


def _is_csv_report(path: Path) -> bool:
    header = ",".join(f.name for f in dataclasses.fields(BenchmarkRow)).encode()
    return _first_bytes(path, len(header) + 2).splitlines()[:1] == [header]


def _is_markdown_report(path: Path) -> bool:
    return _first_bytes(path, len(MARKDOWN_MARKER) + 2).splitlines()[:1] == [MARKDOWN_MARKER.encode()]


def _is_plot(path: Path) -> bool:
    """A PNG whose ``Software`` text chunk says :func:`plot` drew it."""
    head = _first_bytes(path, 4096)
    return head.startswith(b"\x89PNG") and b"Software\x00" + _PLOT_SOFTWARE.encode() in head


def _empty_row(result: VersionResult, batch_size: int) -> BenchmarkRow:
    return BenchmarkRow(
        version=result.version,
        batch_size=batch_size,
        status=result.status,
        reason=result.reason,
        kernel=result.kernel,
        ttft_ms_median=None,
        tpot_ms_mean=None,
        tpot_ms_median=None,
        tpot_ms_p90=None,
        tpot_ms_p99=None,
        tpot_ms_std=None,
        tokens_per_s=None,
        aggregate_tokens_per_s=None,
        e2e_ms_median=None,
        kernel_ms_per_token=None,
        peak_memory_bytes=None,
        achieved_bandwidth_gbps=None,
        bandwidth_fraction=None,
        graph_enabled=None,
    )


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# --------------------------------------------------------------------------------------------------------------
# JSON: generic (de)serialisation of the records above, and the declared schema


def _to_json(value: object) -> JSONValue:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return _to_json(value.value)
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write the non-finite number {value!r} to a benchmark report")
        return value
    if value is None or isinstance(value, (bool, int, str)):
        return value
    raise TypeError(f"cannot serialise {type(value).__name__} in a benchmark report")


def _from_json(tp: object, data: object, where: str) -> object:
    """Rebuild a value of type ``tp`` from JSON data (already checked against :data:`JSON_SCHEMA`)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if data is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _from_json(inner, data, where)
    if origin is tuple:
        item_type = typing.get_args(tp)[0]
        if not isinstance(data, list):
            raise InvalidReportError(f"{where}: expected a list")
        return tuple(_from_json(item_type, v, f"{where}[{i}]") for i, v in enumerate(data))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise InvalidReportError(f"{where}: expected an object")
        hints = typing.get_type_hints(tp)
        kwargs = {f.name: _from_json(hints[f.name], data[f.name], f"{where}.{f.name}") for f in dataclasses.fields(tp)}
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(data)
        except ValueError:
            raise InvalidReportError(f"{where}: {data!r} is not a {tp.__name__}") from None
    if tp is float and isinstance(data, (int, float)) and not isinstance(data, bool):
        return float(data)
    if isinstance(tp, type) and isinstance(data, tp) and not (tp is int and isinstance(data, bool)):
        return data
    raise InvalidReportError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {data!r}")


def _nullable(schema: dict[str, JSONValue]) -> dict[str, JSONValue]:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(properties: dict[str, JSONValue]) -> dict[str, JSONValue]:
    return {
        "type": "object",
        "properties": dict(properties),
        "required": list[JSONValue](sorted(properties)),
        "additionalProperties": False,
    }


_NONNEG: dict[str, JSONValue] = {"type": "number", "minimum": 0}
_COUNT: dict[str, JSONValue] = {"type": "integer", "minimum": 0}
_POS: dict[str, JSONValue] = {"type": "integer", "minimum": 1}
_STR: dict[str, JSONValue] = {"type": "string"}
_BOOL: dict[str, JSONValue] = {"type": "boolean"}
_STATUS: dict[str, JSONValue] = {"enum": [s.value for s in Status]}


def _ref(name: str) -> dict[str, JSONValue]:
    return {"$ref": f"#/$defs/{name}"}


def _list(items: dict[str, JSONValue]) -> dict[str, JSONValue]:
    return {"type": "array", "items": items}


#: JSON Schema (draft 2020-12) of :meth:`BenchmarkReport.to_dict` output. :func:`validate_report_dict`
#: checks data against it; any validator that implements the draft will do.
JSON_SCHEMA: dict[str, JSONValue] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "awq_autoselect benchmark report",
    "description": "Output of awq_autoselect.benchmark.benchmark_versions(); see docs/benchmarks.md.",
    **_obj(
        {
            "schema": {"const": SCHEMA},
            "settings": _ref("settings"),
            "metadata": _ref("metadata"),
            "mode": {"enum": [m.value for m in BenchmarkMode]},
            "notes": _list(_STR),
            "results": _list(_ref("version")),
            "run_order": _list(_ref("run")),
        }
    ),
    "$defs": {
        "settings": _obj(
            {
                "path": _STR,
                "versions": _list(_STR),
                "prompt_tokens": _POS,
                "new_tokens": {"type": "integer", "minimum": 2},
                "batch_sizes": {**_list(_POS), "minItems": 1},
                "repeats": _POS,
                "warmup": _COUNT,
                "device": _nullable(_STR),
                "include_fp16": _BOOL,
                "cuda_graph": _BOOL,
                "prompt": _nullable(_STR),
                "seed": {"type": "integer"},
                "kernel_time": _BOOL,
            }
        ),
        "metadata": _obj(
            {
                "timestamp": _STR,
                "hostname": _STR,
                "python": _STR,
                "platform": _STR,
                "device": _STR,
                "gpu_name": _nullable(_STR),
                "gpu_capability": _nullable(_STR),
                "gpu_memory_bytes": _nullable(_COUNT),
                "driver_version": _nullable(_STR),
                "torch_version": _nullable(_STR),
                "cuda_version": _nullable(_STR),
                "triton_version": _nullable(_STR),
                "transformers_version": _nullable(_STR),
                "autoawq_version": _nullable(_STR),
                "awq_autoselect_version": _STR,
                "cpu_threads": _nullable(_POS),
                "peak_bandwidth_gbps": _nullable({"type": "number", "exclusiveMinimum": 0}),
                "peak_bandwidth_source": _nullable(_STR),
            }
        ),
        "run": _obj(
            {
                "order": _COUNT,
                "version": _STR,
                "batch_size": _POS,
                "kind": {"enum": [k.value for k in RunKind]},
                "repeat": _COUNT,
            }
        ),
        "stats": _obj(
            {
                "count": _POS,
                "mean": _NONNEG,
                "median": _NONNEG,
                "p90": _NONNEG,
                "p99": _NONNEG,
                "std": _NONNEG,
                "min": _NONNEG,
                "max": _NONNEG,
            }
        ),
        "sample": _obj(
            {
                "order": _COUNT,
                "repeat": _COUNT,
                "ttft_ms": _NONNEG,
                "step_ms": _list(_NONNEG),
                "e2e_ms": _NONNEG,
                "peak_delta_bytes": _nullable(_COUNT),
            }
        ),
        "kernel_share": _obj({"name": _STR, "ms_per_token": _NONNEG, "calls_per_token": _NONNEG}),
        "load": _obj(
            {
                "requested": _STR,
                "kernel": _nullable(_STR),
                "device": _STR,
                "dtype": _STR,
                "fused": _BOOL,
                "conversions": _list(_STR),
                "attempts": _list(_STR),
                "probe": _nullable(_STR),
                "seconds": _NONNEG,
            }
        ),
        "batch": _obj(
            {
                "version": _STR,
                "batch_size": _POS,
                "status": _STATUS,
                "reason": _nullable(_STR),
                "ttft_ms": _nullable(_ref("stats")),
                "tpot_ms": _nullable(_ref("stats")),
                "e2e_ms": _nullable(_ref("stats")),
                "tokens_per_s": _nullable(_NONNEG),
                "aggregate_tokens_per_s": _nullable(_NONNEG),
                "kernel_ms_per_token": _nullable(_NONNEG),
                "kernel_time_note": _nullable(_STR),
                "top_kernels": _list(_ref("kernel_share")),
                "weight_bytes_per_token": _nullable(_COUNT),
                "kv_bytes_per_token": _nullable(_COUNT),
                "achieved_bandwidth_gbps": _nullable(_NONNEG),
                "bandwidth_fraction": _nullable(_NONNEG),
                "state_bytes": _nullable(_COUNT),
                "peak_run_delta_bytes": _nullable(_COUNT),
                "peak_memory_bytes": _nullable(_COUNT),
                "graph_enabled": _nullable(_BOOL),
                "graph_fallback_reason": _nullable(_STR),
                "warmups": _list(_ref("sample")),
                "samples": _list(_ref("sample")),
            }
        ),
        "version": _obj(
            {
                "version": _STR,
                "status": _STATUS,
                "reason": _nullable(_STR),
                "load": _nullable(_ref("load")),
                "load_s": _nullable(_NONNEG),
                "weights_bytes": _nullable({"type": "integer"}),
                "model_bytes": _nullable(_COUNT),
                "batches": _list(_ref("batch")),
            }
        ),
    },
}


def validate_report_dict(data: object, schema: Mapping[str, JSONValue] | None = None) -> list[str]:
    """Check ``data`` against :data:`JSON_SCHEMA` (or ``schema``); return every problem found (empty: valid).

    Implements the subset of JSON Schema that :data:`JSON_SCHEMA` uses: ``type``, ``const``, ``enum``,
    ``properties``, ``required``, ``additionalProperties: false``, ``items``, ``minItems``, ``minimum``,
    ``exclusiveMinimum``, ``anyOf`` and local ``$ref``.
    """
    root = JSON_SCHEMA if schema is None else schema
    problems: list[str] = []
    _check(data, root, root, "$", problems)
    return problems


_JSON_TYPES: dict[str, Callable[[object], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _check(
    data: object, schema: Mapping[str, JSONValue], root: Mapping[str, JSONValue], where: str, problems: list[str]
) -> None:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target: JSONValue = dict(root)
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict), ref
            target = target[part]
        assert isinstance(target, dict), ref
        _check(data, target, root, where, problems)
        return
    any_of = schema.get("anyOf")
    if isinstance(any_of, list):
        for option in any_of:
            assert isinstance(option, dict)
            trial: list[str] = []
            _check(data, option, root, where, trial)
            if not trial:
                break
        else:
            problems.append(f"{where}: {_short_repr(data)} matches none of the allowed forms")
        return
    if "const" in schema and data != schema["const"]:
        problems.append(f"{where}: expected {schema['const']!r}, got {_short_repr(data)}")
        return
    allowed = schema.get("enum")
    if isinstance(allowed, list) and data not in allowed:
        problems.append(f"{where}: {_short_repr(data)} is not one of {allowed}")
        return
    kind = schema.get("type")
    if isinstance(kind, str) and not _JSON_TYPES[kind](data):
        problems.append(f"{where}: expected {kind}, got {_short_repr(data)}")
        return
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        if isinstance(data, float) and not math.isfinite(data):
            problems.append(f"{where}: {data!r} is not a finite number")
        minimum = schema.get("minimum")
        if isinstance(minimum, (int, float)) and data < minimum:
            problems.append(f"{where}: {data!r} is below the minimum {minimum}")
        exclusive = schema.get("exclusiveMinimum")
        if isinstance(exclusive, (int, float)) and data <= exclusive:
            problems.append(f"{where}: {data!r} must be greater than {exclusive}")
    if isinstance(data, dict):
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        for name in required if isinstance(required, list) else []:
            if isinstance(name, str) and name not in data:
                problems.append(f"{where}: missing {name!r}")
        for name, value in data.items():
            sub = props.get(name)
            if isinstance(sub, dict):
                _check(value, sub, root, f"{where}.{name}", problems)
            elif schema.get("additionalProperties") is False:
                problems.append(f"{where}: unexpected key {name!r}")
    if isinstance(data, list):
        min_items = schema.get("minItems")
        if isinstance(min_items, int) and len(data) < min_items:
            problems.append(f"{where}: needs at least {min_items} item(s)")
        items = schema.get("items")
        if isinstance(items, dict):
            for i, value in enumerate(data):
                _check(value, items, root, f"{where}[{i}]", problems)


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------------------------
# CSV


def _csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back to the same float
    return str(value)


def _csv_value(tp: object, text: str, where: str) -> object:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        if text == "":
            return None
        (tp,) = [a for a in args if a is not type(None)]
    try:
        if tp is bool:
            if text not in ("true", "false"):
                raise ValueError(text)
            return text == "true"
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return tp(text)
    except ValueError:
        raise InvalidReportError(f"{where}: {text!r} is not a valid {getattr(tp, '__name__', tp)}") from None
    return text


def read_csv(path: str | os.PathLike[str]) -> tuple[BenchmarkRow, ...]:
    """Read a CSV file written by :meth:`BenchmarkReport.write_csv` back into rows.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        InvalidReportError: the header or a cell does not match :class:`BenchmarkRow`.
    """
    hints = typing.get_type_hints(BenchmarkRow)
    names = [f.name for f in dataclasses.fields(BenchmarkRow)]
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header != names:
            raise InvalidReportError(
                f"{path}: the header {header} is not that of a benchmark CSV ({', '.join(names)}); "
                "write the file with BenchmarkReport.write_csv()"
            )
        rows: list[BenchmarkRow] = []
        for line, cells in enumerate(reader, start=2):
            if len(cells) != len(names):
                raise InvalidReportError(f"{path}:{line}: {len(cells)} cells, expected {len(names)}")
            values = {n: _csv_value(hints[n], c, f"{path}:{line}: {n}") for n, c in zip(names, cells, strict=True)}
            rows.append(BenchmarkRow(**values))  # type: ignore[arg-type]
    return tuple(rows)


# --------------------------------------------------------------------------------------------------------------
# what a decode step reads


def _is_quantized_tensor(name: str, prefixes: frozenset[str]) -> bool:
    prefix, _, suffix = name.rpartition(".")
    return suffix in _QUANT_SUFFIXES and prefix in prefixes


def _weight_bytes_per_token(info: CheckpointInfo, batch_size: int, dense_itemsize: int, *, dense: bool) -> int:
    """Bytes of weights one decode step reads at least once, whatever the kernel.

    Quantized layers count as stored in the checkpoint (packed int4 + zeros + scales (+ bias)), the same for
    every version; with ``dense`` (the fp16 baseline) as ``in * out`` dense weights of ``dense_itemsize``
    instead. Every other tensor (norms, lm_head, biases) counts at ``dense_itemsize`` per element, except the
    input embedding table, of which only the ``batch_size`` gathered rows are read; a model without a separate
    output projection (tied embeddings) reads the whole table as its lm_head, so then it counts in full.
    """
    prefixes = frozenset(layer.prefix for layer in info.layers)
    if dense:
        total = sum(
            (layer.in_features * layer.out_features + (layer.out_features if layer.has_bias else 0)) * dense_itemsize
            for layer in info.layers
        )
    else:
        total = info.quantized_bytes
    tied = not any(name.endswith(_OUTPUT_SUFFIXES) for name in info.tensors)
    for name, meta in info.tensors.items():
        if _is_quantized_tensor(name, prefixes):
            continue
        elements = math.prod(meta.shape)
        if name.endswith(_EMBEDDING_SUFFIXES) and not tied and len(meta.shape) == 2:
            total += batch_size * meta.shape[1] * dense_itemsize
        else:
            total += elements * dense_itemsize
    return total


def _kv_bytes_per_token(
    config: Mapping[str, object], prompt_tokens: int, new_tokens: int, batch_size: int
) -> int | None:
    """Mean bytes of KV cache one decode step reads (a 2-byte cache of every past position), or None."""
    text = config.get("text_config")
    cfg: Mapping[str, object] = text if isinstance(text, dict) else config
    layers, heads, hidden = cfg.get("num_hidden_layers"), cfg.get("num_attention_heads"), cfg.get("hidden_size")
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim")
    if not all(isinstance(v, int) and v > 0 for v in (layers, heads, hidden, kv_heads)):
        return None
    assert isinstance(layers, int)
    assert isinstance(heads, int)
    assert isinstance(hidden, int)
    assert isinstance(kv_heads, int)
    if not (isinstance(head_dim, int) and head_dim > 0):
        head_dim = hidden // heads
    steps = new_tokens - 1
    # decode step i (0-based) attends over prompt + 1 + i positions (the prompt, earlier tokens, itself)
    mean_context = prompt_tokens + 1 + (steps - 1) / 2
    per_position = 2 * layers * kv_heads * head_dim * _KV_ITEMSIZE  # K and V
    return round(per_position * mean_context * batch_size)


def datasheet_bandwidth_gbps(gpu_name: str) -> tuple[float, str] | None:
    """The datasheet peak memory bandwidth (GB/s) of a GPU by its name, and the table pattern that matched.

    >>> datasheet_bandwidth_gbps("NVIDIA H100 80GB HBM3")
    (3350.0, '\\\\bh100\\\\b')
    """
    lowered = gpu_name.lower()
    for pattern, gbps in KNOWN_BANDWIDTH_GBPS:
        if re.search(pattern, lowered):
            return gbps, pattern
    return None


# --------------------------------------------------------------------------------------------------------------
# decoders: the eager loop and the CUDA-graph helper behind one interface


class _Decoder(Protocol):
    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor: ...

    def decode_step(self, token_ids: torch.Tensor) -> torch.Tensor: ...

    def release(self) -> None: ...


def _hf_model(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face model inside AutoAWQ's wrapper (whose forward only forwards), or ``model`` itself."""
    from transformers import PreTrainedModel

    inner = getattr(model, "model", None)
    if not isinstance(model, PreTrainedModel) and isinstance(inner, PreTrainedModel):
        return inner
    return model


class _EagerDecoder:
    """``model(ids, use_cache=True)``, then one forward per token with the returned cache (as generate() does)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._model = _hf_model(model)
        params = inspect.signature(self._model.forward).parameters
        # transformers 5.2x renamed past_key_values to cache (the old name warns); accept either.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        # Like generate(), compute logits for the last position only when the model supports it.
        self._extra: dict[str, object] = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self._cache: object = None

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        self._cache = None
        out = self._model(input_ids=input_ids, use_cache=True, **self._extra)
        self._cache = _output_cache(out)
        logits: torch.Tensor = out.logits[:, -1, :]
        return logits

    def decode_step(self, token_ids: torch.Tensor) -> torch.Tensor:
        kwargs = {self._cache_arg: self._cache, **self._extra}
        out = self._model(input_ids=token_ids, use_cache=True, **kwargs)
        self._cache = _output_cache(out)
        logits: torch.Tensor = out.logits[:, -1, :]
        return logits

    def release(self) -> None:
        self._cache = None


def _output_cache(out: Mapping[str, object]) -> object:
    cache = out.get("cache")
    return cache if cache is not None else out.get("past_key_values")


class _GraphDecoder:
    """:class:`awq_autoselect.cudagraph.StaticDecoder` (static KV cache, decode from a captured CUDA graph)."""

    def __init__(self, model: torch.nn.Module, batch_size: int, max_cache_len: int) -> None:
        from .cudagraph import StaticDecoder

        self._decoder = StaticDecoder(model, batch_size=batch_size, max_cache_len=max_cache_len, use_cuda_graph=True)

    @property
    def graph_enabled(self) -> bool:
        return bool(self._decoder.graph_enabled)

    @property
    def fallback_reason(self) -> str | None:
        reason = self._decoder.fallback_reason
        return None if reason is None else str(reason)

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self._decoder.prefill(input_ids)
        return logits

    def decode_step(self, token_ids: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self._decoder.decode_step(token_ids)
        return logits

    def release(self) -> None:
        """The static cache stays allocated for the next run (it is counted in ``state_bytes``)."""


# --------------------------------------------------------------------------------------------------------------
# one run


@dataclass
class _Raw:
    ttft_s: float
    steps_s: list[float]
    e2e_s: float
    peak_delta: int | None
    persistent_delta: int | None


class _Device:
    """The device the models run on, with synchronisation and allocator statistics where it has them."""

    def __init__(self, dev: torch.device) -> None:
        import torch

        self.dev = dev
        self.is_cuda = dev.type == "cuda"
        self._torch = torch

    def sync(self) -> None:
        if self.is_cuda:
            self._torch.cuda.synchronize(self.dev)

    def allocated(self) -> int | None:
        return int(self._torch.cuda.memory_allocated(self.dev)) if self.is_cuda else None

    def reset_peak(self) -> None:
        if self.is_cuda:
            self._torch.cuda.reset_peak_memory_stats(self.dev)

    def peak(self) -> int | None:
        return int(self._torch.cuda.max_memory_allocated(self.dev)) if self.is_cuda else None

    def free(self) -> None:
        gc.collect()
        if self.is_cuda:
            self._torch.cuda.empty_cache()

    def prime(self) -> None:
        """Create the cuBLAS handle and workspace now, so the first version loaded is not charged for them."""
        if self.is_cuda:
            torch = self._torch
            for dtype in (torch.float16, torch.bfloat16, torch.float32):
                a = torch.ones((64, 64), dtype=dtype, device=self.dev)
                (a @ a).sum().item()
            self.sync()

    def free_bytes(self) -> int | None:
        if not self.is_cuda:
            return None
        free, _total = self._torch.cuda.mem_get_info(self.dev)
        return int(free)


def _timed_run(decoder: _Decoder, input_ids: torch.Tensor, new_tokens: int, device: _Device) -> _Raw:
    """One prefill + ``new_tokens - 1`` greedy decode steps, each synchronised and stamped with perf_counter."""
    import torch

    device.sync()
    start_alloc = device.allocated()
    device.reset_peak()
    # As timeit does: no garbage collection inside the timed loop, where a pause would land on one version only.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with torch.inference_mode():
            t0 = time.perf_counter()
            token = decoder.prefill(input_ids).argmax(dim=-1, keepdim=True)
            device.sync()
            last = time.perf_counter()
            ttft = last - t0
            steps: list[float] = []
            for _ in range(new_tokens - 1):
                token = decoder.decode_step(token).argmax(dim=-1, keepdim=True)
                device.sync()
                now = time.perf_counter()
                steps.append(now - last)
                last = now
    finally:
        if gc_was_enabled:
            gc.enable()
    e2e = last - t0
    peak = device.peak()
    peak_delta = peak - start_alloc if peak is not None and start_alloc is not None else None
    del token
    decoder.release()
    end_alloc = device.allocated()
    persistent = end_alloc - start_alloc if end_alloc is not None and start_alloc is not None else None
    return _Raw(ttft, steps, e2e, None if peak_delta is None else max(peak_delta, 0), persistent)


def _profiled_run(
    decoder: _Decoder, input_ids: torch.Tensor, new_tokens: int, device: _Device
) -> tuple[float | None, tuple[KernelShare, ...], str | None]:
    """GPU busy time per decode step from torch.profiler (CUDA activity only), in its own untimed run.

    Returns ``(ms_per_token, top_kernels, note)``; ``ms_per_token`` is None with a note when nothing was recorded.
    """
    import torch
    from torch.profiler import DeviceType, ProfilerActivity, profile

    steps = new_tokens - 1
    with torch.inference_mode():
        token = decoder.prefill(input_ids).argmax(dim=-1, keepdim=True)
        device.sync()
        with warnings.catch_warnings():
            # The profiler's own chatter (e.g. about CUPTI) is not the model's business; the model's warnings
            # still show.
            warnings.filterwarnings("ignore", module=r"torch\.(profiler|autograd)")
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(steps):
                    token = decoder.decode_step(token).argmax(dim=-1, keepdim=True)
                device.sync()
            events = list(prof.events())
    del token
    decoder.release()
    totals: dict[str, list[float]] = {}
    for event in events:
        if event.device_type == DeviceType.CUDA:
            entry = totals.setdefault(str(event.name)[:200], [0.0, 0.0])
            entry[0] += float(event.time_range.elapsed_us())
            entry[1] += 1.0
    if not totals:
        return None, (), "torch.profiler recorded no CUDA kernels (CUPTI unavailable?)"
    busy_us = sum(total for total, _ in totals.values())
    top = sorted(totals.items(), key=lambda kv: kv[1][0], reverse=True)[:_TOP_KERNELS]
    shares = tuple(KernelShare(name, total / 1000.0 / steps, calls / steps) for name, (total, calls) in top)
    return busy_us / 1000.0 / steps, shares, None


def _to_sample(raw: _Raw, order: int, repeat: int) -> RunSample:
    return RunSample(
        order=order,
        repeat=repeat,
        ttft_ms=raw.ttft_s * 1000.0,
        step_ms=tuple(s * 1000.0 for s in raw.steps_s),
        e2e_ms=raw.e2e_s * 1000.0,
        peak_delta_bytes=raw.peak_delta,
    )


# --------------------------------------------------------------------------------------------------------------
# the loader seam


_Loader = Callable[[str, str, "str | None"], "LoadResult"]


def _default_loader(path: str, version: str, device: str | None) -> LoadResult:
    """Load ``version`` with the project's loader; the dense baseline for the fp16 pseudo-version."""
    from .loading import load_dense_baseline, load_quantized_auto

    if version in (_FP16_NAME, _CPU_DENSE_NAME):
        import torch

        return load_dense_baseline(path, device=device, dtype=torch.float16 if version == _FP16_NAME else None)
    # Unfused: AutoAWQ's fused blocks keep their own KV cache and attention, so they would measure another
    # model; fallback=False so a version that cannot run is reported rather than replaced.
    return load_quantized_auto(path, version, device=device, fuse_layers=False, fallback=False)


def _summarise(report: LoadReport) -> LoadSummary:
    probe = report.probe
    probe_text = None if probe is None else f"{'ok' if probe.ok else 'failed'}: {probe.message}"
    return LoadSummary(
        requested=str(report.requested),
        kernel=None if report.kernel is None else str(report.kernel.value),
        device=str(report.device),
        dtype=str(report.dtype),
        fused=bool(report.fused),
        conversions=tuple(str(c) for c in report.conversions),
        attempts=tuple(str(a) for a in report.attempts),
        probe=probe_text,
        seconds=max(float(report.seconds), 0.0),
    )


# --------------------------------------------------------------------------------------------------------------
# the benchmark


@dataclass
class _Version:
    """Mutable bookkeeping for one version while the benchmark runs."""

    name: str
    status: Status = Status.OK
    reason: str | None = None
    load: LoadSummary | None = None
    load_s: float | None = None
    weights_bytes: int | None = None
    model_bytes: int | None = None
    model: torch.nn.Module | None = None
    dense_itemsize: int = 2
    batches: list[BatchResult] = dataclasses.field(default_factory=list)


@dataclass
class _BatchRun:
    """Mutable bookkeeping for one version at one batch size."""

    version: _Version
    decoder: _Decoder | None = None
    failed: str | None = None
    state_bytes: int | None = None
    warmups: list[RunSample] = dataclasses.field(default_factory=list)
    samples: list[RunSample] = dataclasses.field(default_factory=list)
    kernel_ms: float | None = None
    kernel_note: str | None = None
    top: tuple[KernelShare, ...] = ()
    graph_enabled: bool | None = None
    graph_reason: str | None = None

    def note_graph(self) -> None:
        """Record whether the CUDA graph is in use (capture happens, or fails, at the first decode step)."""
        if isinstance(self.decoder, _GraphDecoder):
            self.graph_enabled, self.graph_reason = self.decoder.graph_enabled, self.decoder.fallback_reason


class _Progress:
    def __init__(self, enabled: bool, total: int) -> None:
        self._bar: object = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                logger.debug("tqdm is not installed: no progress bar")
            else:
                self._bar = tqdm(total=total, desc="benchmark", unit="run", leave=False)

    def step(self, text: str) -> None:
        bar = self._bar
        if bar is not None:
            bar.set_postfix_str(text, refresh=False)  # type: ignore[attr-defined]
            bar.update(1)  # type: ignore[attr-defined]

    def close(self) -> None:
        bar = self._bar
        if bar is not None:
            bar.close()  # type: ignore[attr-defined]


class _OutOfMemoryError(Exception):
    """Loading a version ran out of GPU memory."""


class _Runner:
    """Runs the plan: loads, warmups, measured runs, profiled runs; keeps the run log."""

    def __init__(
        self,
        *,
        settings: BenchmarkSettings,
        info: CheckpointInfo,
        loader: _Loader,
        device: _Device,
        prompts: torch.Tensor,
        peak_gbps: float | None,
        progress: _Progress,
    ) -> None:
        self.s = settings
        self.info = info
        self.loader = loader
        self.device = device
        self.prompts = prompts
        self.peak_gbps = peak_gbps
        self.progress = progress
        self.run_order: list[RunRef] = []
        self.notes: list[str] = []
        self.poisoned: str | None = None

    # --- loading -----------------------------------------------------------------------------------------

    def load(self, version: _Version) -> None:
        """Load ``version``; on failure record why.

        Raises:
            _OutOfMemoryError: the GPU ran out of memory while loading (the caller decides what that means).
        """
        import torch

        if self.poisoned:
            version.status, version.reason = Status.FAILED, self.poisoned
            return
        self.device.free()
        before = self.device.allocated()
        t0 = time.perf_counter()
        try:
            loaded = self.loader(self.s.path, version.name, self.s.device)
        except torch.cuda.OutOfMemoryError as exc:
            self.device.free()
            raise _OutOfMemoryError(str(exc)) from exc
        except KernelFailedError as exc:
            if any(getattr(a, "error_type", None) == "OutOfMemoryError" for a in exc.attempts):
                self.device.free()
                raise _OutOfMemoryError(str(exc)) from exc
            version.status, version.reason = Status.UNAVAILABLE, str(exc)
            return
        except VersionUnavailableError as exc:
            version.status, version.reason = Status.UNAVAILABLE, str(exc)
            return
        except CudaContextPoisonedError as exc:
            version.status, version.reason = Status.FAILED, str(exc)
            self.poisoned = f"not run: an earlier CUDA error left this process's CUDA context unusable ({exc})"
            self.notes.append(f"a CUDA error stopped all later GPU work: {exc}")
            return
        except Exception as exc:  # a version failing to load must not end the benchmark of the others
            logger.warning("loading %s failed", version.name, exc_info=True)
            version.status, version.reason = Status.FAILED, f"loading failed: {type(exc).__name__}: {exc}"
            self._check_poison(exc)
            return
        version.load_s = time.perf_counter() - t0
        version.model = loaded.model
        version.load = _summarise(loaded.report)
        self.device.sync()
        after = self.device.allocated()
        version.weights_bytes = after - before if after is not None and before is not None else None
        version.model_bytes, version.dense_itemsize = _model_bytes(loaded.model)

    def unload(self, version: _Version) -> None:
        version.model = None
        self.device.free()

    def _check_poison(self, exc: BaseException) -> None:
        text = str(exc)
        if self.device.is_cuda and (
            "illegal memory access" in text or "CUDA error" in text or "device-side assert" in text
        ):
            self.poisoned = f"not run: an earlier CUDA error may have left the CUDA context unusable ({text[:200]})"
            self.notes.append(f"a CUDA error stopped all later GPU work: {text[:300]}")

    # --- one batch size ----------------------------------------------------------------------------------

    def bench_batch(self, versions: Sequence[_Version], batch_size: int) -> None:
        """Warmups, measured runs (interleaved across ``versions``) and profiled runs at one batch size."""
        ids = self.prompts[:batch_size].to(self.device.dev)
        runs = [_BatchRun(v) for v in versions]
        for run in runs:
            self._make_decoder(run, batch_size)
        for kind, count in ((RunKind.WARMUP, self.s.warmup), (RunKind.MEASURED, self.s.repeats)):
            for repeat in range(count):
                for run in runs:
                    self._one(run, ids, batch_size, kind, repeat)
        if self.s.kernel_time:
            for run in runs:
                self._profile(run, ids, batch_size)
        for run in runs:
            run.version.batches.append(self._result(run, batch_size))
            run.decoder = None
        self.device.free()

    def _make_decoder(self, run: _BatchRun, batch_size: int) -> None:
        if self.poisoned:
            run.failed = self.poisoned
            return
        model = run.version.model
        assert model is not None
        before = self.device.allocated()
        try:
            if self.s.cuda_graph:
                run.decoder = _GraphDecoder(model, batch_size, self.s.prompt_tokens + self.s.new_tokens)
                run.note_graph()
            else:
                run.decoder = _EagerDecoder(model)
        except Exception as exc:  # e.g. out of memory for the static cache at this batch size
            run.failed = f"{type(exc).__name__}: {exc}"
            self._check_poison(exc)
            self.device.free()
            return
        after = self.device.allocated()
        run.state_bytes = after - before if after is not None and before is not None else None

    def _one(self, run: _BatchRun, ids: torch.Tensor, batch_size: int, kind: RunKind, repeat: int) -> None:
        if run.failed is not None or run.decoder is None:
            return
        if self.poisoned:
            run.failed = self.poisoned
            return
        order = len(self.run_order)
        self.run_order.append(RunRef(order, run.version.name, batch_size, kind, repeat))
        self.progress.step(f"{run.version.name} bs={batch_size} {kind.value}")
        try:
            raw = _timed_run(run.decoder, ids, self.s.new_tokens, self.device)
        except Exception as exc:  # e.g. CUDA out of memory at this batch size: a result, not a crash
            logger.warning("%s at batch size %d failed", run.version.name, batch_size, exc_info=True)
            run.note_graph()
            run.failed = f"{kind.value} run {repeat} failed: {type(exc).__name__}: {exc}"
            run.decoder = None
            self.device.free()
            self._check_poison(exc)
            return
        run.note_graph()
        if raw.persistent_delta is not None and run.state_bytes is not None:
            # e.g. a CUDA graph's memory pool, allocated at the first replay and kept
            run.state_bytes += max(raw.persistent_delta, 0)
        sample = _to_sample(raw, order, repeat)
        (run.warmups if kind is RunKind.WARMUP else run.samples).append(sample)

    def _profile(self, run: _BatchRun, ids: torch.Tensor, batch_size: int) -> None:
        if not self.device.is_cuda:
            run.kernel_note = "not measured: the model ran on the CPU"
            return
        if run.failed is not None or run.decoder is None or self.poisoned:
            return
        order = len(self.run_order)
        self.run_order.append(RunRef(order, run.version.name, batch_size, RunKind.PROFILE, 0))
        self.progress.step(f"{run.version.name} bs={batch_size} profile")
        try:
            run.kernel_ms, run.top, run.kernel_note = _profiled_run(run.decoder, ids, self.s.new_tokens, self.device)
        except Exception as exc:
            logger.warning("profiling %s failed", run.version.name, exc_info=True)
            run.kernel_note = f"profiler run failed: {type(exc).__name__}: {exc}"
            self._check_poison(exc)

    def _result(self, run: _BatchRun, batch_size: int) -> BatchResult:
        v, s = run.version, self.s
        samples = tuple(run.samples)
        ok = run.failed is None and len(samples) == s.repeats
        ttft = LatencyStats.of([x.ttft_ms for x in samples]) if samples else None
        steps = [step for x in samples for step in x.step_ms]
        tpot = LatencyStats.of(steps) if steps else None
        e2e = LatencyStats.of([x.e2e_ms for x in samples]) if samples else None
        tokens = 1000.0 / tpot.median if tpot and tpot.median > 0 else None
        weight_bytes = _weight_bytes_per_token(
            self.info, batch_size, v.dense_itemsize, dense=v.name in (_FP16_NAME, _CPU_DENSE_NAME)
        )
        bandwidth = weight_bytes / (run.kernel_ms / 1000.0) / 1e9 if run.kernel_ms else None
        fraction = bandwidth / self.peak_gbps if bandwidth is not None and self.peak_gbps else None
        deltas = [x.peak_delta_bytes for x in samples if x.peak_delta_bytes is not None]
        peak_delta = max(deltas) if deltas else None
        peak = (
            (v.weights_bytes or 0) + (run.state_bytes or 0) + peak_delta
            if peak_delta is not None and v.weights_bytes is not None
            else None
        )
        return BatchResult(
            version=v.name,
            batch_size=batch_size,
            status=Status.OK if ok else Status.FAILED,
            reason=None if ok else (run.failed or "incomplete"),
            ttft_ms=ttft,
            tpot_ms=tpot,
            e2e_ms=e2e,
            tokens_per_s=tokens,
            aggregate_tokens_per_s=tokens * batch_size if tokens is not None else None,
            kernel_ms_per_token=run.kernel_ms,
            kernel_time_note=run.kernel_note if s.kernel_time else "not measured: kernel_time=False",
            top_kernels=run.top,
            weight_bytes_per_token=weight_bytes,
            kv_bytes_per_token=_kv_bytes_per_token(self.info.config, s.prompt_tokens, s.new_tokens, batch_size),
            achieved_bandwidth_gbps=bandwidth,
            bandwidth_fraction=fraction,
            state_bytes=run.state_bytes if run.state_bytes is None else max(run.state_bytes, 0),
            peak_run_delta_bytes=peak_delta,
            peak_memory_bytes=peak,
            graph_enabled=run.graph_enabled,
            graph_fallback_reason=run.graph_reason,
            warmups=tuple(run.warmups),
            samples=samples,
        )


def _model_bytes(model: torch.nn.Module) -> tuple[int, int]:
    """Bytes of the model's distinct parameter and buffer storages, and the itemsize of its dense weights."""
    seen: set[tuple[str, int]] = set()
    total = 0
    itemsize = 2
    for tensor in (*model.parameters(), *model.buffers()):
        key = (str(tensor.device), tensor.untyped_storage().data_ptr())
        if key in seen:
            continue
        seen.add(key)
        total += tensor.untyped_storage().nbytes()
    lm_head = getattr(_hf_model(model), "get_output_embeddings", None)
    head = lm_head() if callable(lm_head) else None
    weight = getattr(head, "weight", None)
    if weight is not None and weight.is_floating_point():
        itemsize = int(weight.element_size())
    return total, itemsize


def _plan_mode(free_bytes: int | None, footprints: Sequence[int], run_bytes: int) -> BenchmarkMode:
    """Interleave when every version's weights plus the largest run fit in 90% of the free device memory."""
    if free_bytes is None:
        return BenchmarkMode.INTERLEAVED
    return BenchmarkMode.INTERLEAVED if sum(footprints) + run_bytes <= 0.9 * free_bytes else BenchmarkMode.SEQUENTIAL


def _footprint(info: CheckpointInfo, version: str) -> int:
    if version in (_FP16_NAME, _CPU_DENSE_NAME):
        return _weight_bytes_per_token(info, 1, 2, dense=True)
    return info.total_bytes


def _prompt_ids(info: CheckpointInfo, settings: BenchmarkSettings, vocab_size: int) -> torch.Tensor:
    """``[max batch, prompt_tokens]`` token ids on the CPU: seeded random ids, or the prompt text repeated."""
    import torch

    rows = max(settings.batch_sizes)
    if settings.prompt is None:
        generator = torch.Generator().manual_seed(settings.seed)
        return torch.randint(0, vocab_size, (rows, settings.prompt_tokens), generator=generator, dtype=torch.long)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(info.path))
    ids = list(tokenizer(settings.prompt)["input_ids"])
    if not ids:
        raise InvalidBenchmarkSettingsError(
            f"prompt {settings.prompt!r} tokenizes to no tokens with {info.path}'s tokenizer: pass a longer text"
        )
    filled = (ids * (settings.prompt_tokens // len(ids) + 1))[: settings.prompt_tokens]
    return torch.tensor([filled] * rows, dtype=torch.long)


def _vocab_size(info: CheckpointInfo) -> int:
    text = info.config.get("text_config")
    for cfg in (info.config, text if isinstance(text, dict) else {}):
        vocab = cfg.get("vocab_size")
        if isinstance(vocab, int) and vocab > 0:
            return vocab
    raise InvalidBenchmarkSettingsError(
        f"{info.path}/config.json has no vocab_size, so random prompts cannot be drawn: pass prompt='some text'"
    )


# --------------------------------------------------------------------------------------------------------------
# metadata


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # pynvml missing, or NVML errors (NVMLError is no RuntimeError)
        logger.debug("NVML could not report the driver version", exc_info=True)
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        logger.debug("nvidia-smi could not report the driver version", exc_info=True)
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if lines else None


def _measure_copy_gbps(device: _Device) -> float | None:
    """Device-to-device copy bandwidth (read + write bytes / time), a lower bound of the card's peak."""
    import torch

    try:
        free = device.free_bytes() or 0
        size = min(_COPY_BYTES, free // 4)
        if size < 16 * 1024 * 1024:
            return None
        src = torch.empty(size, dtype=torch.uint8, device=device.dev)
        dst = torch.empty_like(src)
        for _ in range(2):
            dst.copy_(src)
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        reps = 10
        start.record()
        for _ in range(reps):
            dst.copy_(src)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1000.0
        del src, dst
        device.free()
        return 2 * size * reps / seconds / 1e9 if seconds > 0 else None
    except RuntimeError:
        logger.debug("bandwidth copy measurement failed", exc_info=True)
        return None


def _metadata(device: _Device, started: _dt.datetime, peak_override: float | None) -> RunMetadata:
    import torch

    from ._version import __version__

    gpu_name = capability = driver = None
    gpu_memory: int | None = None
    peak: float | None = None
    source: str | None = None
    if device.is_cuda:
        props = torch.cuda.get_device_properties(device.dev)
        gpu_name = str(props.name)
        capability = f"{props.major}.{props.minor}"
        gpu_memory = int(props.total_memory)
        driver = _driver_version()
        if peak_override is not None:
            peak, source = peak_override, "user"
        elif (known := datasheet_bandwidth_gbps(gpu_name)) is not None:
            peak, source = known[0], f"datasheet: {known[1]}"
        elif (measured := _measure_copy_gbps(device)) is not None:
            peak, source = measured, "measured device-to-device copy (a lower bound of the datasheet peak)"
    return RunMetadata(
        timestamp=started.isoformat(timespec="seconds"),
        hostname=socket.gethostname(),
        python=platform.python_version(),
        platform=platform.platform(),
        device=str(device.dev),
        gpu_name=gpu_name,
        gpu_capability=capability,
        gpu_memory_bytes=gpu_memory,
        driver_version=driver,
        torch_version=str(torch.__version__),
        cuda_version=torch.version.cuda,
        triton_version=_package_version("triton"),
        transformers_version=_package_version("transformers"),
        autoawq_version=_package_version("autoawq"),
        awq_autoselect_version=__version__,
        cpu_threads=int(torch.get_num_threads()),
        peak_bandwidth_gbps=peak,
        peak_bandwidth_source=source,
    )


# --------------------------------------------------------------------------------------------------------------
# public entry point


def _normalise_versions(versions: Sequence[str], include_fp16: bool, is_cuda: bool) -> tuple[str, ...]:
    if isinstance(versions, str):
        versions = [v for v in versions.split(",") if v.strip()]
    names: list[str] = []
    for version in versions:
        key = str(version).strip().lower()
        if key == _AUTO:
            name = _AUTO
        elif key in (_FP16_NAME, "dense"):
            name = _FP16_NAME if is_cuda else _CPU_DENSE_NAME
        else:
            name = parse_kernel(key).value
        if name in names:
            raise InvalidBenchmarkSettingsError(f"versions lists {name!r} twice: name each version once")
        names.append(name)
    if include_fp16:
        dense = _FP16_NAME if is_cuda else _CPU_DENSE_NAME
        if dense not in names:
            names.append(dense)
    if not names:
        raise InvalidBenchmarkSettingsError("versions is empty and include_fp16 is False: nothing to benchmark")
    return tuple(names)


def _is_int(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_settings(
    prompt_tokens: int, new_tokens: int, batch_sizes: Sequence[int], repeats: int, warmup: int
) -> tuple[int, ...]:
    checks = (
        ("prompt_tokens", prompt_tokens, 1),
        ("new_tokens", new_tokens, 2),
        ("repeats", repeats, 1),
        ("warmup", warmup, 0),
    )
    for name, value, minimum in checks:
        if not _is_int(value, minimum):
            extra = (
                " (the first token comes from the prefill; TPOT needs at least one decode step)"
                if (name == "new_tokens")
                else ""
            )
            raise InvalidBenchmarkSettingsError(f"{name}={value!r}: expected an integer >= {minimum}{extra}")
    sizes = tuple(batch_sizes)
    if not sizes or not all(_is_int(b, 1) for b in sizes):
        raise InvalidBenchmarkSettingsError(f"batch_sizes={batch_sizes!r}: expected one or more integers >= 1")
    if len(set(sizes)) != len(sizes):
        raise InvalidBenchmarkSettingsError(f"batch_sizes={batch_sizes!r} repeats a size: name each once")
    return sizes


def benchmark_versions(
    path: str | os.PathLike[str],
    versions: Sequence[str] = ("gemv", "gemm"),
    *,
    prompt_tokens: int = 128,
    new_tokens: int = 128,
    batch_sizes: Sequence[int] = (1,),
    repeats: int = 5,
    warmup: int = 1,
    device: str | None = None,
    include_fp16: bool = False,
    cuda_graph: bool = False,
    prompt: str | None = None,
    seed: int = 0,
    progress: bool | None = None,
    kernel_time: bool = True,
    peak_bandwidth_gbps: float | None = None,
) -> BenchmarkReport:
    """Measure single-query latency of AWQ kernel versions on one checkpoint, side by side.

    Every version is loaded once (``load_quantized_auto(path, version, fallback=False, fuse_layers=False)``);
    a version that cannot run here is reported with status ``unavailable`` and the loader's reason. All
    versions stay resident and their runs are interleaved (warmups first, then measured runs A B A B ...);
    when the versions do not fit in GPU memory together they are benchmarked one after another (the report's
    ``mode`` and ``notes`` say so). docs/benchmarks.md defines every number.

    Args:
        path: AWQ checkpoint directory.
        versions: kernel versions to compare (``"gemv"``, ``"gemm"``, ``"gemm_triton"``, ``"torch_int4"``,
            ..., or ``"auto"`` for whatever the loader picks).
        prompt_tokens: prompt length of every sequence.
        new_tokens: tokens generated per sequence (greedy, end of sequence ignored): the first by the prefill,
            ``new_tokens - 1`` by decode steps. At least 2.
        batch_sizes: sequences decoded together; each size is benchmarked separately.
        repeats: measured runs per version and batch size.
        warmup: untimed-for-the-results runs per version and batch size before the measured ones (kept in the
            report apart from the measured runs).
        device: ``"cuda"``, ``"cuda:N"`` or ``"cpu"``; default: the current CUDA device, else the CPU.
        include_fp16: also benchmark the dense baseline of the same shape (dequantized weights, ``nn.Linear``;
            fp16 on CUDA, float32 on the CPU like the quantized models' activations there).
        cuda_graph: decode with :class:`awq_autoselect.cudagraph.StaticDecoder` (static KV cache, captured
            CUDA graph) instead of the eager loop.
        prompt: a text to use instead of random token ids; tokenized with the checkpoint's tokenizer and
            truncated to ``prompt_tokens``, or repeated until it fills them.
        seed: seed of the random prompt ids (the same ids for every version).
        progress: show a tqdm progress bar; ``None``: only when stderr is a terminal.
        kernel_time: profile one extra, untimed run per version and batch size with torch.profiler to get GPU
            kernel time per decode token (CUDA only).
        peak_bandwidth_gbps: the card's peak memory bandwidth in GB/s, overriding the datasheet table and the
            measured-copy fallback.

    Returns:
        The :class:`BenchmarkReport`.

    Raises:
        CheckpointError: (and subclasses) ``path`` is not a usable AWQ checkpoint.
        UnknownVersionError: a name in ``versions`` is not a kernel version.
        InvalidBenchmarkSettingsError: a count or size out of range, a repeated version or batch size.
        InvalidDeviceSpecError: ``device`` is malformed or names CUDA where there is none.
    """
    return _benchmark(
        path,
        versions,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        batch_sizes=batch_sizes,
        repeats=repeats,
        warmup=warmup,
        device=device,
        include_fp16=include_fp16,
        cuda_graph=cuda_graph,
        prompt=prompt,
        seed=seed,
        progress=progress,
        kernel_time=kernel_time,
        peak_bandwidth_gbps=peak_bandwidth_gbps,
    )


def _resolve_device(device: str | None) -> torch.device:
    from .loading import _resolve_device as resolve

    return resolve(device)


def _benchmark(
    path: str | os.PathLike[str],
    versions: Sequence[str],
    *,
    prompt_tokens: int,
    new_tokens: int,
    batch_sizes: Sequence[int],
    repeats: int,
    warmup: int,
    device: str | None,
    include_fp16: bool,
    cuda_graph: bool,
    prompt: str | None,
    seed: int,
    progress: bool | None,
    kernel_time: bool,
    peak_bandwidth_gbps: float | None,
    loader: _Loader = _default_loader,
    mode: BenchmarkMode | None = None,
) -> BenchmarkReport:
    """:func:`benchmark_versions` with its seams: the loader, and a forced mode (tests use both)."""
    started = _dt.datetime.now(_dt.timezone.utc)
    sizes = _check_settings(prompt_tokens, new_tokens, batch_sizes, repeats, warmup)
    if peak_bandwidth_gbps is not None and not peak_bandwidth_gbps > 0:
        raise InvalidBenchmarkSettingsError(f"peak_bandwidth_gbps={peak_bandwidth_gbps!r}: expected a positive number")
    info = read_checkpoint(path)
    dev = _Device(_resolve_device(device))
    names = _normalise_versions(versions, include_fp16, dev.is_cuda)
    settings = BenchmarkSettings(
        path=str(info.path),
        versions=names,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        batch_sizes=sizes,
        repeats=repeats,
        warmup=warmup,
        device=device,
        include_fp16=include_fp16,
        cuda_graph=cuda_graph,
        prompt=prompt,
        seed=seed,
        kernel_time=kernel_time,
    )
    import torch

    torch.manual_seed(seed)
    prompts = _prompt_ids(info, settings, _vocab_size(info))
    dev.prime()
    metadata = _metadata(dev, started, peak_bandwidth_gbps)
    per_batch = len(names) * (warmup + repeats + (1 if kernel_time and dev.is_cuda else 0))
    show = sys.stderr.isatty() if progress is None else progress
    bar = _Progress(show, per_batch * len(sizes))
    runner = _Runner(
        settings=settings,
        info=info,
        loader=loader,
        device=dev,
        prompts=prompts,
        peak_gbps=metadata.peak_bandwidth_gbps,
        progress=bar,
    )
    states = [_Version(name) for name in names]
    if mode is None:
        kv = _kv_bytes_per_token(info.config, prompt_tokens, new_tokens, max(sizes)) or 0
        run_bytes = 3 * kv  # the whole cache is about twice the mean read; leave room for activations
        mode = _plan_mode(dev.free_bytes(), [_footprint(info, n) for n in names], run_bytes)
        if mode is BenchmarkMode.SEQUENTIAL:
            runner.notes.append(
                "the versions do not fit in GPU memory together: benchmarked one after another, not interleaved"
            )
    try:
        if mode is BenchmarkMode.INTERLEAVED:
            mode = _run_interleaved(runner, states, sizes)
        if mode is BenchmarkMode.SEQUENTIAL:
            _run_sequential(runner, states, sizes)
    finally:
        bar.close()
        for state in states:
            state.model = None
        dev.free()
    if not dev.is_cuda:
        runner.notes.append("ran on the CPU: wall times only (no GPU kernel time, memory or bandwidth)")
    if cuda_graph and warmup == 0:
        runner.notes.append("cuda_graph with warmup=0: graph capture happened inside the first measured run")
    results = tuple(
        VersionResult(
            version=s.name,
            status=s.status,
            reason=s.reason,
            load=s.load,
            load_s=s.load_s,
            weights_bytes=s.weights_bytes,
            model_bytes=s.model_bytes,
            batches=tuple(s.batches),
        )
        for s in states
    )
    return BenchmarkReport(
        settings=settings,
        metadata=metadata,
        mode=mode,
        notes=tuple(runner.notes),
        results=results,
        run_order=tuple(runner.run_order),
    )


def _run_interleaved(runner: _Runner, states: Sequence[_Version], sizes: Sequence[int]) -> BenchmarkMode:
    """Load every version, then interleave them batch size by batch size. Falls back when loading runs out."""
    for state in states:
        try:
            runner.load(state)
        except _OutOfMemoryError:
            for loaded in states:
                if loaded.model is not None:
                    loaded.model, loaded.load, loaded.load_s = None, None, None
                    loaded.weights_bytes = loaded.model_bytes = None
            runner.device.free()
            runner.notes.append(
                f"out of GPU memory loading {state.name} beside the other versions: benchmarked one after "
                "another instead, not interleaved"
            )
            return BenchmarkMode.SEQUENTIAL
    for size in sizes:
        runner.bench_batch([s for s in states if s.model is not None], size)
    for state in states:
        runner.unload(state)
    return BenchmarkMode.INTERLEAVED


def _run_sequential(runner: _Runner, states: Sequence[_Version], sizes: Sequence[int]) -> None:
    for state in states:
        if state.status is not Status.OK:
            continue  # already found unavailable while trying to interleave
        try:
            runner.load(state)
        except _OutOfMemoryError as exc:
            state.status, state.reason = Status.FAILED, f"out of GPU memory while loading: {exc}"
            continue
        if state.model is None:
            continue
        for size in sizes:
            runner.bench_batch([state], size)
        runner.unload(state)


# --------------------------------------------------------------------------------------------------------------
# plotting


def plot(report: BenchmarkReport, path: str | os.PathLike[str]) -> Path:
    """Draw median TPOT (bars, with p90 whiskers) and GPU kernel time per token per version and batch size.

    Writes a PNG at ``path`` (an existing file there is replaced only if this function drew it).

    Raises:
        PlotUnavailableError: matplotlib is not installed (``pip install awq-autoselect[plot]``).
        InvalidBenchmarkSettingsError: ``path`` does not end in ``.png``.
        OutputPathError: ``path`` lies inside the checkpoint, exists and is not such a plot, or cannot be written.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailableError(
            "plot() needs matplotlib, which is not installed: install it with the 'plot' extra "
            "(awq-autoselect[plot]) or write the report with to_csv() and plot that"
        ) from exc
    rows = [r for r in report.rows() if r.tpot_ms_median is not None]
    labels = list(dict.fromkeys(r.version for r in rows))
    sizes = list(dict.fromkeys(r.batch_size for r in rows))
    figure = Figure(figsize=(max(4.0, 1.6 * len(labels) * max(1, len(sizes))), 4.0))
    axes = figure.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(sizes))
    for j, size in enumerate(sizes):
        xs, heights, errors, kernels = [], [], [], []
        for i, label in enumerate(labels):
            match = [r for r in rows if r.version == label and r.batch_size == size]
            if not match:
                continue
            row = match[0]
            assert row.tpot_ms_median is not None
            assert row.tpot_ms_p90 is not None
            xs.append(i + (j - (len(sizes) - 1) / 2) * width)
            heights.append(row.tpot_ms_median)
            errors.append(row.tpot_ms_p90 - row.tpot_ms_median)
            kernels.append(row.kernel_ms_per_token)
        axes.bar(
            xs,
            heights,
            width=width * 0.95,
            yerr=[[0.0] * len(errors), errors],
            capsize=3,
            label=f"wall TPOT, batch {size}",
        )
        points = [(x, k) for x, k in zip(xs, kernels, strict=True) if k is not None]
        if points:
            axes.scatter(
                [p[0] for p in points],
                [p[1] for p in points],
                marker="_",
                s=300,
                color="black",
                label=f"GPU kernel ms/token, batch {size}" if j == 0 else None,
                zorder=3,
            )
    axes.set_xticks(range(len(labels)))
    axes.set_xticklabels(labels)
    axes.set_ylabel("ms per token (median; whisker: p90)")
    where = report.metadata.gpu_name or "CPU"
    axes.set_title(f"Decode latency per token, {where}, prompt {report.settings.prompt_tokens}")
    if rows:
        axes.legend(fontsize="small")
    figure.tight_layout()
    out = Path(os.fspath(path))
    if out.suffix.lower() != ".png":
        raise InvalidBenchmarkSettingsError(f"plot path {str(out)!r}: the plot is written as PNG; name it *.png")
    return write_file(
        out,
        lambda target: figure.savefig(target, format="png", metadata={"Software": _PLOT_SOFTWARE}),
        owned=_is_plot,
        sources=[report.settings.path],
        what="--plot",
    )
