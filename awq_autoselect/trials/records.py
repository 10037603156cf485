"""What a trial measured: per kernel, per layer shape, per row count, eager and inside a CUDA graph.

A trial runs one kernel on layers of a checkpoint's shapes in a child process (:mod:`.runner`, :mod:`.child`).
Its result is either *ok* (the numeric check passed; timings follow) or *broken* (it crashed, timed out, raised,
or returned wrong numbers; the reason says which). Records are frozen and serialise through
:mod:`awq_autoselect._codec`.
"""

from __future__ import annotations

import datetime as _dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from awq_autoselect.catalogue import Kernel

__all__ = [
    "DecodeMode",
    "LayerShape",
    "RowTiming",
    "ShapeResult",
    "TrialReport",
    "TrialResult",
    "TrialStatus",
    "utc_timestamp",
]


def utc_timestamp() -> str:
    """Now, as ISO 8601 in UTC, to the second (what :attr:`TrialResult.measured_at` holds)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class TrialStatus(str, enum.Enum):
    """A trial's outcome."""

    OK = "ok"  # ran, numbers right; timings measured
    BROKEN = "broken"  # crashed (signal, CUDA error), timed out, raised, or returned wrong numbers

    def __str__(self) -> str:
        return self.value


class DecodeMode(str, enum.Enum):
    """How decode steps run: one Python call per layer (``eager``), or replayed from a captured CUDA graph."""

    EAGER = "eager"
    GRAPH = "graph"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class LayerShape:
    """A quantized linear shape of a checkpoint, and how many of its layers have it."""

    in_features: int = field(metadata={"minimum": 1})
    out_features: int = field(metadata={"minimum": 1})
    count: int = field(metadata={"minimum": 1})


@dataclass(frozen=True)
class RowTiming:
    """Time of one layer call with ``rows`` input rows, median over repeats, weights rotated past the caches."""

    rows: int = field(metadata={"minimum": 1})
    eager_us: float  # back-to-back Python calls: what eager decode pays (CPU launch cost included)
    graph_us: float | None  # the same calls replayed from a CUDA graph (None: not captured, or not CUDA)


@dataclass(frozen=True)
class ShapeResult:
    """One layer shape's numeric check and timings."""

    shape: LayerShape
    max_rel_error: float  # worst ||out - ref|| / ||ref|| over the rows checked (float32 dequantized reference)
    timings: tuple[RowTiming, ...]

    def timing(self, rows: int) -> RowTiming | None:
        """The timing at ``rows``, or ``None`` when that row count was not measured."""
        return next((t for t in self.timings if t.rows == rows), None)


@dataclass(frozen=True)
class TrialResult:
    """One kernel's trial on one machine for one checkpoint signature."""

    kernel: Kernel
    status: TrialStatus
    reason: str  # broken: why; ok: notes (e.g. why there are no graph timings), may be empty
    device: str
    shapes: tuple[ShapeResult, ...]
    seconds: float
    measured_at: str  # ISO 8601, UTC

    @classmethod
    def broken(cls, kernel: Kernel, device: str, reason: str, seconds: float) -> TrialResult:
        """A broken result measured now, with nothing timed."""
        return cls(kernel, TrialStatus.BROKEN, reason, device, (), seconds, utc_timestamp())

    @property
    def ok(self) -> bool:
        return self.status is TrialStatus.OK

    def rows_measured(self) -> frozenset[int]:
        """Row counts measured for every shape."""
        sets = [frozenset(t.rows for t in s.timings) for s in self.shapes]
        return frozenset.intersection(*sets) if sets else frozenset()

    def layers_ms(self, rows: int, mode: DecodeMode) -> float | None:
        """Milliseconds the checkpoint's quantized layers take for one forward of ``rows`` rows, modeled as the sum
        over shapes of (layers of that shape x measured time per call). ``None`` when not measured in that mode."""
        if not self.ok or not self.shapes:
            return None
        total = 0.0
        for shape in self.shapes:
            timing = shape.timing(rows)
            if timing is None:
                return None
            value = timing.graph_us if mode is DecodeMode.GRAPH else timing.eager_us
            if value is None:
                return None
            total += value * shape.shape.count
        return total / 1000.0

    def step_ms(self, rows: int, mode: DecodeMode) -> tuple[float, DecodeMode] | None:
        """:meth:`layers_ms` in ``mode``, or eagerly when the kernel could not be captured in a graph (decode would
        run eagerly); with the mode the time is for. ``None`` when not measured at ``rows``."""
        ms = self.layers_ms(rows, mode)
        if ms is None and mode is DecodeMode.GRAPH:
            mode = DecodeMode.EAGER
            ms = self.layers_ms(rows, mode)
        return None if ms is None else (ms, mode)

    def layer_times(self, rows: int, mode: DecodeMode) -> str:
        """``"4096x4096 8.2 us, 4096x11008 16.0 us"``: the measured time per call of each shape."""
        per_shape = []
        for shape in self.shapes:
            timing = shape.timing(rows)
            if timing is not None:
                value = timing.graph_us if mode is DecodeMode.GRAPH else timing.eager_us
                if value is not None:
                    per_shape.append(f"{shape.shape.in_features}x{shape.shape.out_features} {value:.1f} us")
        return ", ".join(per_shape)

    def describe(self, rows: int, mode: DecodeMode) -> str:
        """``"2.31 ms/token at 1 row (graph); layer times 8.2/16.0/16.1 us"`` or the reason it is broken."""
        if not self.ok:
            return f"broken here: {self.reason}"
        step = self.step_ms(rows, mode)
        if step is None:
            return "measured, but not at this row count"
        ms, used = step
        return f"{ms:.3f} ms per forward of {rows} row(s) ({used.value}); " + self.layer_times(rows, used)


@dataclass(frozen=True)
class TrialReport:
    """Every kernel tried for one checkpoint signature on one device, and where the answers came from."""

    device: str
    results: tuple[TrialResult, ...]
    from_cache: tuple[Kernel, ...] = ()

    def result(self, kernel: Kernel) -> TrialResult | None:
        """The result for ``kernel``, or ``None`` when it was not tried."""
        return next((r for r in self.results if r.kernel is kernel), None)

    @property
    def broken(self) -> Mapping[Kernel, str]:
        """Every kernel measured broken, with the reason."""
        return {r.kernel: r.reason for r in self.results if not r.ok}
