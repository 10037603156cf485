"""Per-layer int4 matmul timing on a CUDA GPU: the project's Triton gemv, tinygemm, GemLite and fp16 cuBLAS.

For every decode shape of a 7B (Llama-2) and an 8B (Llama-3) model and every row count asked for, each
candidate is timed on weights rotated past the L2 cache (as many copies as fill 3x the L2, one per call, in
turn), from a CUDA graph of many calls (launch gaps inside the graph included: ``graph_us``) and from the
profiler's kernel durations (``kernel_us``: the kernels alone). Bytes counted: the weights with their scales and
zeros, the inputs and the outputs. The gemv kernel is swept over launch configurations and the best per shape and
row count kept (all are recorded). Writes JSON (``--out``); prints a table.

    python scripts/bench_int4_layers.py --out int4-layers.json [--rows 1,2,4,8,16] [--quick]
"""

# The helpers are this script's own and take their arguments by position.
# ruff: noqa: PLR0917

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from awq_autoselect.bench.traffic import datasheet_bandwidth_gbps
from awq_autoselect.kernels import int4_gemv

GROUP = 128
SHAPES = {  # name: (N out, K in)
    "7b.qkv": (12288, 4096),
    "7b.o": (4096, 4096),
    "7b.gate_up": (22016, 4096),
    "7b.down": (4096, 11008),
    "8b.qkv": (6144, 4096),
    "8b.gate_up": (28672, 4096),
    "8b.down": (4096, 14336),
    "8b.lm_head": (128256, 4096),
}


def sweep_configs(quick: bool) -> list[tuple[int, int4_gemv.GemvConfig]]:
    """(interleave, config) pairs: every split whose step gives a thread 4 to 32 words (64 without --quick)."""
    if quick:  # a dozen that compile in seconds each
        picks = [
            (4, 1, 4, 1, 1),
            (4, 1, 4, 1, 2),
            (4, 1, 8, 1, 1),
            (4, 1, 8, 1, 2),
            (4, 2, 4, 2, 2),
            (4, 1, 4, 1, 4),
            (4, 2, 8, 2, 1),
            (8, 1, 4, 1, 1),
            (8, 1, 4, 1, 2),
            (8, 1, 8, 2, 1),
            (8, 1, 4, 2, 2),
            (8, 2, 4, 2, 2),
        ]
        return [(r, int4_gemv.GemvConfig(b, g, w, i)) for r, b, g, w, i in picks]
    configs = []
    for interleave in int4_gemv.INTERLEAVES:
        for blocks in (1, 2, 4):
            for steps in (2, 4, 8):
                for warps in (1, 2, 4):
                    per_thread = blocks * interleave * steps * (GROUP // 8) / (32 * warps)
                    if 4 <= per_thread <= 64:
                        configs += [(interleave, int4_gemv.GemvConfig(blocks, steps, warps, i)) for i in (1, 2, 4)]
    return configs


def _graph_time(calls: Sequence[Callable[[], object]], repeats: int) -> float:
    """Microseconds per call, from a CUDA graph of ``calls`` replayed ``repeats`` times (after one warmup)."""
    stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for call in calls:  # warmup outside the capture (Triton compiles, cuBLAS picks an algorithm)
            call()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000.0 / len(calls))
    del graph
    return float(statistics.median(times))


def _kernel_time(calls: Sequence[Callable[[], object]]) -> float | None:
    """Mean kernel microseconds per call from the profiler (every CUDA kernel the calls launch, summed)."""
    from torch.profiler import DeviceType, ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for call in calls:
            call()
        torch.cuda.synchronize()
    total = sum(float(e.time_range.elapsed_us()) for e in prof.events() if e.device_type == DeviceType.CUDA)
    return total / len(calls) if total else None


def _copies(bytes_per_weight_set: int, l2_bytes: int) -> int:
    return max(2, math.ceil(3 * l2_bytes / max(1, bytes_per_weight_set)))


def measure_shape(
    name: str,
    n: int,
    k: int,
    rows: list[int],
    configs: list[tuple[int, int4_gemv.GemvConfig]],
    l2: int,
    peak_gbps: float,
    skip_gemlite: bool = False,
) -> list[dict[str, Any]]:
    dev = torch.device("cuda")
    groups = k // GROUP
    results: list[dict[str, Any]] = []
    gen = torch.Generator(device="cpu").manual_seed(n * 7 + k)
    q = torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=gen)
    z = torch.randint(0, 16, (n, groups), dtype=torch.uint8, generator=gen)
    s = (torch.rand((n, groups), generator=gen) * 0.02 + 0.001).half()
    qw, sz = int4_gemv.pack_gemv_layout(q.to(dev), z.to(dev), s.to(dev), GROUP, 4)
    dense_ref = int4_gemv.dequantize_gemv_layout(qw, sz, GROUP, torch.float32)
    int4_bytes = qw.numel() * 4 + sz.numel() * 4
    best_row: tuple[str, float, float | None, float] = ("", 0.0, None, 0.0)
    fp16_bytes = n * k * 2

    def record(
        kind: str, m: int, config: str, graph_us: float, kernel_us: float | None, weight_bytes: int, err: float | None
    ) -> None:
        moved = weight_bytes + m * (k + n) * 2
        use = kernel_us if kernel_us else graph_us
        results.append(
            {
                "shape": name,
                "n": n,
                "k": k,
                "rows": m,
                "kind": kind,
                "config": config,
                "graph_us": round(graph_us, 3),
                "kernel_us": None if kernel_us is None else round(kernel_us, 3),
                "bytes": moved,
                "gbps": round(moved / use / 1e3, 1),
                "pct_peak": round(100 * moved / use / 1e3 / peak_gbps, 1),
                "max_rel_err": err,
            }
        )

    for m in rows:
        x = torch.randn((m, k), device=dev, dtype=torch.float16)
        ref = x.float() @ dense_ref.T
        scale = ref.abs().max().item()

        # --- ours: sweep
        outs = torch.empty((m, n), device=dev, dtype=torch.float16)
        best: tuple[float, int, int4_gemv.GemvConfig] | None = None
        sweep: list[dict[str, object]] = []
        for interleave in int4_gemv.INTERLEAVES:
            qw, sz = int4_gemv.pack_gemv_layout(q.to(dev), z.to(dev), s.to(dev), GROUP, interleave)
            sets = [(qw.clone(), sz.clone()) for _ in range(_copies(int4_bytes, l2))]
            for _, cfg in (pair for pair in configs if pair[0] == interleave):
                label = f"r{interleave}-{cfg}"
                try:
                    y = int4_gemv.gemv(x, qw, sz, GROUP, config=cfg)
                    err = (y.float() - ref).abs().max().item() / scale
                    calls = [partial(int4_gemv.gemv, x, w, c, GROUP, config=cfg, out=outs) for w, c in sets] * 4
                    t = _graph_time(calls, 5)
                except Exception as exc:  # a config that does not compile or launch: recorded, skipped
                    sweep.append({"config": label, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
                    continue
                sweep.append({"config": label, "graph_us": round(t, 3), "err": err})
                if best is None or t < best[0]:
                    best = (t, interleave, cfg)
            if best is not None and best[1] == interleave:
                cfg = best[2]
                calls = [partial(int4_gemv.gemv, x, w, c, GROUP, config=cfg, out=outs) for w, c in sets] * 4
                y = int4_gemv.gemv(x, qw, sz, GROUP, config=cfg)
                best_row = (
                    f"r{interleave}-{cfg}",
                    _graph_time(calls, 9),
                    _kernel_time(calls),
                    (y.float() - ref).abs().max().item() / scale,
                )
            del sets
        results.append({"shape": name, "rows": m, "kind": "gemv-sweep", "sweep": sweep})
        if best is not None:
            record("triton-gemv", m, best_row[0], best_row[1], best_row[2], int4_bytes, best_row[3])

        # --- tinygemm
        try:
            xb = x.bfloat16()
            halves = ((q[:, 0::2] << 4) | q[:, 1::2]).to(dev).contiguous()
            tiles = torch.ops.aten._convert_weight_to_int4pack(halves, 8)
            sc = s.to(dev).float()
            pairs = torch.stack((sc, (8 - z.to(dev).float()) * sc), dim=-1).transpose(0, 1).contiguous().bfloat16()
            tg_bytes = tiles.numel() * 4 + pairs.numel() * 2
            copies = _copies(tg_bytes, l2)
            tsets = [(tiles.clone(), pairs.clone()) for _ in range(copies)]
            y = torch.ops.aten._weight_int4pack_mm(xb, tiles, GROUP, pairs)
            calls = [partial(torch.ops.aten._weight_int4pack_mm, xb, t, GROUP, p) for t, p in tsets] * 4
            record(
                "tinygemm",
                m,
                "",
                _graph_time(calls, 9),
                _kernel_time(calls),
                tg_bytes,
                (y.float() - ref).abs().max().item() / scale,
            )
            del tsets
        except Exception as exc:
            results.append({"shape": name, "rows": m, "kind": "tinygemm", "error": f"{type(exc).__name__}: {exc}"})

        # --- fp16 cuBLAS
        w16 = dense_ref.half()
        copies = _copies(fp16_bytes, l2)
        dsets = [w16.clone() for _ in range(copies)]
        y = F.linear(x, w16)
        calls = [partial(F.linear, x, w) for w in dsets] * max(1, 8 // copies)
        record(
            "fp16-cublas",
            m,
            "",
            _graph_time(calls, 9),
            _kernel_time(calls),
            fp16_bytes,
            (y.float() - ref).abs().max().item() / scale,
        )
        del dsets

        # --- GemLite
        try:
            if skip_gemlite:
                raise ImportError("skipped (--no-gemlite)")
            import gemlite
            from gemlite import DType, GemLiteLinear

            layer = GemLiteLinear(
                4, group_size=GROUP, in_features=k, out_features=n, input_dtype=DType.FP16, output_dtype=DType.FP16
            )
            layer.pack(q.to(dev), s.to(dev), z.to(dev).half(), None)
            y = layer(x)
            gl_bytes = sum(t.numel() * t.element_size() for t in layer.buffers() if isinstance(t, torch.Tensor))
            layers = [layer]
            for _ in range(_copies(int4_bytes, l2) - 1):
                other = GemLiteLinear(
                    4, group_size=GROUP, in_features=k, out_features=n, input_dtype=DType.FP16, output_dtype=DType.FP16
                )
                other.pack(q.to(dev), s.to(dev), z.to(dev).half(), None)
                layers.append(other)
            calls = [partial(lay, x) for lay in layers] * 4
            record(
                f"gemlite-{getattr(gemlite, '__version__', '?')}",
                m,
                "",
                _graph_time(calls, 9),
                _kernel_time(calls),
                gl_bytes or int4_bytes,
                (y.float() - ref).abs().max().item() / scale,
            )
            del layers
        except Exception as exc:
            results.append(
                {"shape": name, "rows": m, "kind": "gemlite", "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            )
        torch.cuda.empty_cache()
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--rows", default="1")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-gemlite", action="store_true")
    args = parser.parse_args()
    rows = [int(r) for r in args.rows.split(",")]
    props = torch.cuda.get_device_properties(0)
    name = torch.cuda.get_device_name(0)
    found = datasheet_bandwidth_gbps(name)  # (GB/s, the pattern that matched) or None
    peak = found[0] if found is not None else 1.0
    l2 = int(getattr(props, "L2_cache_size", 50 * 2**20))
    configs = sweep_configs(args.quick)
    meta = {
        "gpu": name,
        "peak_gbps": peak,
        "l2_bytes": l2,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "rows": rows,
        "configs": len(configs),
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        import triton

        meta["triton"] = triton.__version__
    except Exception:
        pass
    try:
        import gemlite

        meta["gemlite"] = getattr(gemlite, "__version__", "?")
    except Exception as exc:
        meta["gemlite"] = f"not importable: {exc}"
    print(json.dumps(meta), flush=True)
    results: list[dict[str, Any]] = []
    for shape in args.shapes.split(","):
        n, k = SHAPES[shape]
        t0 = time.time()
        got = measure_shape(shape, n, k, rows, configs, l2, peak, args.no_gemlite)
        results += got
        for r in got:
            if "gbps" in r:
                print(
                    f"{shape:<12} m={r['rows']:<3} {r['kind']:<16} {r['config']:<16} graph {r['graph_us']:8.2f} us"
                    f"  kernel {r['kernel_us'] or 0.0:8.2f} us  {r['gbps']:7.1f} GB/s {r['pct_peak']:5.1f} %"
                    f"  err {r['max_rel_err']:.1e}",
                    flush=True,
                )
            elif "error" in r:
                print(f"{shape:<12} m={r['rows']:<3} {r['kind']:<16} ERROR {r['error'][:150]}", flush=True)
        print(f"-- {shape} in {time.time() - t0:.1f} s", flush=True)
        Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
