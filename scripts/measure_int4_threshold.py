"""Measure where torch_int4 should leave tinygemm for dequantize + cuBLAS: the ``dense_threshold`` crossover.

tinygemm (``aten._weight_int4pack_mm``) re-reads the 4-bit weights for every 16 rows, so its time grows with
the rows; the dense path pays a fixed dequantization (0.5 -> 2 bytes per weight) and then cuBLAS. This script
times both, as :class:`awq_autoselect.kernels.torch_int4.TorchInt4Linear` runs them, on the GPU:

- paths: ``tinygemm`` (dense_threshold never reached), ``dense`` (dequantize on every call, the default dense
  path), ``dense_cached`` (``cache_dense=True``: a bf16 weight kept, i.e. plain cuBLAS);
- 7B Llama layer shapes, K x N (in x out): 4096x4096 (q/k/v/o), 4096x11008 (gate/up), 11008x4096 (down),
  4096x12288 (fused qkv); rows 1 .. 2048; group size 128;
- GPU time by CUDA events around CUDA-graph replays (no launch overhead: the regime of graph decoding; ``--eager``
  times eager calls instead), each replay running one call per weight set, with enough distinct weight sets
  that they do not fit in L2 (``--l2-mib``); median and p20/p80 of ``--reps`` replays, after warm-up.

It also times the dense path's dequantization alone (``awq_autoselect.kernels.int4_dequant``: the Triton kernel, a
sweep of its block sizes with ``--dequant-configs``, and the torch version), per call and as bandwidth: the
bytes it must move (0.5 byte/weight read, 2 written, plus the scales) over the time.

It prints a table per shape and the crossover: per shape, the fewest rows from which ``dense`` is at least as
fast as ``tinygemm`` at every larger measured row count; and ``recommended``, the same over a whole Llama
decoder layer (4 x 4096x4096 + 2 x 4096x11008 + 1 x 11008x4096). ``--json PATH`` writes everything, with the
GPU, driver-visible CUDA and torch versions. Put ``recommended`` into ``DENSE_THRESHOLD`` in
awq_autoselect/_torch_int4.py and docs/torch-int4.md.

Usage: ``python scripts/measure_int4_threshold.py [--json PATH] [--reps N] [--eager] [--rows 1,2,4 ...]
[--dequant-configs 16x256x4,...] [--dequant-only]``
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from awq_autoselect import formats  # noqa: E402 - after the path set-up for a plain checkout
from awq_autoselect.kernels.int4_dequant import (  # noqa: E402
    dequantize_tiles,
    dequantize_tiles_triton,
    triton_failure,
)
from awq_autoselect.kernels.torch_int4 import TorchInt4Linear  # noqa: E402

SCHEMA_VERSION = 2  # 2: dequantization timings ("dequant") and the dense path's dequantization backend
DEFAULT_SHAPES = ((4096, 4096), (4096, 11008), (11008, 4096), (4096, 12288))
DEFAULT_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
PATHS = ("tinygemm", "dense", "dense_cached")
# Triton block configurations (rows x inputs x warps) timed for the dequantization; the first is the one the
# module runs (awq_autoselect.kernels.int4_dequant defaults).
DEFAULT_DEQUANT_CONFIGS = "8x256x4,16x256x4,32x256x4,16x512x4,16x128x4,32x512x8,64x256x8"
# One Llama-7B decoder layer: (K, N) -> how many such matmuls.
LLAMA_LAYER = {(4096, 4096): 4, (4096, 11008): 2, (11008, 4096): 1}


@dataclass(frozen=True)
class Timing:
    """One (shape, rows, path) measurement, per call, in microseconds."""

    k: int
    n: int
    rows: int
    path: str
    median_us: float
    p20_us: float
    p80_us: float
    weight_sets: int
    reps: int


@dataclass(frozen=True)
class DequantTiming:
    """One (shape, backend, config) dequantization measurement, per call."""

    k: int
    n: int
    backend: str  # "triton" or "torch"
    config: str  # block_n x block_k x num_warps for "triton", "-" for "torch"
    median_us: float
    p20_us: float
    p80_us: float
    gb_per_s: float  # bytes that must move (tiles read, weight written, scales read) / median time
    weight_sets: int
    reps: int


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", type=Path, help="write the measurements and crossovers here")
    parser.add_argument("--reps", type=int, default=50, help="timed replays per point (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed replays per point (default 5)")
    parser.add_argument("--rows", default=",".join(map(str, DEFAULT_ROWS)), help="comma-separated row counts")
    parser.add_argument(
        "--shapes",
        default=",".join(f"{k}x{n}" for k, n in DEFAULT_SHAPES),
        help="comma-separated KxN (in_features x out_features)",
    )
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--l2-mib", type=float, default=60.0, help="L2 size to defeat (default 60 MiB)")
    parser.add_argument("--eager", action="store_true", help="time eager calls instead of CUDA-graph replays")
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--dequant-configs",
        default=DEFAULT_DEQUANT_CONFIGS,
        help="Triton dequantization configs to time, block_n x block_k x num_warps (the module runs 16x256x4)",
    )
    parser.add_argument("--dequant-only", action="store_true", help="time the dequantization only, no crossover")
    return parser.parse_args(argv)


def make_layer(k: int, n: int, group_size: int, device: torch.device, *, cache_dense: bool) -> TorchInt4Linear:
    groups = k // group_size
    weight = formats.UnpackedWeight(
        intweight=torch.randint(0, 16, (n, k), dtype=torch.uint8, device=device),
        zeros=torch.randint(0, 16, (n, groups), dtype=torch.uint8, device=device),
        scales=(torch.rand((n, groups), device=device) * 0.03 + 1e-3).half(),
        group_size=group_size,
    )
    return TorchInt4Linear.from_unpacked(weight, device=device, cache_dense=cache_dense)


def weight_sets_for(k: int, n: int, l2_bytes: float) -> int:
    """Enough copies of a layer's int4 weights to overflow L2 three times over (at least 2, at most 64)."""
    int4_bytes = k * n / 2
    return max(2, min(64, math.ceil(3 * l2_bytes / int4_bytes)))


def time_calls(
    calls: Sequence[Callable[[], object]], *, reps: int, warmup: int, graph: bool, device: torch.device
) -> list[float]:
    """Per-call microseconds of running every call once, ``reps`` times."""
    stream = torch.cuda.current_stream(device)

    def run_all() -> None:
        for call in calls:
            call()

    replay: Callable[[], None] = run_all
    cuda_graph: torch.cuda.CUDAGraph | None = None
    if graph:
        side = torch.cuda.Stream(device=device)  # type: ignore[no-untyped-call]
        side.wait_stream(stream)
        with torch.cuda.stream(side):
            run_all()
        stream.wait_stream(side)
        cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cuda_graph):
            run_all()
        replay = cuda_graph.replay
    for _ in range(warmup):
        replay()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]  # type: ignore[no-untyped-call]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]  # type: ignore[no-untyped-call]
    for start, end in zip(starts, ends, strict=True):
        start.record(stream)
        replay()
        end.record(stream)
    torch.cuda.synchronize(device)
    per_call = [1000.0 * start.elapsed_time(end) / len(calls) for start, end in zip(starts, ends, strict=True)]
    del cuda_graph
    return per_call


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure_shape(
    k: int, n: int, rows_list: Sequence[int], args: argparse.Namespace, device: torch.device
) -> list[Timing]:
    sets = weight_sets_for(k, n, args.l2_mib * 2**20)
    results: list[Timing] = []
    for path in PATHS:
        layers = [make_layer(k, n, args.group_size, device, cache_dense=path == "dense_cached") for _ in range(sets)]
        for layer in layers:
            layer.dense_threshold = 10**9 if path == "tinygemm" else 1
        for rows in rows_list:
            x = torch.randn((rows, k), device=device).to(torch.bfloat16)
            calls = [functools.partial(layer, x) for layer in layers]
            with torch.no_grad():
                per_call = time_calls(calls, reps=args.reps, warmup=args.warmup, graph=not args.eager, device=device)
            results.append(
                Timing(
                    k=k,
                    n=n,
                    rows=rows,
                    path=path,
                    median_us=statistics.median(per_call),
                    p20_us=quantile(per_call, 0.2),
                    p80_us=quantile(per_call, 0.8),
                    weight_sets=sets,
                    reps=args.reps,
                )
            )
        del layers
        torch.cuda.empty_cache()
    return results


def dequant_bytes(k: int, n: int, group_size: int) -> int:
    """Bytes a dequantization must move: int4 tiles read, bf16 weight written, bf16 (scale, zero) pairs read."""
    return n * k // 2 + 2 * n * k + 4 * n * (k // group_size)


def parse_configs(text: str) -> list[tuple[int, int, int]]:
    configs: list[tuple[int, int, int]] = []
    for item in (part for part in text.split(",") if part):
        block_n, block_k, warps = (int(v) for v in item.lower().split("x"))
        configs.append((block_n, block_k, warps))
    return configs


def measure_dequant(k: int, n: int, args: argparse.Namespace, device: torch.device) -> list[DequantTiming]:
    """Time the dense path's dequantization alone: each Triton config, then the torch version."""
    sets = weight_sets_for(k, n, args.l2_mib * 2**20)
    layers = [make_layer(k, n, args.group_size, device, cache_dense=False) for _ in range(sets)]
    variants: list[tuple[str, str, Callable[[TorchInt4Linear], object]]] = []
    for block_n, block_k, warps in parse_configs(args.dequant_configs):

        def triton_call(
            layer: TorchInt4Linear, block_n: int = block_n, block_k: int = block_k, warps: int = warps
        ) -> object:
            return dequantize_tiles_triton(
                layer.qtiles,
                layer.scales_and_zeros,
                n,
                k,
                args.group_size,
                block_n=block_n,
                block_k=block_k,
                num_warps=warps,
            )

        variants.append(("triton", f"{block_n}x{block_k}x{warps}", triton_call))

    def torch_call(layer: TorchInt4Linear) -> object:
        return dequantize_tiles(layer.qtiles, layer.scales_and_zeros, n, k, args.group_size, backend="torch")

    variants.append(("torch", "-", torch_call))
    moved = dequant_bytes(k, n, args.group_size)
    results: list[DequantTiming] = []
    for backend, config, call in variants:
        calls = [functools.partial(call, layer) for layer in layers]
        try:
            with torch.no_grad():
                per_call = time_calls(calls, reps=args.reps, warmup=args.warmup, graph=not args.eager, device=device)
        except Exception as exc:  # a config that does not compile on this GPU: report it, time the others
            print(f"  dequant {backend} {config} on {k}x{n}: failed ({type(exc).__name__}: {exc})", file=sys.stderr)
            continue
        median = statistics.median(per_call)
        results.append(
            DequantTiming(
                k=k,
                n=n,
                backend=backend,
                config=config,
                median_us=median,
                p20_us=quantile(per_call, 0.2),
                p80_us=quantile(per_call, 0.8),
                gb_per_s=moved / (median * 1e-6) / 1e9,
                weight_sets=sets,
                reps=args.reps,
            )
        )
    del layers
    torch.cuda.empty_cache()
    return results


def print_dequant(results: Sequence[DequantTiming]) -> None:
    print("\ndequantization alone (us per call, median [p20, p80]; GB/s of bytes that must move)")
    for k, n in dict.fromkeys((t.k, t.n) for t in results):
        print(f"K x N = {k} x {n}")
        for t in (t for t in results if (t.k, t.n) == (k, n)):
            print(
                f"  {t.backend:>6} {t.config:>10} {t.median_us:>9.1f} [{t.p20_us:7.1f},{t.p80_us:8.1f}]  "
                f"{t.gb_per_s:7.0f} GB/s"
            )


def crossover(times: dict[int, tuple[float, float]]) -> int | None:
    """Fewest rows from which dense <= tinygemm at every larger measured row count; None if never."""
    best: int | None = None
    for rows in sorted(times, reverse=True):
        tinygemm, dense = times[rows]
        if dense > tinygemm:
            break
        best = rows
    return best


@dataclass(frozen=True)
class Summary:
    """The crossovers: per shape, over a Llama decoder layer, and the threshold to use."""

    per_shape: dict[str, int | None]
    llama_layer_us: dict[str, dict[str, float]]
    recommended: int | None
    per_shape_cached: dict[str, int | None]
    recommended_cached: int | None


def summarize(results: Sequence[Timing]) -> Summary:
    table: dict[tuple[int, int], dict[int, dict[str, float]]] = {}
    for t in results:
        table.setdefault((t.k, t.n), {}).setdefault(t.rows, {})[t.path] = t.median_us

    def shapes(dense_path: str) -> dict[str, int | None]:
        return {
            f"{k}x{n}": crossover({r: (v["tinygemm"], v[dense_path]) for r, v in rows.items()})
            for (k, n), rows in table.items()
        }

    def llama_layer(dense_path: str) -> dict[int, tuple[float, float]]:
        if not all(shape in table for shape in LLAMA_LAYER):
            return {}
        common = set.intersection(*(set(table[shape]) for shape in LLAMA_LAYER))
        return {
            rows: (
                sum(count * table[shape][rows]["tinygemm"] for shape, count in LLAMA_LAYER.items()),
                sum(count * table[shape][rows][dense_path] for shape, count in LLAMA_LAYER.items()),
            )
            for rows in common
        }

    layer = llama_layer("dense")
    cached = llama_layer("dense_cached")
    return Summary(
        per_shape=shapes("dense"),
        llama_layer_us={
            str(r): {"tinygemm": v[0], "dense": v[1], "dense_cached": cached[r][1]} for r, v in sorted(layer.items())
        },
        recommended=crossover(layer) if layer else None,
        per_shape_cached=shapes("dense_cached"),
        recommended_cached=crossover(cached) if cached else None,
    )


def print_table(results: Sequence[Timing]) -> None:
    shapes = sorted({(t.k, t.n) for t in results}, key=lambda s: DEFAULT_SHAPES.index(s) if s in DEFAULT_SHAPES else 99)
    for k, n in shapes:
        print(f"\nK x N = {k} x {n}  (us per call, median [p20, p80])")
        print(f"{'rows':>6} " + " ".join(f"{path:>26}" for path in PATHS) + "  faster")
        rows_seen = sorted({t.rows for t in results if (t.k, t.n) == (k, n)})
        for rows in rows_seen:
            cells = {t.path: t for t in results if (t.k, t.n, t.rows) == (k, n, rows)}
            text = " ".join(
                f"{cells[p].median_us:>10.1f} [{cells[p].p20_us:6.1f},{cells[p].p80_us:7.1f}]" for p in PATHS
            )
            faster = "dense" if cells["dense"].median_us <= cells["tinygemm"].median_us else "tinygemm"
            print(f"{rows:>6} {text}  {faster}")


def environment(device: torch.device) -> dict[str, object]:
    props = torch.cuda.get_device_properties(device)
    return {
        "gpu": props.name,
        "capability": "{}.{}".format(*torch.cuda.get_device_capability(device)),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "cuda": torch.version.cuda,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("measure_int4_threshold: needs a CUDA GPU (tinygemm's CUDA kernel is what is measured)", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if str(device) == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    rows_list = [int(r) for r in args.rows.split(",") if r]
    shapes: list[tuple[int, int]] = []
    for text in (s for s in args.shapes.split(",") if s):
        k, _, n = text.lower().partition("x")
        shapes.append((int(k), int(n)))
    torch.manual_seed(0)
    dequant: list[DequantTiming] = []
    for k, n in shapes:
        print(f"measuring the dequantization of {k}x{n} ...", file=sys.stderr, flush=True)
        dequant.extend(measure_dequant(k, n, args, device))
    print_dequant(dequant)
    if args.dequant_only:
        if args.json:
            write_json(args, device, {"dequant": [asdict(t) for t in dequant]})
        return 0
    results: list[Timing] = []
    for k, n in shapes:
        print(f"measuring {k}x{n} ...", file=sys.stderr, flush=True)
        results.extend(measure_shape(k, n, rows_list, args, device))
    # The module's dense path falls back to torch (for good) if the Triton kernel ever fails: say which ran.
    dense_backend = "triton" if triton_failure() is None else f"torch ({triton_failure()})"
    print(f"\ndense path dequantization: {dense_backend}")
    summary = summarize(results)
    print_table(results)
    print("\ncrossover (rows from which dense per-call dequantization wins):")
    for shape, rows in summary.per_shape.items():
        print(f"  {shape:>12}: {rows if rows is not None else 'never (tinygemm always faster)'}")
    print(f"  Llama layer : {summary.recommended}  <- recommended DENSE_THRESHOLD")
    print("crossover with cache_dense=True (a bf16 copy kept: 2 bytes/weight more memory):")
    for shape, rows in summary.per_shape_cached.items():
        print(f"  {shape:>12}: {rows if rows is not None else 'never (tinygemm always faster)'}")
    print(f"  Llama layer : {summary.recommended_cached}")
    if args.json:
        write_json(
            args,
            device,
            {
                "results": [asdict(t) for t in results],
                "crossover": asdict(summary),
                "dequant": [asdict(t) for t in dequant],
                "dense_dequant_backend": dense_backend,
            },
        )
    return 0


def write_json(args: argparse.Namespace, device: torch.device, content: dict[str, object]) -> None:
    payload = {
        "schema": SCHEMA_VERSION,
        "environment": environment(device),
        "method": "eager" if args.eager else "cuda-graph",
        "group_size": args.group_size,
        **content,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
