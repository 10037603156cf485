"""Mixture-of-experts AWQ checkpoints in the published per-expert layout: select, load, generate (CPU).

Mixtral, Qwen3-MoE and DeepSeek-V2, packed by AutoAWQ's own packers under the published tensor names
(tests/moe.py), against a float32 transformers model holding the same dequantized weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from awq_autoselect import Kernel, load_quantized_auto, select_awq_version
from awq_autoselect._awq import hf_model_of
from awq_autoselect.checkpoint import read_checkpoint
from awq_autoselect.conversion import convert_checkpoint
from awq_autoselect.kernels.experts import PerExpertMLPs
from tests.helpers import run_cli
from tests.moe import MOE_CONFIGS, build_moe_checkpoint

IDS = torch.tensor([[1, 17, 42, 99, 150, 301, 7, 255, 12, 64]])
ARCHITECTURES = sorted(MOE_CONFIGS)


@pytest.fixture(scope="module")
def moe(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Path]]:
    built: dict[str, tuple[Path, Path]] = {}

    def make(model_type: str) -> tuple[Path, Path]:
        if model_type not in built:
            built[model_type] = build_moe_checkpoint(tmp_path_factory.mktemp(f"moe-{model_type}"), model_type)
        return built[model_type]

    return make


@pytest.fixture(scope="module")
def references(moe: Callable[[str], tuple[Path, Path]]) -> Callable[[str], tuple[torch.Tensor, torch.Tensor]]:
    """Per architecture: the float32 reference's logits for IDS and its 8 greedy tokens."""
    from transformers import AutoModelForCausalLM

    cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(model_type: str) -> tuple[torch.Tensor, torch.Tensor]:
        if model_type not in cache:
            model: Any = AutoModelForCausalLM.from_pretrained(str(moe(model_type)[1]), dtype=torch.float32)
            with torch.no_grad():
                logits = model(IDS).logits.float()
            cache[model_type] = (logits, model.generate(input_ids=IDS, max_new_tokens=8, do_sample=False))
        return cache[model_type]

    return get


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def test_the_checkpoints_use_the_published_names(moe: Callable[[str], tuple[Path, Path]]) -> None:
    mixtral = read_checkpoint(moe("mixtral")[0])
    assert "model.layers.0.block_sparse_moe.experts.3.w1.qweight" in mixtral.tensors
    assert "model.layers.0.block_sparse_moe.gate.weight" in mixtral.tensors
    qwen = read_checkpoint(moe("qwen3_moe")[0])
    assert "model.layers.1.mlp.experts.0.gate_proj.qweight" in qwen.tensors
    deepseek = read_checkpoint(moe("deepseek_v2")[0])
    assert "model.layers.1.mlp.experts.2.down_proj.qweight" in deepseek.tensors
    assert "model.layers.1.mlp.shared_experts.up_proj.qweight" in deepseek.tensors
    assert "model.layers.0.mlp.gate_proj.qweight" in deepseek.tensors  # first_k_dense_replace: a dense layer


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_moe_loads_exactly_in_float32_and_generates_the_reference_tokens(
    moe: Callable[[str], tuple[Path, Path]],
    references: Callable[[str], tuple[torch.Tensor, torch.Tensor]],
    unchanged: Callable[[Path], None],
    model_type: str,
) -> None:
    path = moe(model_type)[0]
    unchanged(path)
    selection = select_awq_version(path, device="cpu")
    assert selection.kernel in (Kernel.TORCH_INT4, Kernel.GEMM_TORCH)
    ref_logits, ref_tokens = references(model_type)
    model: Any
    model, report = load_quantized_auto(path, device="cpu", torch_dtype=torch.float32)
    # auto measures both on this machine and takes the faster: tiny experts can go either way on a busy CPU
    assert report.kernel in (Kernel.TORCH_INT4, Kernel.GEMM_TORCH)
    assert report.probe is not None
    assert report.probe.ok
    inner = hf_model_of(model)
    experts = [m for m in inner.modules() if isinstance(m, PerExpertMLPs)]
    if experts:  # transformers 5 fuses experts; the loader gives them one module each, as the checkpoint has
        assert any("fused expert blocks given one module per expert" in c for c in report.conversions)
    with torch.no_grad():
        logits = inner(IDS).logits.float()
    assert _relative(logits, ref_logits) < 0.01
    assert torch.equal(model.generate(input_ids=IDS, max_new_tokens=8, do_sample=False), ref_tokens)


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_moe_default_load_is_close_to_the_reference(
    moe: Callable[[str], tuple[Path, Path]],
    references: Callable[[str], tuple[torch.Tensor, torch.Tensor]],
    model_type: str,
) -> None:
    ref_logits, _ = references(model_type)
    for version in ("auto", "gemm_torch"):
        model: Any
        model, report = load_quantized_auto(moe(model_type)[0], version=version, device="cpu")
        assert report.probe is not None
        assert report.probe.ok
        with torch.no_grad():
            logits = hf_model_of(model)(IDS).logits.float()
        # bfloat16 activations (torch_int4's CPU default) cost about 1 %; gemm_torch runs in float32.
        assert _relative(logits, ref_logits) < (0.02 if report.dtype == "bfloat16" else 0.01), report.kernel
        assert model.generate(input_ids=IDS, max_new_tokens=4).shape == (1, IDS.shape[1] + 4)


def test_moe_converts_to_gemv_and_back_bit_exactly(moe: Callable[[str], tuple[Path, Path]], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    path = moe("mixtral")[0]
    gemv = convert_checkpoint(path, tmp_path / "gemv", "gemv")
    back = convert_checkpoint(gemv, tmp_path / "back", "gemm")
    original, again = load_file(str(path / "model.safetensors")), load_file(str(back / "model.safetensors"))
    assert original.keys() == again.keys()
    assert all(torch.equal(original[name], again[name]) for name in original)
    _, report = load_quantized_auto(gemv, device="cpu", probe=True)
    assert report.probe is not None
    assert report.probe.ok


def test_moe_through_the_cli(moe: Callable[[str], tuple[Path, Path]]) -> None:
    path = moe("qwen3_moe")[0]
    code, out, err = run_cli("load", str(path), "--device", "cpu", "--generate", "hello", "--max-new-tokens", "3")
    assert code == 0, err
    assert "fused expert blocks given one module per expert" in out
