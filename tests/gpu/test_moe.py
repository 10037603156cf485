"""MoE checkpoints (published per-expert layout) on a real GPU (``pytest -m gpu``): load, probe, and the default
fast decode (experts run densely inside the compiled, graph-captured step) against the eager, routed path."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from awq_autoselect import FallbackWarning, load_quantized_auto
from awq_autoselect._awq import hf_model_of
from awq_autoselect.catalogue import CATALOGUE
from awq_autoselect.decode.fast import FastGenerate
from tests.moe import build_moe_checkpoint

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize(
    ("model_type", "mode"), [("mixtral", "compile"), ("qwen3_moe", "compile"), ("deepseek_v2", "graph")]
)
def test_moe_fast_decode_equals_the_routed_eager_decode(tmp_path: Path, model_type: str, mode: str) -> None:
    from transformers import AutoModelForCausalLM

    awq, reference = build_moe_checkpoint(tmp_path, model_type)
    model: Any
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FallbackWarning)
        model, report = load_quantized_auto(awq, device="cuda", fast_decode=mode)
    assert report.probe is not None
    assert report.probe.ok, report.explain()
    assert report.kernel is not None
    # Where auto measured one of AutoAWQ's extensions fastest, "compile" decodes from a graph instead, and says so.
    expected = "graph" if mode == "compile" and not CATALOGUE[report.kernel].traceable else mode
    said = [str(w.message) for w in caught if issubclass(w.category, FallbackWarning)]
    assert len(said) == (0 if expected == mode else 1), said
    assert all("cannot trace" in message for message in said), said
    assert report.decode == expected
    ids = torch.tensor([[1, 17, 42, 99, 150, 301, 7]], device="cuda")
    fast = hf_model_of(model).__dict__["generate"]
    assert isinstance(fast, FastGenerate)
    got = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False)
    assert fast.last_path == "fast"
    decoder = next(iter(fast._decoders.values()))
    assert decoder.graph_enabled, decoder.fallback_reason
    routed = fast.original(ids, max_new_tokens=8, do_sample=False)
    assert torch.equal(got, routed), (got.tolist(), routed.tolist())
    dense: Any = AutoModelForCausalLM.from_pretrained(str(reference), dtype=torch.float32)
    dense = dense.to("cuda")
    with torch.no_grad():
        ref = dense(ids).logits.float()
        logits = hf_model_of(model)(ids).logits.float()
    assert float(torch.linalg.vector_norm(logits - ref) / torch.linalg.vector_norm(ref)) < 0.03
