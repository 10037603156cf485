"""One row of the transformers compatibility matrix: AutoAWQ 0.2.9 end to end on CPU.

Run by ``scripts/compat_matrix.sh`` inside a scratch venv that holds one transformers version. The steps, in
order:

1. ``import awq`` (AutoAWQ imports many ``transformers`` internals at import time);
2. build a tiny random Llama with ``tests/helpers.py`` (fp16, offline BPE tokenizer);
3. quantize it with AutoAWQ (GEMM, group size 128, zero point) as ``tests/helpers.py`` does, and save;
4. ``from_quantized`` on CPU (``fuse_layers=False``; ``get_best_device`` patched to report a GPU, because on CPU
   AutoAWQ forces the IPEX kernel, which does not import with current torch; triton's GEMM path is switched off
   because it needs CUDA);
5. a forward pass with finite logits;
6. ``generate(max_new_tokens=4)``.

If step 3 fails with the tests' calibration settings (8 blocks per forward), it is retried with AutoAWQ's defaults
so that steps 4-6 still say whether loading works. Writes one JSON object to ``--out`` (and prints a summary):
versions, each step's status, seconds, error and traceback, and the result: ``pass`` (every step passed),
``partial`` (only a quantize setting failed) or ``fail``. Exit status 0 for ``pass``, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTIONS = ("transformers", "autoawq", "torch", "tokenizers", "huggingface_hub", "accelerate", "triton")


class StepResult(TypedDict):
    """How one step went."""

    step: str
    ok: bool
    seconds: float
    error: str | None
    traceback: str | None


class Row(TypedDict):
    """One row of the matrix."""

    versions: dict[str, str | None]
    python: str
    result: str  # "pass": every step passed; "partial": a quantize setting failed, the rest passed; "fail"
    steps: list[StepResult]
    failed_steps: list[str]
    error: str | None  # the first failure's short form


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _short_error(exc: BaseException) -> str:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _run_steps(work: Path, steps_out: list[StepResult]) -> None:
    """Run the steps, appending each one's result to ``steps_out``; later steps run only if they can."""
    state: dict[str, object] = {}

    def import_awq() -> None:
        import awq  # noqa: F401

    def build() -> None:
        from tests import helpers as checkpoints

        state["fp16"] = checkpoints.build_tiny_model(work / "fp16")

    def quantize_as_tests_do() -> None:
        from tests import helpers as checkpoints

        src = state["fp16"]
        assert isinstance(src, Path)
        state["quant"] = checkpoints.quantize(src, work / "awq-gemm-g128", version="gemm", group_size=128)

    def quantize_with_defaults() -> None:
        # AutoAWQ's own defaults (n_parallel_calib_samples=None: all calibration blocks in one forward).
        from awq import AutoAWQForCausalLM
        from transformers import AutoTokenizer

        from tests import helpers as checkpoints

        src, out = str(state["fp16"]), work / "awq-gemm-g128-defaults"
        tokenizer = AutoTokenizer.from_pretrained(src)
        model = AutoAWQForCausalLM.from_pretrained(src, device_map={"": "cpu"})
        model.quantize(
            tokenizer,
            quant_config={"zero_point": True, "q_group_size": 128, "w_bit": 4, "version": "GEMM"},
            calib_data=checkpoints.CALIBRATION_TEXTS,
            max_calib_samples=32,
            max_calib_seq_len=64,
            apply_clip=False,
        )
        model.save_quantized(str(out))
        tokenizer.save_pretrained(str(out))
        state["quant"] = out

    def load() -> None:
        from unittest import mock

        import awq.modules.linear.gemm as awq_gemm
        from awq import AutoAWQForCausalLM

        awq_gemm.TRITON_AVAILABLE = False
        with mock.patch("awq.models.base.get_best_device", return_value="cuda:0"):
            state["model"] = AutoAWQForCausalLM.from_quantized(str(state["quant"]), fuse_layers=False)

    def forward() -> None:
        import torch

        model: Any = state["model"]
        ids = torch.arange(1, 17, dtype=torch.long).unsqueeze(0)
        with torch.inference_mode():
            logits = model(ids).logits
        if not bool(torch.isfinite(logits).all()):
            raise ValueError("forward produced non-finite logits")
        state["ids"] = ids

    def generate() -> None:
        import torch

        model: Any = state["model"]
        ids: Any = state["ids"]
        with torch.inference_mode():
            out = model.generate(input_ids=ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        produced = int(out.shape[-1]) - int(ids.shape[-1])
        if produced != 4:
            raise ValueError(f"generate produced {produced} new tokens, expected 4")

    def run(name: str, step: Callable[[], None]) -> bool:
        start = time.perf_counter()
        error: str | None = None
        tb: str | None = None
        try:
            step()
        except Exception as exc:  # any failure is a result to record
            error, tb = _short_error(exc), traceback.format_exc()
        steps_out.append(
            {
                "step": name,
                "ok": error is None,
                "seconds": round(time.perf_counter() - start, 2),
                "error": error,
                "traceback": tb,
            }
        )
        return error is None

    if not (run("import awq", import_awq) and run("build tiny llama", build)):
        return
    # The tests quantize 8 calibration blocks per forward; if that fails, AutoAWQ's defaults may still work.
    quantized = run("quantize GEMM g128 + save (n_parallel_calib_samples=8)", quantize_as_tests_do) or run(
        "quantize GEMM g128 + save (AutoAWQ defaults)", quantize_with_defaults
    )
    if quantized and run("from_quantized (CPU)", load) and run("forward", forward):
        run("generate(4)", generate)


def main(argv: list[str] | None = None) -> int:
    """Run the steps and write the row as JSON.

    Args:
        argv: Command-line arguments (``--out PATH``); ``None`` reads ``sys.argv``.

    Returns:
        0 when every step passed, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON row")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(REPO_ROOT))

    steps: list[StepResult] = []
    with tempfile.TemporaryDirectory(prefix="awq-compat-") as tmp:
        _run_steps(Path(tmp), steps)
    failed = [step for step in steps if not step["ok"]]
    finished = any(step["step"] == "generate(4)" and step["ok"] for step in steps)
    result = "fail" if not finished else ("partial" if failed else "pass")
    row: Row = {
        "versions": {dist: _version(dist) for dist in DISTRIBUTIONS},
        "python": sys.version.split()[0],
        "result": result,
        "steps": steps,
        "failed_steps": [step["step"] for step in failed],
        "error": failed[0]["error"] if failed else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
    summary = {
        "transformers": row["versions"]["transformers"],
        "result": result,
        "failed_steps": row["failed_steps"],
        "error": row["error"],
    }
    print(json.dumps(summary))
    return 0 if result == "pass" else 1


if __name__ == "__main__":
    raise SystemExit(main())
