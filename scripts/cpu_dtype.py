"""Measure torch_int4 on the CPU in bfloat16 (the default) and float32: speed and error (issue 11).

    .venv/bin/python scripts/cpu_dtype.py --out docs/results/cpu-dtype.json

Builds a synthetic AWQ checkpoint (hidden 2048, intermediate 5632, 8 layers, g128), loads it with
``load_quantized_auto(device="cpu", version="torch_int4", torch_dtype=...)`` for each dtype, and records: the
loader's probe error, the logits' relative error against the float32 dequantized reference
(``load_dense_baseline(dtype=float32)``), whether greedy tokens match the reference, the prefill time of a
128-token prompt and the time per decoded token (median of repeats). Timings are measured, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from awq_autoselect import load_quantized_auto
from awq_autoselect._awq import hf_model_of
from awq_autoselect._packages import dist_version
from awq_autoselect.loading import load_dense_baseline
from awq_autoselect.testing import make_synthetic_checkpoint
from awq_autoselect.testing.synthetic import ModelShape

SHAPE = ModelShape(
    name="cpu-medium",
    hidden_size=2048,
    intermediate_size=5632,
    num_hidden_layers=8,
    num_attention_heads=16,
    num_key_value_heads=16,
    vocab_size=32000,
    max_position_embeddings=2048,
)


def _median_ms(fn: object, repeats: int) -> float:
    assert callable(fn)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _measure(
    path: Path,
    dtype: torch.dtype,
    *,
    prompt: torch.Tensor,
    ref_logits: torch.Tensor,
    ref_tokens: torch.Tensor,
    repeats: int,
    new_tokens: int,
) -> dict[str, object]:
    model: Any
    model, report = load_quantized_auto(
        path, device="cpu", version="torch_int4", torch_dtype=dtype, fallback=False, trials=False
    )
    inner: Any = hf_model_of(model)
    short = prompt[:, :16]
    with torch.no_grad():
        logits = inner(prompt).logits.float()
        error = float(torch.linalg.vector_norm(logits - ref_logits) / torch.linalg.vector_norm(ref_logits))
        tokens = model.generate(input_ids=short, max_new_tokens=8, do_sample=False)
        prefill_ms = _median_ms(lambda: inner(prompt), repeats)
        total_ms = _median_ms(lambda: model.generate(input_ids=short, max_new_tokens=new_tokens), repeats)
        one_ms = _median_ms(lambda: model.generate(input_ids=short, max_new_tokens=1), repeats)
    return {
        "dtype": str(dtype).replace("torch.", ""),
        "kernel": str(report.kernel),
        "decode": report.decode,
        "probe_max_rel_error": report.probe.max_rel_error if report.probe else None,
        "logits_rel_error_vs_float32_reference": error,
        "greedy_tokens_equal_reference": bool(torch.equal(tokens, ref_tokens)),
        "prefill_128_ms": prefill_ms,
        "ms_per_decoded_token": (total_ms - one_ms) / (new_tokens - 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    prompt = torch.randint(3, SHAPE.vocab_size, (1, 128))
    with tempfile.TemporaryDirectory() as tmp:
        path = make_synthetic_checkpoint(Path(tmp) / "ckpt", shape=SHAPE, group_size=128)
        reference: Any = load_dense_baseline(path, device="cpu", dtype=torch.float32).model
        with torch.no_grad():
            ref_logits = hf_model_of(reference)(prompt).logits.float()
            ref_tokens = reference.generate(input_ids=prompt[:, :16], max_new_tokens=8, do_sample=False)
        del reference
        rows = [
            _measure(
                path,
                dtype,
                prompt=prompt,
                ref_logits=ref_logits,
                ref_tokens=ref_tokens,
                repeats=args.repeats,
                new_tokens=args.new_tokens,
            )
            for dtype in (torch.bfloat16, torch.float32)
        ]
    result = {
        "command": "python scripts/cpu_dtype.py --out " + str(args.out),
        "shape": {
            "hidden": SHAPE.hidden_size,
            "intermediate": SHAPE.intermediate_size,
            "layers": SHAPE.num_hidden_layers,
            "group_size": 128,
        },
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": dist_version("transformers"),
            "autoawq": dist_version("autoawq"),
            "threads": torch.get_num_threads(),
        },
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
