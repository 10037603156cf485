"""Where a long prompt's prefill spends its time: torch_int4 against the fp16 baseline (issue 10's TTFT goal).

    python3 scripts/profile_prefill.py CHECKPOINT --prompt-tokens 512 --out prefill-profile.json

For each of ``torch_int4`` (``load_quantized_auto(version="torch_int4", fast_decode=False)``) and ``fp16``
(``load_dense_baseline``): the wall time of an eager prefill (the model's forward over the prompt with a dynamic
cache, last position's logits, synchronized; median of ``--repeats`` after a warmup), then one more under
``torch.profiler``: the GPU's busy time (sum of CUDA kernel times), the host's time in the forward, and the top
kernels. Wall time well above GPU busy time means the prefill waits on Python and launches, not on the GPU.
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


def _prefill(model: Any, ids: torch.Tensor) -> None:
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        out.logits[:, -1, :].argmax(dim=-1)


def _measure(model: Any, ids: torch.Tensor, repeats: int) -> dict[str, Any]:
    from torch.profiler import DeviceType, ProfilerActivity, profile

    _prefill(model, ids)
    torch.cuda.synchronize()
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        _prefill(model, ids)
        torch.cuda.synchronize()
        walls.append((time.perf_counter() - start) * 1000)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        _prefill(model, ids)
        torch.cuda.synchronize()
        profiled_wall = (time.perf_counter() - start) * 1000
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
    for name in ("torch_int4", "fp16"):
        if name == "fp16":
            loaded = load_dense_baseline(args.checkpoint, device="cuda")
        else:
            loaded = load_quantized_auto(args.checkpoint, version=name, device="cuda", fast_decode=False, trials=False)
        model = hf_model_of(loaded.model)
        result["versions"][name] = _measure(model, ids, args.repeats)
        entry = result["versions"][name]
        print(
            f"{name}: wall {entry['wall_ms_median']:.2f} ms, GPU busy {entry['gpu_busy_ms']:.2f} ms, "
            f"{entry['kernel_launches']} kernels",
            flush=True,
        )
        for k in entry["top_kernels"][:6]:
            print(f"    {k['ms']:8.3f} ms {k['calls']:5d}x {k['name'][:90]}", flush=True)
        del loaded, model
        torch.cuda.empty_cache()
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
