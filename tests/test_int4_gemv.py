"""The gemv layout and its Triton kernels (awq_autoselect.kernels.int4_gemv).

On CPU the kernels run under Triton's interpreter (``TRITON_INTERPRET=1``; the module decorates a separate
interpreted kernel). The layout is checked element by element against its definition, the gemv kernel against a
float64 reference at shapes that take every masked and unmasked path (partial blocks of rows, partial steps of
groups, both interleaves, every group size), the dequantization kernel bit for bit against the torch version, and
both against a real AutoAWQ checkpoint's layers. The ``gpu`` tests run the compiled kernels at 7B shapes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from awq_autoselect import formats
from awq_autoselect.catalogue import Layout
from awq_autoselect.errors import ConversionError, InvalidArgumentError
from awq_autoselect.kernels import int4_gemv
from awq_autoselect.kernels.int4_gemv import GemvConfig
from tests.helpers import QuantizedFactory, random_weight

CONFIGS = [
    GemvConfig(),
    GemvConfig(blocks=2, groups_per_step=4, num_warps=1, inner=1),
    GemvConfig(blocks=4, groups_per_step=2, num_warps=2, inner=4),
]
# (out_features, in_features, group_size, interleave, rows): blocks and groups that do and do not divide
SHAPES = [
    (64, 256, 128, 4, 1),
    (40, 384, 64, 8, 3),
    (16, 512, 32, 4, 2),
    (24, 1536, 128, 8, 1),
    (32, 768, 256, 4, 1),
]


@pytest.fixture
def interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the kernels under Triton's interpreter for this test."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def packed(
    n: int, k: int, group: int, interleave: int, *, seed: int = 0, symmetric: bool = False
) -> tuple[formats.UnpackedWeight, torch.Tensor, torch.Tensor]:
    weight = random_weight(n, k, group, seed=seed, symmetric=symmetric)
    qweight, scale_zero = int4_gemv.pack_gemv_layout(weight.intweight, weight.zeros, weight.scales, group, interleave)
    return weight, qweight, scale_zero


def reference(weight: formats.UnpackedWeight) -> torch.Tensor:
    """``(q - z) * s`` in float64, ``[N, K]``."""
    n, k = weight.intweight.shape
    z = torch.full_like(weight.scales, 8, dtype=torch.float64) if weight.zeros is None else weight.zeros.double()
    q = weight.intweight.double().view(n, -1, weight.group_size)
    return ((q - z.unsqueeze(-1)) * weight.scales.double().unsqueeze(-1)).view(n, k)


# --------------------------------------------------------------------------------------------------------------
# the layout


@pytest.mark.parametrize("interleave", int4_gemv.INTERLEAVES)
@pytest.mark.parametrize("group", [32, 64, 128])
def test_layout_places_every_nibble_where_the_docstring_says(interleave: int, group: int) -> None:
    n, k = 16, 4 * group
    weight, qweight, scale_zero = packed(n, k, group, interleave, seed=group + interleave)
    words = group // 8
    for row in (0, 1, interleave - 1, interleave, n - 1):
        for col in (0, 1, words - 1, words, group - 1, group, k - 1):
            g, rest = divmod(col, group)
            j, i = divmod(rest, words)
            word = int(qweight[row // interleave, g * words + i, row % interleave])
            assert (word >> (4 * j)) & 0xF == int(weight.intweight[row, col]), (row, col)
        for g in range(k // group):
            pair = int(scale_zero[row // interleave, g, row % interleave])
            assert weight.zeros is not None
            assert (pair >> 16) & 0xF == int(weight.zeros[row, g])
            bits = torch.tensor([pair & 0xFFFF], dtype=torch.int32).to(torch.int16).view(torch.float16)
            assert torch.equal(bits, weight.scales[row, g : g + 1])


@pytest.mark.parametrize("interleave", int4_gemv.INTERLEAVES)
@pytest.mark.parametrize("symmetric", [False, True])
def test_pack_and_unpack_round_trip(interleave: int, symmetric: bool) -> None:
    weight, qweight, scale_zero = packed(48, 512, 64, interleave, seed=3, symmetric=symmetric)
    q, z, s = int4_gemv.unpack_gemv_layout(qweight, scale_zero, 64)
    assert torch.equal(q, weight.intweight)
    assert torch.equal(s, weight.scales)
    assert torch.equal(z, torch.full_like(z, 8) if weight.zeros is None else weight.zeros)
    assert torch.equal(int4_gemv.dequantize_gemv_layout(qweight, scale_zero, 64, torch.float64), reference(weight))


@pytest.mark.parametrize(
    ("n", "k", "group", "interleave", "match"),
    [
        (16, 384, 48, 4, "power of two"),
        (16, 256, 16, 4, "at least 32"),
        (16, 320, 128, 4, "dividing in_features"),
        (18, 256, 64, 4, "multiple of it"),
        (16, 256, 64, 2, "interleaves 4 or 8"),
    ],
)
def test_layout_refuses_what_it_cannot_hold(n: int, k: int, group: int, interleave: int, match: str) -> None:
    q = torch.zeros((n, k), dtype=torch.uint8)
    s = torch.ones((n, max(1, k // group)), dtype=torch.float16)
    with pytest.raises(ConversionError, match=match):
        int4_gemv.pack_gemv_layout(q, None, s, group, interleave)


def test_pack_refuses_scales_that_are_not_fp16() -> None:
    q = torch.zeros((16, 256), dtype=torch.uint8)
    with pytest.raises(ConversionError, match="float16 scales"):
        int4_gemv.pack_gemv_layout(q, None, torch.ones((16, 2), dtype=torch.float32), 128)


def test_real_checkpoint_layers_repack_exactly(quantized: QuantizedFactory) -> None:
    from safetensors.torch import load_file

    checkpoint: Path = quantized(version="gemm", group_size=64)
    state = load_file(str(checkpoint / "model.safetensors"))
    prefix = "model.layers.0.mlp.down_proj"
    tensors = {name: state[f"{prefix}.{name}"] for name in ("qweight", "qzeros", "scales")}
    k, n = tensors["scales"].shape[0] * 64, tensors["scales"].shape[1]
    weight = formats.unpack(Layout.GEMM, tensors, in_features=k, out_features=n, group_size=64)
    qweight, scale_zero = int4_gemv.pack_gemv_layout(weight.intweight, weight.zeros, weight.scales, 64, 4)
    expected = formats.dequantize(weight).float()
    assert torch.equal(int4_gemv.dequantize_gemv_layout(qweight, scale_zero, 64, torch.float32), expected)


# --------------------------------------------------------------------------------------------------------------
# the kernels under Triton's interpreter


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize(
    ("n", "k", "group", "interleave", "rows", "config"),
    [(*shape, config) for shape, config in zip(SHAPES, [*CONFIGS, *CONFIGS], strict=False)]
    + [(*SHAPES[1], CONFIGS[0]), (*SHAPES[0], CONFIGS[2])],
)
def test_gemv_matches_the_float64_reference(
    n: int, k: int, group: int, interleave: int, rows: int, config: GemvConfig
) -> None:
    weight, qweight, scale_zero = packed(n, k, group, interleave, seed=n + k)
    x = torch.randn((rows, k), generator=torch.Generator().manual_seed(k))
    expected = x.double() @ reference(weight).T
    out = int4_gemv.gemv(x, qweight, scale_zero, group, config=config)
    assert out.dtype == torch.float32
    assert out.shape == (rows, n)
    # float32 sums of k products: a few ulps of the largest partial sums
    assert (out.double() - expected).abs().max() <= 1e-5 * (x.abs().double() @ reference(weight).abs().T).max()


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gemv_takes_half_inputs_and_answers_in_their_dtype(dtype: torch.dtype) -> None:
    weight, qweight, scale_zero = packed(32, 512, 128, 4, seed=9)
    x = torch.randn((2, 512)).to(dtype)
    out = int4_gemv.gemv(x, qweight, scale_zero, 128)
    expected = x.double() @ reference(weight).T
    assert out.dtype == dtype
    assert (out.double() - expected).abs().max() <= 2**-7 * expected.abs().max()  # one rounding to 8 or 11 bits


@pytest.mark.usefixtures("interpreter")
def test_gemv_writes_into_a_given_output() -> None:
    _, qweight, scale_zero = packed(16, 256, 128, 4)
    x = torch.randn((1, 256))
    out = torch.full((1, 16), float("nan"))
    assert int4_gemv.gemv(x, qweight, scale_zero, 128, out=out) is out
    assert torch.isfinite(out).all()


def test_gemv_refuses_inputs_that_do_not_fit() -> None:
    _, qweight, scale_zero = packed(16, 256, 128, 4)
    with pytest.raises(InvalidArgumentError, match="do not fit"):
        int4_gemv.gemv(torch.randn((1, 128)), qweight, scale_zero, 128)
    with pytest.raises(InvalidArgumentError, match="contiguous inputs"):
        int4_gemv.gemv(torch.randn((256, 2)).T, qweight, scale_zero, 128)


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize(("n", "k", "group", "interleave", "rows"), SHAPES)
def test_dequantize_kernel_matches_torch_bit_for_bit(n: int, k: int, group: int, interleave: int, rows: int) -> None:
    _, qweight, scale_zero = packed(n, k, group, interleave, seed=rows)
    expected = int4_gemv.dequantize_gemv_layout(qweight, scale_zero, group, torch.float16)
    assert torch.equal(int4_gemv.dequantize_triton(qweight, scale_zero, group, torch.float16), expected)


# --------------------------------------------------------------------------------------------------------------
# the compiled kernels on a GPU


@pytest.mark.gpu
@pytest.mark.parametrize(("n", "k"), [(12288, 4096), (4096, 4096), (22016, 4096), (4096, 11008)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_gemv_at_7b_shapes(n: int, k: int, dtype: torch.dtype) -> None:
    weight = random_weight(n, k, 128, seed=n, device="cuda")
    for interleave in int4_gemv.INTERLEAVES:
        qweight, scale_zero = int4_gemv.pack_gemv_layout(weight.intweight, weight.zeros, weight.scales, 128, interleave)
        dense = int4_gemv.dequantize_gemv_layout(qweight, scale_zero, 128, torch.float32)
        assert torch.equal(int4_gemv.dequantize_triton(qweight, scale_zero, 128, dtype), dense.to(dtype))
        for rows in (1, 3):
            x = torch.randn((rows, k), device="cuda").to(dtype)
            expected = x.float() @ dense.T
            for config in CONFIGS:
                out = int4_gemv.gemv(x, qweight, scale_zero, 128, config=config)
                assert (out.float() - expected).abs().max() <= 2**-7 * expected.abs().max(), (interleave, config)
