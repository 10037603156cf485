"""The benchmark's records: immutable results, the report, and the report's JSON, CSV and Markdown files.

Every record is a frozen dataclass; the JSON Schema of a report (:data:`JSON_SCHEMA`) is derived from them
(:mod:`.schema`). Report files are written so that an existing file is replaced only when it is one of ours
(a JSON report of this schema family, a CSV with this header, a Markdown file starting with
:data:`MARKDOWN_MARKER`); see :mod:`awq_autoselect._writing`.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import io
import json
import math
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from awq_autoselect._codec import JSONValue, csv_cell, csv_value, from_json, json_schema, to_json, validate
from awq_autoselect._writing import check_file_destination, write_file
from awq_autoselect.errors import InvalidArgumentError, InvalidReportError

__all__ = [
    "JSON_SCHEMA",
    "MARKDOWN_MARKER",
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
    "check_report_destination",
    "read_csv",
    "validate_report_dict",
]

SCHEMA = "awq-autoselect.bench/2"

_POSITIVE: Mapping[str, object] = {"minimum": 1}
_SIGNED: Mapping[str, object] = {"signed": True}


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

    count: int = field(metadata=_POSITIVE)
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
    batch_size: int = field(metadata=_POSITIVE)
    decode: str
    kind: RunKind
    repeat: int  # 0-based index among the runs of this kind for this version, batch size and decode mode


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
    """One version at one batch size in one decode mode. Statistics are None when no measured run completed."""

    version: str
    batch_size: int = field(metadata=_POSITIVE)
    decode: str  # eager, graph, compile, generate or hf-static (awq_autoselect.modes.BENCHMARKED)
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
    weights_bytes: int | None = field(metadata=_SIGNED)  # CUDA memory allocated by loading it (after - before)
    model_bytes: int | None  # bytes of the model's parameters and buffers, any device
    batches: tuple[BatchResult, ...]

    @property
    def kernel(self) -> str | None:
        """The kernel that ran (None if it did not load, or for the dense baseline)."""
        return self.load.kernel if self.load is not None else None

    def batch(self, batch_size: int, decode: str | None = None) -> BatchResult:
        """The result at ``batch_size`` (in decode mode ``decode``; default: the first measured).

        Raises:
            KeyError: no result for that batch size (and mode).
        """
        for result in self.batches:
            if result.batch_size == batch_size and decode in (None, result.decode):
                return result
        raise KeyError(f"version {self.version!r} has no result at batch size {batch_size} ({decode or 'any'} decode)")


@dataclass(frozen=True)
class BenchmarkSettings:
    """The arguments a benchmark ran with (normalised)."""

    path: str
    versions: tuple[str, ...]
    prompt_tokens: int = field(metadata=_POSITIVE)
    new_tokens: int = field(metadata={"minimum": 2})
    batch_sizes: tuple[int, ...] = field(metadata={"min_items": 1, "item_minimum": 1})
    repeats: int = field(metadata=_POSITIVE)
    warmup: int
    device: str | None
    include_fp16: bool
    decode: tuple[str, ...] = field(metadata={"min_items": 1})  # decode modes, each timed for every version
    prompt: str | None
    seed: int = field(metadata=_SIGNED)
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
    cpu_threads: int | None = field(metadata=_POSITIVE)  # torch.get_num_threads()
    peak_bandwidth_gbps: float | None = field(metadata={"exclusive_minimum": 0})
    peak_bandwidth_source: str | None  # "datasheet: <pattern>", "measured device-to-device copy", "user"


@dataclass(frozen=True)
class BenchmarkRow:
    """One CSV row: a version at a batch size in a decode mode, flattened."""

    version: str
    batch_size: int
    decode: str
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
    schema: str = field(default=SCHEMA, metadata={"const": SCHEMA})

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
        data = to_json(self)
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
        report = from_json(cls, data, "$")
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
                    for decode in self.settings.decode:
                        rows.append(_empty_row(result, batch_size, decode))
                continue
            for batch in result.batches:
                tpot = batch.tpot_ms
                rows.append(
                    BenchmarkRow(
                        version=result.version,
                        batch_size=batch.batch_size,
                        decode=batch.decode,
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
            writer.writerow([csv_cell(getattr(row, name)) for name in names])
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
        decode = ", ".join(s.decode)
        lines = [
            f"Decode latency on {where}: prompt {s.prompt_tokens} tokens, {s.new_tokens} new tokens, decode {decode}, "
            f"{s.repeats} measured runs after {s.warmup} warmup, {self.mode.value}. torch {meta.torch_version}, "
            f"transformers {meta.transformers_version}, autoawq {meta.autoawq_version}.",
            "",
            "| version | kernel | decode | batch | status | TTFT ms | TPOT ms p50 | p90 | p99 | tok/s | GPU ms/tok "
            "| GB/s | % peak BW | peak mem MiB |",
            "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in self.rows():
            lines.append(
                "| "
                + " | ".join(
                    [
                        _md(row.version),
                        _md(row.kernel or "-"),
                        row.decode,
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
        reasons = list(
            dict.fromkeys(
                f"- {_md(r.version)} at batch {r.batch_size}, {r.decode} decode: {_md(r.reason)}"
                for r in self.rows()
                if r.reason
            )
        )
        if reasons:
            lines += ["", *reasons]
        if self.notes:
            lines += ["", *(f"- {_md(n)}" for n in self.notes)]
        return "\n".join(lines) + "\n"


#: First line of a Markdown report file (:meth:`BenchmarkReport.write_markdown`): how an existing file is known
#: to be ours, and so may be replaced.
MARKDOWN_MARKER = "<!-- awq-autoselect benchmark report -->"


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


_OWNED = {"json": _is_json_report, "csv": _is_csv_report, "markdown": _is_markdown_report}


def check_report_destination(path: str | os.PathLike[str], kind: str, checkpoint: str | os.PathLike[str]) -> None:
    """Check, before a benchmark of ``checkpoint`` runs, that its report can be written at ``path`` as ``kind``
    (``"json"``, ``"csv"`` or ``"markdown"``): what :meth:`BenchmarkReport.write_json` and its siblings check
    again when they write. Nothing is created.

    Raises:
        InvalidArgumentError: ``kind`` is none of the three.
        OutputPathError: ``path`` lies inside the checkpoint, exists and is not such a report, or its folder cannot
            be written.
    """
    owned = _OWNED.get(kind)
    if owned is None:
        raise InvalidArgumentError(f"kind={kind!r}: expected one of {', '.join(map(repr, _OWNED))}")
    check_file_destination(path, owned=owned, sources=[checkpoint], what=f"--{kind}")


def _empty_row(result: VersionResult, batch_size: int, decode: str) -> BenchmarkRow:
    return BenchmarkRow(
        version=result.version,
        batch_size=batch_size,
        decode=decode,
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


_SCHEMA_NAMES: Mapping[type, str] = {
    BenchmarkSettings: "settings",
    RunMetadata: "metadata",
    RunRef: "run",
    LatencyStats: "stats",
    RunSample: "sample",
    KernelShare: "kernel_share",
    LoadSummary: "load",
    BatchResult: "batch",
    VersionResult: "version",
}

#: JSON Schema (draft 2020-12) of :meth:`BenchmarkReport.to_dict` output, derived from the records above.
#: :func:`validate_report_dict` checks data against it; any validator that implements the draft will do.
JSON_SCHEMA: dict[str, JSONValue] = json_schema(
    BenchmarkReport,
    names=_SCHEMA_NAMES,
    title="awq_autoselect benchmark report",
    description="Output of awq_autoselect.bench.benchmark_versions(); see docs/benchmarks.md.",
)


def validate_report_dict(data: object, schema: Mapping[str, JSONValue] | None = None) -> list[str]:
    """Check ``data`` against :data:`JSON_SCHEMA` (or ``schema``); return every problem found (empty: valid)."""
    return validate(data, JSON_SCHEMA if schema is None else schema)


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
            values = {n: csv_value(hints[n], c, f"{path}:{line}: {n}") for n, c in zip(names, cells, strict=True)}
            rows.append(BenchmarkRow(**values))  # type: ignore[arg-type]
    return tuple(rows)
