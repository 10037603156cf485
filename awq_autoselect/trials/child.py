"""The child process of a trial: ``python -m awq_autoselect.trials.child`` reads a job (JSON) on the first line of
stdin, runs one kernel on layers of the job's shapes, and prints its :class:`~.records.TrialResult` on the last
line of stdout.

This process exists to be expendable: a kernel that hits an illegal memory access, aborts, hangs or segfaults
takes only this process with it, and the parent (:mod:`.runner`) records why. What it does (:class:`Session`):

1. per layer shape, draws random 4-bit weights, zero points and fp16 scales (several sets, so that timed calls
   rotate through more weight bytes than the GPU's L2 cache holds), and builds the kernel's layers from them
   (:func:`awq_autoselect.kernels.layers.build_layers`);
2. the numeric check of the loader's probe: outputs at 1 row and at the largest row count against
   ``x @ dequantize(W).T`` in float32; worse than the tolerance, or not finite, is *broken*;
3. warms up every shape at every row count asked for, captures its CUDA graph (on CUDA), says it is ready, and
   waits;
4. times a *round* each time the parent asks: every shape at every row count, back-to-back eager calls (what eager
   decode pays, CPU launch cost included) and, on CUDA, the same calls replayed from the captured graph; the median
   of a few repeats (CUDA events; ``perf_counter`` on the CPU). The parent alternates the rounds of every kernel of
   its run (:mod:`.interleave`), so that a noisy moment of the host falls on all of them alike;
5. on ``finish``, prints the result: per shape and row count the median of the rounds' medians, and every round's.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from awq_autoselect._codec import to_json
from awq_autoselect.catalogue import CATALOGUE, Kernel

from .records import FailureCause, LayerShape, RowTiming, ShapeResult, TrialResult, TrialStatus, utc_timestamp

if TYPE_CHECKING:
    import torch

    from awq_autoselect.formats import UnpackedWeight

__all__ = [
    "CUDA_ERROR_HINTS",
    "GRAPH_TOLERANCE",
    "OOM_HINTS",
    "READY_MARKER",
    "RESULT_MARKER",
    "ROUNDS",
    "ROUND_MARKER",
    "GraphMismatchError",
    "Session",
    "cause_of",
    "main",
    "preload",
    "run_job",
    "serve",
]

#: The last line of a child's stdout starts with this, followed by the result's JSON.
RESULT_MARKER = "AWQ_AUTOSELECT_TRIAL_RESULT "
#: The child has built and checked its layers and waits for rounds.
READY_MARKER = "AWQ_AUTOSELECT_TRIAL_READY"
#: The child has timed one more round.
ROUND_MARKER = "AWQ_AUTOSELECT_TRIAL_ROUND"

#: Text of CUDA errors that mean the kernel itself faulted (the context is gone afterwards): a crash.
CUDA_ERROR_HINTS = ("illegal memory access", "device-side assert", "misaligned address", "illegal instruction")
#: Text of allocation failures, CUDA's and the host allocator's: out of memory, not the kernel's fault.
OOM_HINTS = (
    "out of memory",
    "not enough memory",
    "cannot allocate memory",
    "can't allocate memory",
    "failed to allocate",
)
_NO_IMAGE = "no kernel image"

_WARMUP = 3
#: Rounds a trial is timed in when it runs alone (:func:`run_job`); :mod:`.interleave` drives its own.
ROUNDS = 5
_REPEATS = 5  # per round, on CUDA (5 rounds: the 25 samples of protocol 3)
_CPU_REPEATS = 3
_MAX_SETS = 32
_L2_MULTIPLE = 2.5  # timed calls read at least this many L2 caches' worth of weights between reuses


def _random_weight(
    shape: LayerShape, group_size: int, zero_point: bool, seed: int, device: torch.device, *, lowest_zero: int = 0
) -> UnpackedWeight:
    """Random weights of ``shape``; zero points from ``lowest_zero`` to 15 (1 for a kernel that cannot store 0:
    selection rejects it for a checkpoint that has one, so its trial measures the zero points it will get)."""
    import torch

    from awq_autoselect.formats import UnpackedWeight

    n, k = shape.out_features, shape.in_features
    group = k if group_size == -1 else group_size
    gen = torch.Generator(device=device).manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=gen, device=device, dtype=torch.uint8)
    z = (
        torch.randint(lowest_zero, 16, (n, k // group), generator=gen, device=device, dtype=torch.uint8)
        if zero_point
        else None
    )
    # Scales near 1/(4 sqrt(K)): outputs of unit-variance inputs stay O(1), as in a real model.
    spread = torch.rand((n, k // group), generator=gen, device=device)
    s = (0.75 + 0.5 * spread).mul_(1.0 / (4.0 * math.sqrt(k))).to(torch.float16)
    return UnpackedWeight(q, z, s, group, None)


def _sets(shape: LayerShape, device: torch.device) -> int:
    if device.type != "cuda":
        return 2
    import torch

    l2 = int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 50 * 2**20)
    layer = shape.in_features * shape.out_features // 2 + shape.out_features * shape.in_features // 32
    return max(2, min(_MAX_SETS, math.ceil(_L2_MULTIPLE * l2 / max(layer, 1))))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def _activation_shape(rows: int, in_features: int) -> tuple[int, int, int]:
    """How a decoder hands ``rows`` rows to a layer: a decode step of up to 8 sequences ``[rows, 1, in]``, else a
    prompt ``[1, rows, in]``. Kernels branch on this shape (AutoAWQ's GEMV_fast reads ``batch, tokens, _``)."""
    return (rows, 1, in_features) if rows <= _DECODE_BATCH_MAX else (1, rows, in_features)


_DECODE_BATCH_MAX = 8


def _check(
    layer: torch.nn.Module, weight: UnpackedWeight, rows: Sequence[int], dtype: torch.dtype, device: torch.device
) -> float:
    """The worst relative error of ``layer`` against the float32 dequantized reference (``inf`` if not finite)."""
    import torch

    from awq_autoselect.formats import dequantize

    reference = dequantize(weight).to(device)
    gen = torch.Generator(device=device).manual_seed(1234)
    worst = 0.0
    for count in sorted({1, max(rows)}):
        x = torch.randn(_activation_shape(count, weight.in_features), generator=gen, device=device).to(dtype)
        out = layer(x)
        _sync(device)
        got = out.float().reshape(count, weight.out_features)
        if not bool(torch.isfinite(got).all()):
            return math.inf
        ref = x.float().reshape(count, weight.in_features) @ reference.t()
        worst = max(worst, _relative(got, ref))
    return worst


def _eager_sample(layers: Sequence[torch.nn.Module], x: torch.Tensor, device: torch.device) -> float:
    """Microseconds per call of one pass of back-to-back calls over the rotating layers."""
    import torch

    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()
        for layer in layers:
            layer(x)
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end)) * 1000.0 / len(layers)
    t0 = time.perf_counter()
    for layer in layers:
        layer(x)
    return (time.perf_counter() - t0) * 1e6 / len(layers)


#: Largest relative difference (vector norm) between a layer's replayed and called output: replaying the same kernel
#: launches gives the same numbers, up to the order of a split reduction's atomic adds.
GRAPH_TOLERANCE = 1e-2


class GraphMismatchError(RuntimeError):
    """A kernel's calls replayed from a CUDA graph compute other numbers than the same calls made directly."""


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    import torch

    return float(torch.linalg.vector_norm(got - want)) / (float(torch.linalg.vector_norm(want)) or 1.0)


class _Graph:
    """The calls of one pass over the rotating layers, captured once in a CUDA graph and replayed per sample."""

    def __init__(self, layers: Sequence[torch.nn.Module], x: torch.Tensor, device: torch.device) -> None:
        import torch

        self.calls = len(layers)
        self.static = x.clone()
        side = torch.cuda.Stream(device=device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                for layer in layers:
                    layer(self.static)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = [layer(self.static) for layer in layers]
        called = layers[0](self.static).float()
        for _ in range(2):  # twice: a kernel that adds into a buffer it zeroes outside the graph drifts on the second
            self.graph.replay()
            replayed = self.outputs[0].float()
            if not bool(torch.isfinite(replayed).all()) or _relative(replayed, called) > GRAPH_TOLERANCE:
                raise GraphMismatchError(
                    f"its replayed calls give other numbers than its calls (relative difference "
                    f"{_relative(replayed, called):.3g}): decode from a CUDA graph would be wrong"
                )
        _sync(device)

    def sample(self) -> float:
        """Microseconds per call of one replay."""
        import torch

        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()
        self.graph.replay()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end)) * 1000.0 / self.calls


class _Point:
    """One layer shape at one row count: its input, its graph, and every round's medians."""

    def __init__(self, shape: int, rows: int, x: torch.Tensor) -> None:
        self.shape = shape
        self.rows = rows
        self.x = x
        self.graph: _Graph | None = None
        self.eager: list[float] = []
        self.replayed: list[float] = []

    def timing(self) -> RowTiming:
        graph = statistics.median(self.replayed) if self.replayed else None
        return RowTiming(self.rows, statistics.median(self.eager), graph, tuple(self.eager), tuple(self.replayed))


class Session:
    """One kernel's trial, in steps the parent drives: :meth:`prepare` (build the layers, check the numbers, warm
    up, capture the graphs), then :meth:`round` as often as the parent asks (each shape at each row count timed
    once more: a few repeats, their median kept), then :meth:`result`. Whatever the kernel raises propagates."""

    def __init__(self, job: dict[str, object], log: Callable[[str], None] = lambda text: None) -> None:
        import torch

        self.started = time.perf_counter()
        self.log = log
        self.kernel = Kernel(str(job["kernel"]))
        self.device = torch.device(str(job["device"]))
        self.job = job
        self.notes: list[str] = []
        self.shapes: list[tuple[LayerShape, float, Sequence[torch.nn.Module]]] = []
        self.points: list[_Point] = []
        self.default_threads = torch.get_num_threads()
        self.threads = self.default_threads

    def prepare(self) -> TrialResult | None:
        """Build and check every shape; a *broken* result when a shape computes wrong numbers, else ``None``."""
        import torch

        from awq_autoselect.kernels.layers import build_layers

        job, kernel, device = self.job, self.kernel, self.device
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dtype = getattr(torch, CATALOGUE[kernel].dtype_on(device.type))
        rows = sorted({int(r) for r in job["rows"]})  # type: ignore[attr-defined]
        shapes = [LayerShape(int(a), int(b), int(c)) for a, b, c in job["shapes"]]  # type: ignore[attr-defined]
        group_size = int(job["group_size"])  # type: ignore[call-overload]
        zero_point = bool(job["zero_point"])
        tolerance = float(job["tolerance"])  # type: ignore[arg-type]
        graph_ok = bool(job.get("graph", True)) and device.type == "cuda"
        seed = int(job.get("seed", 0))  # type: ignore[call-overload]
        lowest_zero = 1 if CATALOGUE[kernel].zero_minus_one else 0
        if lowest_zero and zero_point:
            self.notes.append(
                "zero points drawn from 1-15: the kernel cannot store 0 (selection checks the checkpoint's)"
            )
        # The session outlives any one block: inference mode stays on in this process, whose only job this is.
        torch.inference_mode().__enter__()
        for index, shape in enumerate(shapes):
            weights = [
                _random_weight(shape, group_size, zero_point, seed + 97 * index + i, device, lowest_zero=lowest_zero)
                for i in range(_sets(shape, device))
            ]
            layers = list(build_layers(kernel, weights, device=device, dtype=dtype, max_rows=max(rows)))
            error = _check(layers[0], weights[0], rows, dtype, device)
            label = f"{shape.in_features}x{shape.out_features}"
            if not error <= tolerance:
                what = "non-finite outputs" if math.isinf(error) else f"relative error {error:.3g}"
                return TrialResult.broken(
                    kernel,
                    str(device),
                    f"wrong numbers at in_features x out_features {label}: {what} against the float32 dequantized "
                    f"reference (tolerance {tolerance:g})",
                    time.perf_counter() - self.started,
                    FailureCause.WRONG,
                )
            del weights
            self.shapes.append((shape, error, layers))
            gen = torch.Generator(device=device).manual_seed(seed)
            for count in rows:
                x = torch.randn(_activation_shape(count, shape.in_features), generator=gen, device=device).to(dtype)
                point = _Point(index, count, x)
                for _ in range(_WARMUP):
                    _eager_sample(layers, x, device)
                if graph_ok:
                    try:
                        point.graph = _Graph(layers, x, device)
                    except Exception as exc:  # not capturable: a fact about decode with graphs, not a broken kernel
                        graph_ok = False
                        self.notes.append(
                            f"cannot be captured in a CUDA graph ({type(exc).__name__}: {str(exc)[:200]})"
                        )
                        _sync(device)  # raises if the failed capture broke the context: then it is broken
                self.points.append(point)
        _sync(device)
        return None

    def round(self, threads: int | None = None) -> None:
        """Time every shape at every row count once more; ``threads``: at most that many intra-op threads for a CPU
        trial's calls (``None``: torch's default)."""
        import torch

        wanted = self.default_threads if threads is None else max(1, min(threads, self.default_threads))
        if self.device.type != "cuda" and wanted != self.threads:
            torch.set_num_threads(wanted)
            self.threads = wanted
            for point in self.points:  # the first calls on a resized thread pool are not the kernel's time
                _eager_sample(self.shapes[point.shape][2], point.x, self.device)
        repeats = _REPEATS if self.device.type == "cuda" else _CPU_REPEATS
        for point in self.points:
            layers = self.shapes[point.shape][2]
            point.eager.append(statistics.median(_eager_sample(layers, point.x, self.device) for _ in range(repeats)))
            if point.graph is not None:
                graph = point.graph
                point.replayed.append(statistics.median(graph.sample() for _ in range(repeats)))
        _sync(self.device)

    def round_costs(self) -> dict[str, list[float | None]]:
        """The last round's cost per row count: ``{"ROWS": [eager_ms, graph_ms or None]}``, each the sum over shapes
        of (layers of that shape x the round's median time per call), as :meth:`TrialResult.layers_ms` sums. The
        parent compares the kernels' costs to stop the trials of those that cannot win (:mod:`.interleave`)."""
        eager: dict[str, float] = {}
        graph: dict[str, float | None] = {}
        for point in self.points:
            if not point.eager:
                continue
            rows, count = str(point.rows), self.shapes[point.shape][0].count
            eager[rows] = eager.get(rows, 0.0) + point.eager[-1] * count / 1000.0
            so_far = graph.get(rows, 0.0)  # None once a shape at this row count has no graph timing
            graph[rows] = None if so_far is None or not point.replayed else so_far + point.replayed[-1] * count / 1000.0
        return {rows: [eager[rows], graph[rows]] for rows in eager}

    def result(self) -> TrialResult:
        """The *ok* result of the rounds so far."""
        notes = list(self.notes)
        if self.device.type != "cuda":
            notes.append(f"no CUDA graph timings on {self.device.type}")
        results = []
        for index, (shape, error, _) in enumerate(self.shapes):
            timings = tuple(p.timing() for p in self.points if p.shape == index)
            for timing in timings:
                self.log(
                    f"{self.kernel.value} {shape.in_features}x{shape.out_features} rows={timing.rows}: eager "
                    f"{timing.eager_us:.1f} us, graph {timing.graph_us}"
                )
            results.append(ShapeResult(shape, error, timings))
        return TrialResult(
            self.kernel,
            TrialStatus.OK,
            "; ".join(notes),
            str(self.device),
            tuple(results),
            time.perf_counter() - self.started,
            utc_timestamp(),
        )

    def failure(self, exc: BaseException) -> TrialResult:
        """What an exception the kernel raised says about it: *broken* when the kernel is to blame, *inconclusive*
        when not (out of memory, interrupted), as :func:`cause_of` says."""
        cause = cause_of(exc)
        text = " ".join(str(exc).split())[:600]
        try:
            _sync(self.device)
        except Exception as sync_error:
            text += f" (the CUDA context is unusable afterwards: {' '.join(str(sync_error).split())[:200]})"
            if cause is FailureCause.ERROR:
                cause = FailureCause.CRASH
        reason = f"{type(exc).__name__}: {text}"
        return TrialResult.failed(self.kernel, str(self.device), cause, reason, time.perf_counter() - self.started)


def cause_of(error: BaseException) -> FailureCause:
    """What an exception raised while running a kernel says about the kernel (see :class:`FailureCause`)."""
    text = f"{type(error).__name__}: {error}".lower()
    if isinstance(error, KeyboardInterrupt):
        return FailureCause.INTERRUPTED
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return FailureCause.OOM
    if any(hint in text for hint in OOM_HINTS):
        return FailureCause.OOM
    if _NO_IMAGE in text:
        return FailureCause.NO_IMAGE
    if any(hint in text for hint in CUDA_ERROR_HINTS):
        return FailureCause.CRASH
    if isinstance(error, ImportError):
        return FailureCause.IMPORT
    return FailureCause.ERROR


def run_job(job: dict[str, object], log: Callable[[str], None] = lambda text: None) -> TrialResult:
    """Run one trial in this process, its rounds back to back (``job["rounds"]``, default :data:`ROUNDS`). A failure
    is a result, not an error (:meth:`Session.failure`)."""
    session = Session(job, log)
    try:
        broken = session.prepare()
        if broken is not None:
            return broken
        for _ in range(int(job.get("rounds", ROUNDS))):  # type: ignore[call-overload]
            session.round()
        return session.result()
    except (Exception, KeyboardInterrupt) as exc:  # whatever the kernel raises is the result
        return session.failure(exc)


def _say(marker: str, result: TrialResult | None = None, extra: object = None) -> None:
    payload = to_json(result) if result is not None else extra
    print(marker + ("" if payload is None else " " + json.dumps(payload)), flush=True)


def preload(argv: Sequence[str]) -> None:
    """Import what the trial's kernel will need, and on CUDA make the device's context, before the job arrives:
    ``argv`` is ``[DEVICE, KERNEL]`` as the parent passes them. The parent starts every child of a run at once and
    sends their jobs one after another (on CUDA one kernel builds at a time), so these seconds overlap the other
    children's work instead of adding to it. Anything that fails here fails again, for the record, in the trial."""
    if len(argv) != 2:
        return
    device, kernel = argv
    try:
        import importlib

        import torch

        if device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.set_device(torch.device(device))
            torch.zeros(1, device=device)  # the context
        path = CATALOGUE[Kernel(kernel)].module_class
        importlib.import_module("awq_autoselect.kernels.layers")
        if path.startswith("awq."):
            importlib.import_module(path.rpartition(".")[0])
    except Exception:  # the trial itself meets the same failure and reports it
        pass


def serve(log: Callable[[str], None]) -> None:
    """The child's side of :mod:`.interleave`: the job on the first line of stdin; then ``round [THREADS]`` (time
    once more, answered by :data:`ROUND_MARKER`) until ``finish`` or the end of stdin (answered by the result). A
    failure ends the trial at once, with its result. Each ``round`` is answered with the round's costs
    (:meth:`Session.round_costs`)."""
    session = Session(json.loads(sys.stdin.readline()), log)
    try:
        broken = session.prepare()
    except (Exception, KeyboardInterrupt) as exc:
        _say(RESULT_MARKER, session.failure(exc))
        return
    if broken is not None:
        _say(RESULT_MARKER, broken)
        return
    _say(READY_MARKER)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "finish":
            break
        if command != "round":
            continue
        try:
            session.round(int(argument) if argument else None)
        except (Exception, KeyboardInterrupt) as exc:
            _say(RESULT_MARKER, session.failure(exc))
            return
        _say(ROUND_MARKER, extra=session.round_costs())
    _say(RESULT_MARKER, session.result())


def main() -> int:
    """Serve one trial (:func:`serve`); exit 0 whatever the kernel did (the result says)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AutoAWQ's and torch's chatter is not the result
        preload(sys.argv[1:])
        serve(lambda text: print(text, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    import importlib

    # Run the module everything else imports, not this __main__ copy of it: one Session class, one set of globals.
    sys.exit(importlib.import_module("awq_autoselect.trials.child").main())
