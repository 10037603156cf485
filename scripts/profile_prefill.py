"""Where a long prompt's prefill spends its time: torch_int4 against the fp16 baseline (issue 10's TTFT goal).

    python3 scripts/profile_prefill.py CHECKPOINT --prompt-tokens 512 --out prefill-profile.json

For each of ``torch_int4`` (``load_quantized_auto(version="torch_int4", fast_decode=False)``) and ``fp16``
(``load_dense_baseline``): the wall time of an eager prefill (the model's forward over the prompt with a dynamic
cache, last position's logits, synchronized; median of ``--repeats`` after a warmup), then one more under
``torch.profiler``: the GPU's busy time (sum of CUDA kernel times), the host's time in the forward, and the top
kernels. Wall time well above GPU busy time means the prefill waits on Python and launches, not on the GPU.
For torch_int4 also: the prefill wall with each way of building the dense weights (the checked ``dequantize()``
from before ``DenseBuilder``, and the builder's direct launch: the default), interleaved with fp16's, and
the host and wall microseconds per call of one layer's dense weight each way and of its forward.
Timings are measured, never asserted. Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from awq_autoselect import load_quantized_auto
from awq_autoselect._awq import hf_model_of
from awq_autoselect.loading import load_dense_baseline

_TOP = 12


def _prefill(model: Any, ids: torch.Tensor) -> float:
    """One prefill and the first token's argmax, synchronized; its wall time in ms."""
    start = time.perf_counter()
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        out.logits[:, -1, :].argmax(dim=-1)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000


def _measure(model: Any, ids: torch.Tensor, repeats: int) -> dict[str, Any]:
    from torch.profiler import DeviceType, ProfilerActivity, profile

    _prefill(model, ids)
    walls = [_prefill(model, ids) for _ in range(repeats)]
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        profiled_wall = _prefill(model, ids)
    kernels: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type == DeviceType.CUDA:
            entry = kernels.setdefault(str(event.name)[:120], [0.0, 0.0])
            entry[0] += float(event.time_range.elapsed_us()) / 1000
            entry[1] += 1
    top = sorted(kernels.items(), key=lambda kv: kv[1][0], reverse=True)[:_TOP]
    return {
        "wall_ms_median": statistics.median(walls),
        "wall_ms": walls,
        "profiled_wall_ms": profiled_wall,
        "gpu_busy_ms": sum(v[0] for v in kernels.values()),
        "kernel_launches": int(sum(v[1] for v in kernels.values())),
        "top_kernels": [{"name": n, "ms": round(v[0], 3), "calls": int(v[1])} for n, v in top],
    }


def _dense_variants() -> dict[str, Any]:
    """How ``TorchInt4Linear`` may build its dense weight: the launch path before ``DenseBuilder``, and today's.

    (A third, a CUDA graph replay of each layer's launch into a buffer shared per shape, was measured with this
    script on 2026-12-01 and not kept: docs/torch-int4.md.)"""
    from awq_autoselect.kernels.int4_dequant import DenseBuilder
    from awq_autoselect.kernels.torch_int4 import TorchInt4Linear

    def builder(layer: Any) -> DenseBuilder:  # made here: _dense_weight may be patched to this very variant
        if layer._builder is None or not layer._builder.holds(layer.qtiles, layer.scales_and_zeros):
            layer._builder = DenseBuilder(
                layer.qtiles, layer.scales_and_zeros, layer.out_features, layer.in_features, layer.group_size
            )
        built: DenseBuilder = layer._builder
        return built

    return {
        "checked": TorchInt4Linear.dequantize,  # every check, the launch through _launch (before DenseBuilder)
        "direct": lambda layer: builder(layer)(),  # the default: checks once, Triton's bound launcher
    }


def _layer_costs(model: Any, rows: int, calls: int = 100) -> dict[str, dict[str, float]]:
    """Host and wall microseconds per call of the first int4 layer's dense weight, each variant, and of its whole
    ``forward`` on ``rows`` rows. Host time: the loop without a sync (the GPU queue does not fill)."""
    from awq_autoselect.kernels.torch_int4 import TorchInt4Linear

    layer = next(m for m in model.modules() if isinstance(m, TorchInt4Linear))
    x = torch.randn(rows, layer.in_features, device="cuda", dtype=torch.bfloat16)
    calls_of: dict[str, Any] = {name: (lambda fn=fn: fn(layer)) for name, fn in _dense_variants().items()}
    calls_of["forward"] = lambda: layer(x)
    costs: dict[str, dict[str, float]] = {}
    for name, fn in calls_of.items():
        with torch.inference_mode():
            for _ in range(5):
                fn()
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            host = time.perf_counter() - start
            torch.cuda.synchronize()
            wall = time.perf_counter() - start
        costs[name] = {"host_us": host / calls * 1e6, "wall_us": wall / calls * 1e6}
    costs["layer"] = {"out_features": layer.out_features, "in_features": layer.in_features, "rows": rows}
    return costs


def _variant_walls(int4: Any, fp16: Any, ids: torch.Tensor, repeats: int) -> dict[str, list[float]]:
    """Prefill walls of fp16 and of torch_int4 with every layer's dense weight built each way of
    :func:`_dense_variants`, interleaved (the host's speed drifts between minutes on the lent machine)."""
    from awq_autoselect.kernels.torch_int4 import TorchInt4Linear

    original = TorchInt4Linear._dense_weight
    runs: list[tuple[str, Any, Any]] = [("fp16", fp16, original)]
    runs += [(f"torch_int4 {name}", int4, fn) for name, fn in _dense_variants().items()]
    walls: dict[str, list[float]] = {}
    try:
        for _ in range(repeats):
            for name, model, fn in runs:
                TorchInt4Linear._dense_weight = fn  # type: ignore[method-assign]
                _prefill(model, ids)  # a warm run of this variant, then the measured one
                walls.setdefault(name, []).append(_prefill(model, ids))
    finally:
        TorchInt4Linear._dense_weight = original  # type: ignore[method-assign]
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    ids = torch.randint(100, 30000, (1, args.prompt_tokens), device="cuda", generator=None)
    result: dict[str, Any] = {
        "command": f"python3 scripts/profile_prefill.py CHECKPOINT --prompt-tokens {args.prompt_tokens}",
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "prompt_tokens": args.prompt_tokens,
        "versions": {},
    }
    models = {
        "torch_int4": load_quantized_auto(
            args.checkpoint, version="torch_int4", device="cuda", fast_decode=False, trials=False
        ).model,
        "fp16": load_dense_baseline(args.checkpoint, device="cuda").model,
    }
    for name, loaded in models.items():
        entry = result["versions"][name] = _measure(hf_model_of(loaded), ids, args.repeats)
        print(
            f"{name}: wall {entry['wall_ms_median']:.2f} ms, GPU busy {entry['gpu_busy_ms']:.2f} ms, "
            f"{entry['kernel_launches']} kernels",
            flush=True,
        )
        for k in entry["top_kernels"][:6]:
            print(f"    {k['ms']:8.3f} ms {k['calls']:5d}x {k['name'][:90]}", flush=True)
    int4, fp16 = hf_model_of(models["torch_int4"]), hf_model_of(models["fp16"])
    result["interleaved_wall_ms"] = _variant_walls(int4, fp16, ids, args.repeats)
    result["layer_costs"] = _layer_costs(int4, args.prompt_tokens)
    for what, walls in result["interleaved_wall_ms"].items():
        print(f"prefill {what}: wall {statistics.median(walls):.2f} ms", flush=True)
    for what, cost in result["layer_costs"].items():
        print(f"    {what}: {cost}", flush=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
