"""TorchInt4Linear and convert_model_to_torch_int4 on CPU: PyTorch's real int4 ops, real AutoAWQ checkpoints.

The CPU path runs ``aten._weight_int4pack_mm_for_cpu``; the tile layout (the module's state, and the CUDA
kernel's input) is checked here against an independent element-by-element packer written from the layout's
description, and on the GPU (tests/test_torch_int4_gpu.py) against aten's own CUDA packer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from awq_autoselect import formats
from awq_autoselect.errors import ConversionError, InvalidArgumentError, VersionUnavailableError
from awq_autoselect.kernels.gemm import TorchGEMMLinear, swap_gemm_backend
from awq_autoselect.kernels.torch_int4 import (
    BF16_UNIT_ROUNDOFF,
    DENSE_THRESHOLD,
    TorchInt4Linear,
    convert_model_to_torch_int4,
    inner_k_tiles_for,
    pack_tiles,
    unpack_tiles,
    weight_error_bound,
)
from tests.helpers import (
    QuantizedFactory,
    build_gemm_model,
    hf_greedy,
    identity_rows,
    ops_called,
    output_bound,
    random_weight,
)

if TYPE_CHECKING:
    pass

U = BF16_UNIT_ROUNDOFF


# --------------------------------------------------------------------------------------------------------------
# helpers shared with tests/test_torch_int4_gpu.py


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a.float() - b.float()) / torch.linalg.vector_norm(b.float()))


# --------------------------------------------------------------------------------------------------------------
# the tile layout


def reference_pack(q: torch.Tensor, inner_k_tiles: int) -> torch.Tensor:
    """tinygemm's CUDA tile layout, element by element from its description (docs/torch-int4.md)."""
    n, k = q.shape
    span = 16 * inner_k_tiles
    words = [[[[0] * (inner_k_tiles // 2) for _ in range(32)] for _ in range(k // span)] for _ in range(n // 8)]
    values = q.tolist()
    for row in range(n):
        for col in range(k):
            local = col % span
            p, r = divmod(local, 32)
            c, rest = divmod(r, 8)
            b, h = divmod(rest, 2)
            lane = 4 * (row % 8) + b
            nibble = 4 * h + c
            words[row // 8][col // span][lane][p] |= values[row][col] << (4 * nibble)
    signed = [[[[v - (1 << 32) if v >= 1 << 31 else v for v in lane] for lane in ko] for ko in nt] for nt in words]
    return torch.tensor(signed, dtype=torch.int32)


@pytest.mark.parametrize(
    ("n", "k", "tiles"), [(8, 32, 2), (16, 64, 4), (16, 128, 8), (24, 256, 8), (8, 96, 2), (32, 384, 8)]
)
def test_pack_tiles_matches_the_layout_element_by_element(n: int, k: int, tiles: int) -> None:
    q = torch.randint(0, 16, (n, k), generator=torch.Generator().manual_seed(n * k), dtype=torch.uint8)
    packed = pack_tiles(q, tiles)
    assert packed.dtype == torch.int32
    assert tuple(packed.shape) == (n // 8, k // (16 * tiles), 32, tiles // 2)
    assert torch.equal(packed, reference_pack(q, tiles))
    assert torch.equal(unpack_tiles(packed, n, k), q)


@pytest.mark.parametrize(("k", "tiles"), [(4096, 8), (11008, 8), (14336, 8), (64, 4), (96, 2), (160, 2), (32, 2)])
def test_inner_k_tiles_is_the_widest_that_divides(k: int, tiles: int) -> None:
    assert inner_k_tiles_for(k) == tiles


@pytest.mark.parametrize("k", [16, 100, 4008])
def test_inner_k_tiles_rejects_inputs_that_do_not_tile(k: int) -> None:
    with pytest.raises(ConversionError, match=f"in_features {k} is not a multiple of 32"):
        inner_k_tiles_for(k)


def test_pack_and_unpack_tiles_reject_bad_shapes() -> None:
    with pytest.raises(ConversionError, match="does not fit tinygemm tiles"):
        pack_tiles(torch.zeros((12, 128), dtype=torch.uint8), 8)
    with pytest.raises(ConversionError, match="do not hold a"):
        unpack_tiles(torch.zeros((2, 1, 32, 4), dtype=torch.int32), 16, 256)
    with pytest.raises(ConversionError, match="expected int32 tinygemm tiles"):
        unpack_tiles(torch.zeros((2, 1, 32, 4), dtype=torch.int64), 16, 128)


# --------------------------------------------------------------------------------------------------------------
# numerics: the documented error bound


@pytest.mark.parametrize(
    ("n", "k", "group_size", "symmetric"),
    [
        (64, 4096, 128, False),
        (64, 11008, 128, False),
        (32, 11008, 64, False),
        (32, 11008, 32, False),
        (48, 4096, 256, False),
        (32, 4096, 128, True),
        (16, 96, 32, False),  # innerKTiles 2
    ],
)
def test_dequantized_weights_are_within_the_documented_bound(n: int, k: int, group_size: int, symmetric: bool) -> None:
    weight = random_weight(n, k, group_size, seed=k + group_size, symmetric=symmetric)
    module = TorchInt4Linear.from_unpacked(weight)
    reference = formats.dequantize(weight)
    bound = weight_error_bound(weight.intweight, weight.zeros, weight.scales, group_size)
    assert float(bound.max() / weight.scales.float().max()) <= 31 * U * (1 + U)  # <= 0.122 s, as documented

    dense = module.dequantize()
    assert dense.dtype == torch.bfloat16
    assert bool(((dense.float() - reference).abs() <= bound).all())

    # What the kernel itself computes: unit vectors read single columns of the weight.
    columns = torch.randperm(k, generator=torch.Generator().manual_seed(1))[:96]
    read = module(identity_rows(columns, k)).float()  # [96, n] = W[:, columns].T
    assert bool(((read - reference[:, columns].t()).abs() <= bound[:, columns].t()).all())


@pytest.mark.parametrize("rows", [1, 3, 16, DENSE_THRESHOLD - 1, DENSE_THRESHOLD, 200])
def test_forward_matches_the_float32_reference_on_both_paths(rows: int) -> None:
    weight = random_weight(64, 4096, 128, seed=rows, bias=True)
    module = TorchInt4Linear.from_unpacked(weight)
    x = torch.randn((rows, 4096), generator=torch.Generator().manual_seed(rows)).to(torch.bfloat16)
    reference = x.float() @ formats.dequantize(weight).t() + weight.bias.float()  # type: ignore[union-attr]
    out = module(x)
    assert out.dtype == torch.bfloat16
    assert out.shape == (rows, 64)
    assert bool(((out.float() - reference).abs() <= output_bound(x, weight, reference) + U).all())


def test_float32_compute_on_cpu_is_exact_up_to_accumulation() -> None:
    # On CPU the module may compute in float32: scales and float zeros are then exact, so only summation remains.
    weight = random_weight(32, 1024, 64, seed=3)
    module = TorchInt4Linear.from_unpacked(weight, dtype=torch.float32)
    assert torch.equal(module.dequantize(), formats.dequantize(weight))
    x = torch.randn((4, 1024), generator=torch.Generator().manual_seed(4))
    assert torch.allclose(module(x), x @ formats.dequantize(weight).t(), rtol=1e-5, atol=1e-5)


def test_inputs_of_other_dtypes_are_cast_and_returned_in_their_dtype() -> None:
    weight = random_weight(32, 256, 64, seed=5)
    module = TorchInt4Linear.from_unpacked(weight)
    x = torch.randn((2, 3, 256), generator=torch.Generator().manual_seed(5))
    for dtype in (torch.float16, torch.float32):
        given = x.to(dtype)
        out = module(given)
        assert out.dtype == dtype
        assert out.shape == (2, 3, 32)
        assert torch.equal(out, module(given.to(torch.bfloat16)).to(dtype))


# --------------------------------------------------------------------------------------------------------------
# dispatch by rows


def test_rows_below_the_threshold_run_tinygemm_and_from_it_the_dense_path() -> None:
    weight = random_weight(32, 256, 64, seed=6)
    module = TorchInt4Linear.from_unpacked(weight, dense_threshold=8)
    few = torch.randn((1, 7, 256)).to(torch.bfloat16)  # 7 rows
    many = torch.randn((2, 4, 256)).to(torch.bfloat16)  # 8 rows
    assert "aten::_weight_int4pack_mm_for_cpu" in ops_called(lambda: module(few))
    ran = ops_called(lambda: module(many))
    assert "aten::_weight_int4pack_mm_for_cpu" not in ran
    assert "aten::linear" in ran
    # Both paths compute with the same dequantized weights; only the order of summation differs.
    rows = many.reshape(8, 256)
    reference = rows.float() @ formats.dequantize(weight).t()
    bound = output_bound(rows, weight, reference)
    assert bool(((module(rows).float() - reference).abs() <= bound).all())
    assert bool(((module(rows[:7]).float() - reference[:7]).abs() <= bound[:7]).all())


def test_dense_weight_is_cached_only_when_asked() -> None:
    weight = random_weight(32, 256, 64, seed=7)
    x = torch.randn((4, 256)).to(torch.bfloat16)
    transient = TorchInt4Linear.from_unpacked(weight, dense_threshold=2)
    cached = TorchInt4Linear.from_unpacked(weight, dense_threshold=2, cache_dense=True)
    assert torch.equal(transient(x), cached(x))
    assert transient._dense is None
    assert cached._dense is not None
    assert torch.equal(cached._dense, cached.dequantize())
    cached.to(torch.float32)  # any move or cast drops derived state
    assert cached._dense is None


def test_default_threshold_is_the_module_constant() -> None:
    module = TorchInt4Linear(256, 32, 64)
    assert module.dense_threshold == DENSE_THRESHOLD
    assert f"dense_threshold={DENSE_THRESHOLD}" in repr(module)


# --------------------------------------------------------------------------------------------------------------
# module state


def test_state_dict_round_trip_rebuilds_the_cpu_layout() -> None:
    weight = random_weight(32, 512, 128, seed=8, bias=True)
    source = TorchInt4Linear.from_unpacked(weight)
    x = torch.randn((3, 512)).to(torch.bfloat16)
    expected = source(x)
    target = TorchInt4Linear(512, 32, 128, bias=True)
    target(x)  # builds the CPU layout of its zero weights, which loading must drop
    target.load_state_dict(source.state_dict())
    assert set(source.state_dict()) == {"qtiles", "scales_and_zeros", "bias"}
    assert torch.equal(target(x), expected)


def test_casting_the_module_on_cpu_keeps_it_working() -> None:
    weight = random_weight(32, 512, 128, seed=9)
    module = TorchInt4Linear.from_unpacked(weight)
    x = torch.randn((2, 512))
    expected = module(x)
    module.half()
    assert module.scales_and_zeros.dtype == torch.float16
    out = module(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out, expected, rtol=2e-2, atol=2e-2)


def test_symmetric_weights_have_zero_float_zeros() -> None:
    weight = random_weight(16, 128, 32, seed=10, symmetric=True)
    module = TorchInt4Linear.from_unpacked(weight)
    assert bool((module.scales_and_zeros[..., 1] == 0).all())
    assert torch.equal(module.scales_and_zeros[..., 0], weight.scales.t().to(torch.bfloat16))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"in_features": 256, "out_features": 32, "group_size": 16}, ConversionError, "group sizes 32, 64, 128, 256"),
        ({"in_features": 4096, "out_features": 32, "group_size": 4096}, ConversionError, "got 4096"),
        ({"in_features": 200, "out_features": 32, "group_size": 32}, ConversionError, "does not divide"),
        ({"in_features": 96 * 3, "out_features": 24, "group_size": 32}, ConversionError, "multiple of 16"),
        (
            {"in_features": 256, "out_features": 32, "group_size": 64, "dtype": torch.float64},
            VersionUnavailableError,
            "bfloat16, float16 or float32",
        ),
        (
            {"in_features": 256, "out_features": 32, "group_size": 64, "device": "meta"},
            VersionUnavailableError,
            "no int4pack kernel",
        ),
        (
            {"in_features": 256, "out_features": 32, "group_size": 64, "dense_threshold": 0},
            InvalidArgumentError,
            r"dense_threshold=0: expected a number of rows >= 1 .* pass None for the default",
        ),
    ],
)
def test_construction_rejects_what_tinygemm_cannot_hold(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        TorchInt4Linear(**kwargs)  # type: ignore[arg-type]


def test_version_unavailable_error_names_the_version() -> None:
    with pytest.raises(VersionUnavailableError) as info:
        TorchInt4Linear(256, 32, 64, dtype=torch.float64)
    assert info.value.version == "torch_int4"
    assert info.value.reasons


def test_forward_rejects_inputs_of_the_wrong_width() -> None:
    module = TorchInt4Linear(256, 32, 64)
    with pytest.raises(InvalidArgumentError, match=r"inputs \[\.\.\., 256\], got \[4, 128\]"):
        module(torch.zeros((4, 128), dtype=torch.bfloat16))


def test_empty_inputs_give_empty_outputs() -> None:
    module = TorchInt4Linear(256, 32, 64)
    assert module(torch.zeros((0, 256), dtype=torch.bfloat16)).shape == (0, 32)


def test_load_unpacked_refuses_a_weight_of_another_shape_or_bias() -> None:
    module = TorchInt4Linear(256, 32, 64)
    with pytest.raises(ConversionError, match="does not fit this TorchInt4Linear"):
        module.load_unpacked(random_weight(32, 256, 128))
    with pytest.raises(ConversionError, match="bias mismatch"):
        module.load_unpacked(random_weight(32, 256, 64, bias=True))


# --------------------------------------------------------------------------------------------------------------
# whole models from real AutoAWQ checkpoints


@pytest.fixture(scope="module")
def gemm_checkpoint(quantized: QuantizedFactory) -> Path:
    return quantized(version="gemm", group_size=64)


def test_convert_model_replaces_every_gemm_layer_and_casts_the_rest(gemm_checkpoint: Path) -> None:
    from awq.modules.linear.gemm import WQLinear_GEMM

    model = build_gemm_model(gemm_checkpoint)
    old = model.get_submodule("model.layers.0.self_attn.q_proj")
    assert convert_model_to_torch_int4(model) == 2 * 7  # q, k, v, o, gate, up, down per layer
    assert not any(isinstance(m, WQLinear_GEMM) for m in model.modules())
    assert sum(isinstance(m, TorchInt4Linear) for m in model.modules()) == 14
    assert old._buffers["qweight"] is None  # the replaced layer's buffers are released
    floating = {p.dtype for p in model.parameters()} | {
        b.dtype for name, b in model.named_buffers() if b.is_floating_point() and "inv_freq" not in name
    }
    assert floating == {torch.bfloat16}
    inv_freq = [b for name, b in model.named_buffers() if name.endswith("inv_freq")]
    assert inv_freq
    assert all(b.dtype == torch.float32 for b in inv_freq)
    assert model.config.dtype == torch.bfloat16


def test_converted_model_matches_autoawq_dequantized_reference(gemm_checkpoint: Path) -> None:
    ids = torch.tensor([[1, 17, 42, 99, 150, 301, 7, 255, 12, 64]])
    reference_model = build_gemm_model(gemm_checkpoint, dtype=torch.float32)
    swap_gemm_backend(reference_model, TorchGEMMLinear)  # AutoAWQ's own dequantize_gemm, then a float32 matmul
    with torch.no_grad():
        reference = reference_model(ids).logits

    model = build_gemm_model(gemm_checkpoint)
    swap_gemm_backend(model, TorchGEMMLinear)  # subclasses of WQLinear_GEMM are converted too
    assert convert_model_to_torch_int4(model) == 14
    with torch.no_grad():
        out = model(ids).logits
    assert out.dtype == torch.bfloat16
    assert rel(out, reference) < 2e-2


def test_convert_model_checks_every_layer_before_changing_anything(gemm_checkpoint: Path) -> None:
    from awq.modules.linear.gemm import WQLinear_GEMM

    model = build_gemm_model(gemm_checkpoint)
    with pytest.raises(VersionUnavailableError):
        convert_model_to_torch_int4(model, dtype=torch.float64)
    assert sum(isinstance(m, WQLinear_GEMM) for m in model.modules()) == 14
    assert model.get_parameter("lm_head.weight").dtype == torch.float16


def test_convert_model_without_gemm_layers_changes_nothing(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    before = {p.dtype for p in model.parameters()}
    assert convert_model_to_torch_int4(model) == 0
    assert {p.dtype for p in model.parameters()} == before


def test_converted_model_decodes_like_generate(gemm_checkpoint: Path) -> None:
    from awq_autoselect.decode.static import generate_with_cuda_graph

    model = build_gemm_model(gemm_checkpoint)
    convert_model_to_torch_int4(model)
    ids = torch.tensor([[5, 99, 300, 42, 7, 18]])
    expected = hf_greedy(model, ids, 8)
    assert torch.equal(generate_with_cuda_graph(model, ids, 8), expected)


def test_dense_threshold_environment_override(monkeypatch: pytest.MonkeyPatch) -> None:
    from awq_autoselect.kernels import torch_int4 as _torch_int4

    monkeypatch.delenv(_torch_int4.DENSE_THRESHOLD_ENV, raising=False)
    assert _torch_int4.default_dense_threshold() == _torch_int4.DENSE_THRESHOLD
    monkeypatch.setenv(_torch_int4.DENSE_THRESHOLD_ENV, "24")
    assert _torch_int4.default_dense_threshold() == 24
    layer = _torch_int4.TorchInt4Linear(256, 64, 128)
    assert layer.dense_threshold == 24
    monkeypatch.setenv(_torch_int4.DENSE_THRESHOLD_ENV, "zero")
    with pytest.raises(ValueError, match="AWQ_AUTOSELECT_INT4_DENSE_THRESHOLD"):
        _torch_int4.default_dense_threshold()
