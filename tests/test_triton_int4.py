"""TritonInt4Linear, the gemv_triton version's layer (awq_autoselect.kernels.triton_int4).

On CPU the layer's few-row path runs the gemv kernel under Triton's interpreter and its many-row path dequantizes
in torch; a whole model from a real AutoAWQ checkpoint is converted and decodes the same greedy tokens as AutoAWQ's
own dequantized layers. The custom op is checked with torch.library.opcheck (schema, fake tensor, autograd
registration). The ``gpu`` tests load the version through load_quantized_auto on CUDA, compiled decode included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import torch

from awq_autoselect.errors import ConversionError, InvalidArgumentError, VersionUnavailableError
from awq_autoselect.kernels import int4_gemv, triton_int4
from awq_autoselect.kernels.fusion import FusedProjection, fuse_projections
from awq_autoselect.kernels.gemm import TorchGEMMLinear, swap_gemm_backend
from awq_autoselect.kernels.int4_gemv import GemvConfig
from awq_autoselect.kernels.triton_int4 import TritonInt4Linear, convert_model_to_triton_int4
from tests.helpers import QuantizedFactory, build_gemm_model, hf_greedy, random_weight


@pytest.fixture
def interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the kernels under Triton's interpreter for this test."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def reference(x: torch.Tensor, layer: TritonInt4Linear) -> torch.Tensor:
    w = layer.dequantize(torch.float64)
    out = x.double() @ w.T
    return out if layer.bias is None else out + layer.bias.double()


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize("rows", [1, 3, 4, 5, 17])
def test_forward_matches_the_reference_on_both_paths(rows: int) -> None:
    layer = TritonInt4Linear.from_unpacked(random_weight(48, 256, 64, seed=rows, bias=True), dtype=torch.float32)
    x = torch.randn((rows, 256))
    expected = reference(x, layer)
    out = layer(x)
    assert out.dtype == torch.float32
    assert (out.double() - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_few_rows_run_the_kernel_and_more_rows_dequantize(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    layer = TritonInt4Linear.from_unpacked(random_weight(16, 128, 32), dtype=torch.float32, gemv_max_rows=2)
    calls: list[int] = []
    real = int4_gemv.gemv

    def counting(x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append(int(x.shape[0]))
        return real(x, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(int4_gemv, "gemv", counting)
    layer(torch.randn((2, 128)))
    layer(torch.randn((3, 128)))
    assert calls == [2]  # three rows went to dequantize + F.linear
    monkeypatch.delenv("TRITON_INTERPRET")
    layer(torch.randn((1, 128)))  # on a CPU without the interpreter: the torch path
    assert calls == [2]


@pytest.mark.usefixtures("interpreter")
def test_half_inputs_are_computed_in_the_layer_dtype_and_returned_in_theirs() -> None:
    layer = TritonInt4Linear.from_unpacked(random_weight(16, 128, 32, seed=4), dtype=torch.float16)
    x = torch.randn((1, 128), dtype=torch.float32)
    out = layer(x)
    assert out.dtype == torch.float32
    expected = reference(x.half(), layer)
    assert (out.double() - expected).abs().max() <= 2**-9 * expected.abs().max()


@pytest.mark.usefixtures("interpreter")
def test_the_custom_op_passes_torch_opcheck() -> None:
    layer = TritonInt4Linear.from_unpacked(random_weight(16, 128, 32, seed=5), dtype=torch.float32)
    cfg = GemvConfig()
    args = (
        torch.randn((1, 128)),
        layer.qweight,
        layer.scale_zero,
        32,
        cfg.blocks,
        cfg.groups_per_step,
        cfg.num_warps,
        cfg.inner,
        cfg.num_stages,
    )
    torch.library.opcheck(triton_int4._gemv_op, args, test_utils=("test_schema", "test_faketensor"))


def test_construction_refuses_what_the_layout_or_device_cannot_hold() -> None:
    with pytest.raises(ConversionError, match="power of two"):
        TritonInt4Linear(192, 16, 48)
    with pytest.raises(ConversionError, match="multiple of it"):
        TritonInt4Linear(128, 18, 32)
    with pytest.raises(VersionUnavailableError, match="gemv_triton cannot run on meta"):
        TritonInt4Linear(128, 16, 32, device="meta")
    with pytest.raises(VersionUnavailableError, match="float16, bfloat16 or float32"):
        TritonInt4Linear(128, 16, 32, dtype=torch.float64)
    with pytest.raises(InvalidArgumentError, match="gemv_max_rows"):
        TritonInt4Linear(128, 16, 32, gemv_max_rows=-1)


def test_forward_refuses_inputs_of_the_wrong_width_and_passes_empty_ones() -> None:
    layer = TritonInt4Linear.from_unpacked(random_weight(16, 128, 32), dtype=torch.float32)
    with pytest.raises(InvalidArgumentError, match=r"inputs \[\.\.\., 128\]"):
        layer(torch.randn((1, 64)))
    assert layer(torch.randn((0, 128))).shape == (0, 16)


def test_state_dict_round_trip() -> None:
    layer = TritonInt4Linear.from_unpacked(random_weight(16, 128, 32, bias=True), dtype=torch.float32)
    other = TritonInt4Linear(128, 16, 32, bias=True, dtype=torch.float32)
    other.load_state_dict(layer.state_dict())
    x = torch.randn((5, 128))
    assert torch.equal(other(x), layer(x))


# --------------------------------------------------------------------------------------------------------------
# whole models from real AutoAWQ checkpoints


@pytest.fixture(scope="module")
def gemm_checkpoint(quantized: QuantizedFactory) -> Path:
    return quantized(version="gemm", group_size=64)


def test_converted_model_decodes_like_autoawqs_dequantized_layers(
    gemm_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = build_gemm_model(gemm_checkpoint, dtype=torch.float32)
    swap_gemm_backend(reference, TorchGEMMLinear)  # AutoAWQ's own dequantize_gemm, then a float32 matmul
    reference.requires_grad_(False)
    ids = torch.tensor([[5, 99, 300, 42, 7, 18]])
    expected_logits = reference(ids).logits
    expected = hf_greedy(reference, ids, 4)

    model = build_gemm_model(gemm_checkpoint, dtype=torch.float32)
    assert convert_model_to_triton_int4(model, dtype=torch.float32) == 14
    assert fuse_projections(model) == 4  # q/k/v and gate/up in both layers
    assert isinstance(model.get_submodule("model.layers.0.self_attn.k_proj"), FusedProjection)
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the one-row decode steps run the kernel
    for layer in model.modules():
        if isinstance(layer, TritonInt4Linear):
            layer.config = GemvConfig(blocks=8, groups_per_step=4)  # few programs: the interpreter runs each in turn
    with torch.no_grad():
        logits = model(ids).logits
    # AutoAWQ's dequantize_gemm rounds each weight to fp16 (its scales' dtype); the gemv path does not round
    assert (logits - expected_logits).abs().max() <= 2e-3 * expected_logits.abs().max()
    assert torch.equal(hf_greedy(model, ids, 4), expected)


def test_convert_model_checks_every_layer_before_changing_anything(gemm_checkpoint: Path) -> None:
    from awq.modules.linear.gemm import WQLinear_GEMM

    model = build_gemm_model(gemm_checkpoint)
    with pytest.raises(VersionUnavailableError):
        convert_model_to_triton_int4(model, dtype=torch.float64)
    assert sum(isinstance(m, WQLinear_GEMM) for m in model.modules()) == 14


# --------------------------------------------------------------------------------------------------------------
# on a GPU


@pytest.mark.gpu
def test_gpu_load_quantized_auto_with_gemv_triton(gemm_checkpoint: Path) -> None:
    from awq_autoselect import load_quantized_auto

    model, report = load_quantized_auto(gemm_checkpoint, "gemv_triton", device="cuda", fallback=False, trials=False)
    assert report.kernel is not None
    assert report.kernel.value == "gemv_triton"
    assert report.probe is not None
    assert report.probe.ok
    assert any("gemv launch configurations" in c for c in report.conversions)
    reference = build_gemm_model(gemm_checkpoint, device="cuda", dtype=torch.float16)
    swap_gemm_backend(reference, TorchGEMMLinear)
    ids = torch.tensor([[5, 99, 300, 42, 7, 18]], device="cuda")
    tokens = cast(Any, model).generate(input_ids=ids, max_new_tokens=8, do_sample=False)  # compiled and captured
    assert tokens.shape == (1, 14)
    assert torch.equal(tokens[:, :7], hf_greedy(reference, ids, 1))
