"""Every dense architecture of the README's compatibility table, quantized by AutoAWQ at test time (CPU).

Each loads through load_quantized_auto in float32, passes the probe, matches a float32 model whose weights AutoAWQ's
own ``dequantize_gemm`` produced (logits within 1 %, the same greedy tokens), and converts to GEMV and back
bit-exactly. Mixture-of-experts models are in test_moe.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from awq_autoselect import load_quantized_auto
from awq_autoselect._awq import hf_model_of
from awq_autoselect.conversion import convert_checkpoint
from tests.helpers import TINY_DENSE, QuantizedFactory, awq_dequantized_model, hf_greedy

IDS = torch.tensor([[1, 17, 42, 99, 150, 301, 7, 255, 12, 64]])


@pytest.mark.parametrize("model_type", sorted(TINY_DENSE))
def test_architecture_loads_matches_the_reference_and_converts(
    quantized: QuantizedFactory, tmp_path: Path, model_type: str
) -> None:
    from safetensors.torch import load_file

    path = quantized(version="gemm", group_size=64, model_type=model_type)
    reference = awq_dequantized_model(path)
    with torch.no_grad():
        expected = reference(IDS).logits.float()
    expected_tokens = hf_greedy(reference, IDS, 8)
    model: Any
    model, report = load_quantized_auto(path, device="cpu", torch_dtype=torch.float32)
    assert report.probe is not None
    assert report.probe.ok
    with torch.no_grad():
        logits = hf_model_of(model)(IDS).logits.float()
    assert float(torch.linalg.vector_norm(logits - expected) / torch.linalg.vector_norm(expected)) < 0.01
    assert torch.equal(model.generate(input_ids=IDS, max_new_tokens=8, do_sample=False), expected_tokens)
    back = convert_checkpoint(convert_checkpoint(path, tmp_path / "gemv", "gemv"), tmp_path / "gemm", "gemm")
    original, again = load_file(str(path / "model.safetensors")), load_file(str(back / "model.safetensors"))
    assert original.keys() == again.keys()
    assert all(torch.equal(original[name], again[name]) for name in original)
