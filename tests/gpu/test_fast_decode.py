"""The default fast decode on a real GPU (``pytest -m gpu``): compiled step in a CUDA graph, greedy tokens equal to
transformers' own eager greedy decoding."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from awq_autoselect import load_quantized_auto
from awq_autoselect.decode.fast import FastGenerate
from tests.helpers import QuantizedFactory

pytestmark = pytest.mark.gpu

PROMPT = [[1, 17, 42, 99, 150, 301, 7]]


@pytest.mark.parametrize("mode", ["compile", "graph"])
def test_fast_generate_equals_eager_greedy(quantized: QuantizedFactory, mode: str) -> None:
    model: Any
    model, report = load_quantized_auto(
        quantized(version="gemm", group_size=128), device="cuda", fast_decode=None if mode == "compile" else mode
    )
    assert report.decode == mode  # compile is the default on CUDA
    hf: Any = model.model
    fast = hf.__dict__["generate"]
    assert isinstance(fast, FastGenerate)
    ids = torch.tensor(PROMPT, device="cuda")
    for batch in (ids, torch.cat([ids, ids.flip(1)])):
        got = model.generate(input_ids=batch, max_new_tokens=16, do_sample=False)
        assert fast.last_path == "fast"
        expected = fast.original(batch, max_new_tokens=16, do_sample=False)
        assert torch.equal(got, expected), (got.tolist(), expected.tolist())
    decoder = next(iter(fast._decoders.values()))
    assert decoder.graph_enabled, decoder.fallback_reason
    assert decoder.compiled is (mode == "compile")
