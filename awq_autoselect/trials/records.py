"""What a trial measured: per kernel, per layer shape, per row count, eager and inside a CUDA graph.

A trial runs one kernel on layers of a checkpoint's shapes in a child process (:mod:`.runner`, :mod:`.child`).
Its result is *ok* (the numeric check passed; timings follow), *broken* (the kernel's own failure: it crashed,
raised, did not import, has no image for this GPU, or returned wrong numbers) or *inconclusive* (the trial could not
finish for a reason that says nothing about the kernel: a timeout, out of memory, an interruption, a resource
limit). :class:`FailureCause` is the closed set of reasons, and says which of them blame the kernel: only those are
cached as broken, and only once a second, fresh child process has repeated them. Records are frozen and serialise
through :mod:`awq_autoselect._codec`.

Timings are kept with their spread: a kernel is timed in several rounds, in alternation with the other kernels of
its run (:mod:`.interleave`), and :class:`RowTiming` holds each round's median beside their median; the host's load
while the rounds ran is kept as :class:`HostLoad`.
"""

from __future__ import annotations

import datetime as _dt
import enum
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from awq_autoselect.catalogue import Kernel
from awq_autoselect.modes import DecodeMode

__all__ = [
    "DecodeMode",
    "FailureCause",
    "HostLoad",
    "LayerShape",
    "RowTiming",
    "ShapeResult",
    "TrialReport",
    "TrialResult",
    "TrialStatus",
    "cache_note",
    "utc_timestamp",
]


def cache_note(result: TrialResult, checkpoint: str = "") -> str:
    """``"(cached 2026-12-05 by awq-autoselect tune; refresh with `awq-autoselect tune PATH --refresh` or
    `awq-autoselect cache clear PATH`)"`` for a result read from the trial cache."""
    path = shlex.quote(checkpoint) if checkpoint else "PATH"
    by = f" by {result.measured_by}" if result.measured_by else ""
    return (
        f"(cached {result.measured_on}{by}; refresh with `awq-autoselect tune {path} --refresh` or "
        f"`awq-autoselect cache clear {path}`)"
    )


def utc_timestamp() -> str:
    """Now, as ISO 8601 in UTC, to the second (what :attr:`TrialResult.measured_at` holds)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class TrialStatus(str, enum.Enum):
    """A trial's outcome."""

    OK = "ok"  # ran, numbers right; timings measured
    BROKEN = "broken"  # the kernel's own failure (FailureCause.blames_kernel): crashed, raised, wrong numbers
    INCONCLUSIVE = "inconclusive"  # no verdict on the kernel: timed out, out of memory, interrupted, a limit

    def __str__(self) -> str:
        return self.value


class FailureCause(str, enum.Enum):
    """Why a trial did not end *ok*. :attr:`blames_kernel` says whether it is the kernel's own doing and repeats
    (then the kernel is *broken*, and cached so once confirmed), or a transient or self-inflicted cause (then the
    trial is *inconclusive*: never cached, the kernel ranked by its published priority for that call)."""

    CRASH = "crash"  # killed by SIGSEGV/SIGABRT/SIGBUS/SIGILL/SIGFPE, or a CUDA error (illegal memory access, ...)
    WRONG = "wrong"  # outputs outside the tolerance, or not finite
    IMPORT = "import"  # the kernel's module or extension does not import
    NO_IMAGE = "no_image"  # "no kernel image is available for execution on the device"
    ERROR = "error"  # the kernel raised another error of its own (argument checks, unsupported shape or device)
    TIMEOUT = "timeout"  # the child did not finish within the trial timeout (killed)
    OOM = "oom"  # out of memory (CUDA or host)
    INTERRUPTED = "interrupted"  # the child was interrupted or terminated from outside (SIGINT, SIGTERM, SIGHUP)
    RESOURCE = "resource"  # a resource limit: SIGKILL (the kernel's out-of-memory killer), SIGXCPU, no process
    PROCESS = "process"  # the child process ended without a result, with no sign of the kernel failing

    def __str__(self) -> str:
        return self.value

    @property
    def blames_kernel(self) -> bool:
        """Whether the cause is the kernel's own and repeats: cacheable as broken (after a second child agrees)."""
        return self in _BLAMING

    def describe(self) -> str:
        """The cause in words, for messages."""
        return _WORDS[self]


_BLAMING = frozenset(
    {FailureCause.CRASH, FailureCause.WRONG, FailureCause.IMPORT, FailureCause.NO_IMAGE, FailureCause.ERROR}
)
_WORDS = {
    FailureCause.CRASH: "crashed",
    FailureCause.WRONG: "computed wrong numbers",
    FailureCause.IMPORT: "does not import",
    FailureCause.NO_IMAGE: "has no kernel image for this GPU",
    FailureCause.ERROR: "raised an error",
    FailureCause.TIMEOUT: "timed out",
    FailureCause.OOM: "ran out of memory",
    FailureCause.INTERRUPTED: "was interrupted",
    FailureCause.RESOURCE: "hit a resource limit",
    FailureCause.PROCESS: "ended without a result",
}


@dataclass(frozen=True)
class LayerShape:
    """A quantized linear shape of a checkpoint, and how many of its layers have it."""

    in_features: int = field(metadata={"minimum": 1})
    out_features: int = field(metadata={"minimum": 1})
    count: int = field(metadata={"minimum": 1})


@dataclass(frozen=True)
class RowTiming:
    """Time of one layer call with ``rows`` input rows, weights rotated past the caches: the median of the rounds'
    medians (each round's median over a few repeats), with every round's median kept for the spread."""

    rows: int = field(metadata={"minimum": 1})
    eager_us: float  # back-to-back Python calls: what eager decode pays (CPU launch cost included)
    graph_us: float | None  # the same calls replayed from a CUDA graph (None: not captured, or not CUDA)
    eager_rounds: tuple[float, ...] = ()  # each round's median, in the order the rounds ran (empty: not kept)
    graph_rounds: tuple[float, ...] = ()

    def value(self, mode: DecodeMode) -> float | None:
        """The time in ``mode`` (``None``: not measured that way)."""
        return self.graph_us if mode is DecodeMode.GRAPH else self.eager_us

    def bounds(self, mode: DecodeMode) -> tuple[float, float] | None:
        """The fastest and the slowest round's median in ``mode`` (the time itself twice when no rounds were kept);
        ``None`` when not measured that way."""
        value = self.value(mode)
        if value is None:
            return None
        rounds = self.graph_rounds if mode is DecodeMode.GRAPH else self.eager_rounds
        return (min(rounds), max(rounds)) if rounds else (value, value)


@dataclass(frozen=True)
class HostLoad:
    """How busy the machine was while a trial's rounds ran, and how many threads the CPU trials used for it.

    ``others_cpus`` is the CPU time other processes used during the trial (``/proc/stat`` less the trial's own
    processes), in CPUs' worth: 1.5 means one and a half CPUs were busy with something else throughout. The host is
    *quiet* when that is below half the CPUs (the 1-minute load average stands in where ``/proc/stat`` cannot be
    read; it lags by a minute and counts the trial's own processes).
    """

    cpus: int = field(metadata={"minimum": 1})
    load_1m: float | None  # os.getloadavg()'s 1-minute average when the rounds started (None: not available)
    others_cpus: float | None  # CPUs' worth of time other processes used while the trial ran (None: not known)
    threads: int | None = None  # the cap on a CPU trial's intra-op threads (None: torch's default, or not a CPU)

    @property
    def quiet(self) -> bool | None:
        """Whether other processes left at least half the CPUs free (``None``: unknown on this platform)."""
        if self.others_cpus is not None:
            return self.others_cpus < self.cpus / 2
        if self.load_1m is not None:
            return self.load_1m < self.cpus / 2
        return None

    def describe(self) -> str:
        """``"other processes used 1.6 of 2 CPUs (busy); load average 2.31"``."""
        state = {True: "quiet", False: "busy", None: "load unknown"}[self.quiet]
        parts = []
        if self.others_cpus is not None:
            parts.append(f"other processes used {self.others_cpus:.1f} of {self.cpus} CPUs ({state})")
        else:
            parts.append(f"{self.cpus} CPUs ({state})")
        if self.load_1m is not None:
            parts.append(f"load average {self.load_1m:.2f}")
        if self.threads is not None:
            parts.append(f"timed with at most {self.threads} thread{'s' if self.threads != 1 else ''} per call")
        return "; ".join(parts)


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
    reason: str  # broken or inconclusive: why; ok: notes (e.g. why there are no graph timings), may be empty
    device: str
    shapes: tuple[ShapeResult, ...]
    seconds: float
    measured_at: str  # ISO 8601, UTC
    cause: FailureCause | None = None  # None when ok
    confirmed: bool = False  # broken, and a second fresh child process failed again: only then is it cached
    measured_by: str = ""  # what ran the trial ("awq-autoselect tune", "load_quantized_auto", ...)
    host: HostLoad | None = None  # the host's load while the rounds ran (None: failed before, or not recorded)
    thin: str = ""  # why this result is thin (tied within noise on a busy host): the next quiet load measures again

    @classmethod
    def failed(cls, kernel: Kernel, device: str, cause: FailureCause, reason: str, seconds: float) -> TrialResult:
        """A result measured now with nothing timed: *broken* when ``cause`` blames the kernel, else
        *inconclusive*."""
        status = TrialStatus.BROKEN if cause.blames_kernel else TrialStatus.INCONCLUSIVE
        return cls(kernel, status, reason, device, (), seconds, utc_timestamp(), cause)

    @classmethod
    def broken(
        cls, kernel: Kernel, device: str, reason: str, seconds: float, cause: FailureCause = FailureCause.ERROR
    ) -> TrialResult:
        """A broken result measured now, with nothing timed (``cause`` must blame the kernel)."""
        if not cause.blames_kernel:
            raise ValueError(f"a trial that {cause.describe()} is inconclusive, not broken: use TrialResult.failed")
        return cls.failed(kernel, device, cause, reason, seconds)

    @property
    def ok(self) -> bool:
        return self.status is TrialStatus.OK

    @property
    def inconclusive(self) -> bool:
        return self.status is TrialStatus.INCONCLUSIVE

    @property
    def cacheable(self) -> bool:
        """Whether the cache may keep this result: ok, or broken and confirmed by a second child process."""
        return self.ok or (self.status is TrialStatus.BROKEN and self.confirmed)

    @property
    def measured_on(self) -> str:
        """The date the trial ran, ``YYYY-MM-DD`` (UTC)."""
        return self.measured_at[:10]

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
            value = None if timing is None else timing.value(mode)
            if value is None:
                return None
            total += value * shape.shape.count
        return total / 1000.0

    def layers_bounds_ms(self, rows: int, mode: DecodeMode) -> tuple[float, float] | None:
        """:meth:`layers_ms` of the fastest and of the slowest round of every shape: bounds of that time (``None``
        when not measured in that mode). Summing each shape's extremes makes the spread of the total an upper bound
        of the rounds' own, so a tie is never missed for want of it."""
        if not self.ok or not self.shapes:
            return None
        low = high = 0.0
        for shape in self.shapes:
            timing = shape.timing(rows)
            bounds = None if timing is None else timing.bounds(mode)
            if bounds is None:
                return None
            low += bounds[0] * shape.shape.count
            high += bounds[1] * shape.shape.count
        return low / 1000.0, high / 1000.0

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
                value = timing.value(mode)
                if value is not None:
                    per_shape.append(f"{shape.shape.in_features}x{shape.shape.out_features} {value:.1f} us")
        return ", ".join(per_shape)

    def describe(self, rows: int, mode: DecodeMode) -> str:
        """``"2.31 ms/token at 1 row (graph); layer times 8.2/16.0/16.1 us"`` or the reason it is broken."""
        if self.inconclusive:
            return f"not measured here: {self.reason}"
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
    checkpoint: str = ""  # the checkpoint directory the trials were for (what the refresh commands name)

    def cache_note(self, kernel: Kernel) -> str:
        """Where ``kernel``'s verdict came from when the cache gave it, with the commands that measure it again:
        ``"(cached 2026-12-05 by awq-autoselect tune; refresh with ...)"``; empty when it was measured now."""
        result = self.result(kernel)
        if result is None or kernel not in self.from_cache:
            return ""
        return cache_note(result, self.checkpoint)

    def result(self, kernel: Kernel) -> TrialResult | None:
        """The result for ``kernel``, or ``None`` when it was not tried."""
        return next((r for r in self.results if r.kernel is kernel), None)

    @property
    def broken(self) -> Mapping[Kernel, str]:
        """Every kernel measured broken (its own failure), with the reason."""
        return {r.kernel: r.reason for r in self.results if r.status is TrialStatus.BROKEN}

    @property
    def inconclusive(self) -> Mapping[Kernel, str]:
        """Every kernel whose trial could not finish for a reason not its own (timeout, memory, ...), with it."""
        return {r.kernel: r.reason for r in self.results if r.inconclusive}
