"""The child process of a trial: ``python -m awq_autoselect.trials.child`` reads a job (JSON) on stdin, runs one
kernel on layers of the job's shapes, and prints its :class:`~.records.TrialResult` on the last line of stdout.

This process exists to be expendable: a kernel that hits an illegal memory access, aborts, hangs or segfaults
takes only this process with it, and the parent (:mod:`.runner`) records why. What it does, per layer shape:

1. draws random 4-bit weights, zero points and fp16 scales of the shape (several sets, so that timed calls rotate
   through more weight bytes than the GPU's L2 cache holds), and builds the kernel's layers from them
   (:func:`awq_autoselect.kernels.layers.build_layers`);
2. the numeric check of the loader's probe: outputs at 1 row and at the largest row count against
   ``x @ dequantize(W).T`` in float32; worse than the tolerance, or not finite, is *broken*;
3. times one layer call at every row count asked for: back-to-back eager calls (what eager decode pays, CPU
   launch cost included) and, on CUDA, the same calls replayed from a captured CUDA graph; warmup first, medians
   over repeats, CUDA events (``perf_counter`` on the CPU).
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

__all__ = ["CUDA_ERROR_HINTS", "OOM_HINTS", "RESULT_MARKER", "cause_of", "main", "run_job"]

#: The last line of a child's stdout starts with this, followed by the result's JSON.
RESULT_MARKER = "AWQ_AUTOSELECT_TRIAL_RESULT "

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
_REPEATS = 25
_CPU_REPEATS = 5
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
        denom = float(torch.linalg.vector_norm(ref)) or 1.0
        worst = max(worst, float(torch.linalg.vector_norm(got - ref)) / denom)
    return worst


def _time_eager(layers: Sequence[torch.nn.Module], x: torch.Tensor, device: torch.device) -> float:
    """Median microseconds per call of back-to-back calls over the rotating layers."""
    import torch

    for _ in range(_WARMUP):
        for layer in layers:
            layer(x)
    _sync(device)
    samples: list[float] = []
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        for _ in range(_REPEATS):
            start.record()
            for layer in layers:
                layer(x)
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) * 1000.0 / len(layers))
    else:
        for _ in range(_CPU_REPEATS):
            t0 = time.perf_counter()
            for layer in layers:
                layer(x)
            samples.append((time.perf_counter() - t0) * 1e6 / len(layers))
    return statistics.median(samples)


def _time_graph(layers: Sequence[torch.nn.Module], x: torch.Tensor, device: torch.device) -> float:
    """Median microseconds per call of the same calls replayed from one captured CUDA graph."""
    import torch

    static = x.clone()
    side = torch.cuda.Stream(device=device)  # type: ignore[no-untyped-call]
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):
            for layer in layers:
                layer(static)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = [layer(static) for layer in layers]
    graph.replay()
    _sync(device)
    start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    samples: list[float] = []
    for _ in range(_REPEATS):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1000.0 / len(layers))
    del outputs, graph
    return statistics.median(samples)


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
    """Run one trial in this process (see the module docstring). A failure is a result, not an error: *broken*
    when the kernel is to blame, *inconclusive* when not (out of memory, interrupted), as :func:`cause_of` says."""
    import torch

    started = time.perf_counter()
    kernel = Kernel(str(job["kernel"]))
    device = torch.device(str(job["device"]))
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return _measure(kernel, device, job, started, log)
    except (Exception, KeyboardInterrupt) as exc:  # whatever the kernel raises is the result
        cause = cause_of(exc)
        text = " ".join(str(exc).split())[:600]
        try:
            _sync(device)
        except Exception as sync_error:
            text += f" (the CUDA context is unusable afterwards: {' '.join(str(sync_error).split())[:200]})"
            if cause is FailureCause.ERROR:
                cause = FailureCause.CRASH
        reason = f"{type(exc).__name__}: {text}"
        return TrialResult.failed(kernel, str(device), cause, reason, time.perf_counter() - started)


def _measure(
    kernel: Kernel, device: torch.device, job: dict[str, object], started: float, log: Callable[[str], None]
) -> TrialResult:
    import torch

    from awq_autoselect.kernels.layers import build_layers

    dtype = getattr(torch, CATALOGUE[kernel].dtype_on(device.type))
    rows = sorted({int(r) for r in job["rows"]})  # type: ignore[attr-defined]
    shapes = [LayerShape(int(a), int(b), int(c)) for a, b, c in job["shapes"]]  # type: ignore[attr-defined]
    group_size = int(job["group_size"])  # type: ignore[call-overload]
    zero_point = bool(job["zero_point"])
    tolerance = float(job["tolerance"])  # type: ignore[arg-type]
    want_graph = bool(job.get("graph", True)) and device.type == "cuda"
    seed = int(job.get("seed", 0))  # type: ignore[call-overload]
    notes: list[str] = []
    lowest_zero = 1 if CATALOGUE[kernel].zero_minus_one else 0
    if lowest_zero and zero_point:
        notes.append("zero points drawn from 1-15: the kernel cannot store 0 (selection checks the checkpoint's)")
    graph_ok = want_graph
    results: list[ShapeResult] = []
    with torch.inference_mode():
        for index, shape in enumerate(shapes):
            sets = _sets(shape, device)
            weights = [
                _random_weight(shape, group_size, zero_point, seed + 97 * index + i, device, lowest_zero=lowest_zero)
                for i in range(sets)
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
                    time.perf_counter() - started,
                    FailureCause.WRONG,
                )
            gen = torch.Generator(device=device).manual_seed(seed)
            timings: list[RowTiming] = []
            for count in rows:
                x = torch.randn(_activation_shape(count, shape.in_features), generator=gen, device=device).to(dtype)
                eager = _time_eager(layers, x, device)
                graph: float | None = None
                if graph_ok:
                    try:
                        graph = _time_graph(layers, x, device)
                    except Exception as exc:  # not capturable: a fact about decode with graphs, not a broken kernel
                        graph_ok = False
                        notes.append(f"cannot be captured in a CUDA graph ({type(exc).__name__}: {str(exc)[:200]})")
                        _sync(device)  # raises if the failed capture broke the context: then it is broken
                timings.append(RowTiming(count, eager, graph))
                log(f"{kernel.value} {label} rows={count}: eager {eager:.1f} us, graph {graph}")
            results.append(ShapeResult(shape, error, tuple(timings)))
            del layers, weights
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if device.type != "cuda":
        notes.append(f"no CUDA graph timings on {device.type}")
    return TrialResult(
        kernel,
        TrialStatus.OK,
        "; ".join(notes),
        str(device),
        tuple(results),
        time.perf_counter() - started,
        utc_timestamp(),
    )


def main() -> int:
    """Read the job from stdin, run it, print the result; exit 0 whatever the kernel did (the result says)."""
    import warnings

    job = json.loads(sys.stdin.read())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AutoAWQ's and torch's chatter is not the result
        result = run_job(job, log=lambda text: print(text, file=sys.stderr, flush=True))
    print(RESULT_MARKER + json.dumps(to_json(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
