"""Time to the first reply in a fresh process: what a notebook user waits for (docs/benchmarks.md).

    python scripts/first_reply.py CHECKPOINT --out first-reply.json [--launched-at EPOCH] [--label cold]

One process, as a user's: import, ``load_quantized_auto`` (resolve, trials, load, conversion, probe), the first
``generate()`` of ``--new-tokens`` greedy tokens after a ``--prompt-tokens`` prompt (the decode step's compilation
and capture happen here), then a second, identical ``generate()`` (the steady state). Every stage's wall seconds go
to ``--out`` as JSON with the load's report, the versions and the card. ``--launched-at`` (``date +%s.%N`` just
before the process started) adds the interpreter's own start. Cold or warm is the caller's doing: the trial cache
(``AWQ_AUTOSELECT_CACHE_DIR``) and torch.compile's caches (``TORCHINDUCTOR_CACHE_DIR``) empty, or kept from a
previous run.
"""

from __future__ import annotations

import time

STARTED = time.time()

import argparse  # noqa: E402  (the clock starts before anything is imported)
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--launched-at", type=float, default=None, help="epoch seconds the process was launched")
    parser.add_argument("--label", default="", help="a word for the JSON: cold, warm, ...")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    origin = args.launched_at if args.launched_at is not None else STARTED
    stamps: dict[str, float] = {"interpreter": STARTED - origin}

    def mark(name: str, since: float) -> float:
        now = time.time()
        stamps[name] = now - since
        return now

    begun = time.time()
    import torch

    import awq_autoselect
    from awq_autoselect import load_quantized_auto

    begun = mark("import", begun)
    loaded, report = load_quantized_auto(args.checkpoint)
    model: Any = loaded  # AutoAWQ's wrapper: .config and .generate() are the Hugging Face model's
    begun = mark("load_quantized_auto", begun)
    device = next(model.parameters()).device
    vocab = int(model.config.vocab_size)
    ids = torch.randint(3, vocab, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(0)).to(device)
    runs = []
    for name in ("first_generate", "second_generate"):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.time()
        out = model.generate(
            ids, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        runs.append(out.shape[-1] - ids.shape[-1])
        begun = mark(name, start)
    total = begun - origin
    steady_ms = stamps["second_generate"] / args.new_tokens * 1000.0
    import transformers

    record = {
        "label": args.label,
        "checkpoint": args.checkpoint,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "tokens_generated": runs,
        "seconds": {k: round(v, 3) for k, v in stamps.items()},
        "first_reply_seconds": round(total - stamps["second_generate"], 3),
        "second_reply_ms_per_token": round(steady_ms, 4),
        "kernel": report.kernel.value if report.kernel is not None else None,
        "stages": None if report.stages is None else report.stages.to_dict(),
        "first_compile_seconds": report.first_compile.seconds,
        "report": report.to_dict(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "awq_autoselect": awq_autoselect.__version__,
        },
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    seconds = ", ".join(f"{k} {v:.2f} s" for k, v in stamps.items())
    print(
        f"{args.label or 'run'}: first reply {record['first_reply_seconds']:.1f} s after launch ({seconds}); "
        f"kernel {record['kernel']}; stages {record['stages']}; steady {steady_ms:.3f} ms/token",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
