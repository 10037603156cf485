"""awq_autoselect.formats against AutoAWQ 0.2.9 itself.

Ground truth is AutoAWQ's own code: its quantizer's ``pseudo_quantize_tensor`` makes the scales, zero points and
quantized weights of a random linear layer, its ``WQLinear_*.from_linear`` packs them, its ``dequantize_gemm``
unpacks GEMM, and its ``quantize()``/``save_quantized()`` write the checkpoints read at the end. Comparisons are
bit for bit (fp16 tensors compared as int16 so that -0.0 and +0.0 differ).
"""

from __future__ import annotations

import functools
import itertools
import subprocess
import sys
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from awq_autoselect import formats
from awq_autoselect.catalogue import Layout
from awq_autoselect.checkpoint import read_checkpoint
from awq_autoselect.errors import ConversionError, CorruptCheckpointError, UnknownVersionError
from awq_autoselect.formats import geometry, packing
from tests.helpers import QuantizedFactory

GEMM, GEMV, GEMV_FAST, MARLIN = Layout.GEMM, Layout.GEMV, Layout.GEMV_FAST, Layout.MARLIN
ASYMMETRIC = (GEMM, GEMV, GEMV_FAST)


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's raw bits, so that equality is bit equality (fp16 -0.0 != 0.0, NaN == NaN)."""
    return tensor.view(torch.int16) if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def assert_same(actual: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    assert set(actual) == set(expected)
    for name, want in expected.items():
        got = actual[name]
        assert (got.dtype, tuple(got.shape)) == (want.dtype, tuple(want.shape)), name
        assert torch.equal(bits(got), bits(want)), f"{name} differs in {int((bits(got) != bits(want)).sum())} places"


def assert_same_weight(a: formats.UnpackedWeight, b: formats.UnpackedWeight) -> None:
    assert torch.equal(a.intweight, b.intweight)
    assert (a.zeros is None) == (b.zeros is None)
    if a.zeros is not None and b.zeros is not None:
        assert torch.equal(a.zeros, b.zeros)
    assert torch.equal(bits(a.scales), bits(b.scales))
    assert a.group_size == b.group_size
    assert (a.bias is None) == (b.bias is None)
    if a.bias is not None and b.bias is not None:
        assert torch.equal(bits(a.bias), bits(b.bias))


# --------------------------------------------------------------------------------------------------------------
# AutoAWQ-made layers


@dataclass(frozen=True)
class Case:
    in_features: int
    out_features: int
    group_size: int  # -1 = per-channel
    layouts: tuple[Layout, ...]  # what this shape/group can be packed in
    bias: bool = True

    @property
    def group(self) -> int:
        return self.in_features if self.group_size == -1 else self.group_size

    @property
    def dims(self) -> dict[str, int]:
        return {"in_features": self.in_features, "out_features": self.out_features, "group_size": self.group_size}

    def __str__(self) -> str:
        return f"{self.out_features}x{self.in_features}-g{self.group_size}"


CASES = [
    Case(256, 256, 128, ASYMMETRIC),
    Case(256, 256, 64, ASYMMETRIC),
    Case(256, 256, 32, ASYMMETRIC, bias=False),
    Case(256, 256, -1, ASYMMETRIC),
    Case(512, 32, 256, ASYMMETRIC),
    # Llama-7B's down_proj width, few outputs: 86 / 172 / 344 groups, GEMV zero padding at every group size.
    Case(11008, 32, 128, ASYMMETRIC),
    Case(11008, 32, 64, ASYMMETRIC, bias=False),
    Case(11008, 32, 32, ASYMMETRIC),
    Case(11008, 32, -1, ASYMMETRIC),
    # out_features 96 is no multiple of 64; 3 and 6 groups pad GEMV's zeros to 2 and 4 words.
    Case(192, 96, 64, ASYMMETRIC),
    Case(192, 96, 32, ASYMMETRIC),
    # in_features 96 is no multiple of 64: GEMV_FAST cannot hold it.
    Case(96, 32, 32, (GEMM, GEMV)),
]
# Marlin: symmetric only; in_features % 128, out_features % 256, group 128 or per-channel (128 == in_features is
# per-channel too, and AutoAWQ then uses the per-channel scale permutation).
MARLIN_CASES = [
    Case(256, 256, 128, (*ASYMMETRIC, MARLIN)),
    Case(256, 256, -1, (*ASYMMETRIC, MARLIN)),
    Case(128, 256, 128, (*ASYMMETRIC, MARLIN)),
    Case(512, 512, -1, (*ASYMMETRIC, MARLIN), bias=False),
    Case(11008, 256, 128, (*ASYMMETRIC, MARLIN)),
]


@dataclass(frozen=True)
class Reference:
    weight: torch.Tensor  # fp16 [out, in]: AutoAWQ's pseudo-quantized weight, i.e. (q - z) * s
    buffers: dict[Layout, dict[str, torch.Tensor]]


def _quantizer(group_size: int, zero_point: bool) -> Any:
    from awq.quantize.quantizer import AwqQuantizer

    # pseudo_quantize_tensor reads only these three attributes; the rest of __init__ needs a model and data.
    quantizer = AwqQuantizer.__new__(AwqQuantizer)
    quantizer.w_bit, quantizer.group_size, quantizer.zero_point = 4, group_size, zero_point
    return quantizer


def _module_classes() -> dict[Layout, Any]:
    from awq.modules.linear.gemm import WQLinear_GEMM
    from awq.modules.linear.gemv import WQLinear_GEMV
    from awq.modules.linear.gemv_fast import WQLinear_GEMVFast
    from awq.modules.linear.marlin import WQLinear_Marlin

    return {GEMM: WQLinear_GEMM, GEMV: WQLinear_GEMV, GEMV_FAST: WQLinear_GEMVFast, MARLIN: WQLinear_Marlin}


@functools.cache
def autoawq(case: Case, symmetric: bool = False) -> Reference:
    """A random fp16 linear layer quantized and packed by AutoAWQ in every layout of ``case``.

    Mirrors AwqQuantizer._apply_quant: half(), pseudo_quantize_tensor, then from_linear (GEMM takes transposed
    scales and zeros). Symmetric weights are packed with zeros of 8 in the layouts that need zeros.
    """
    generator = torch.Generator().manual_seed(zlib.crc32(f"{case}-{symmetric}".encode()))
    linear = torch.nn.Linear(case.in_features, case.out_features, bias=case.bias).half()
    with torch.no_grad():
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.05)
        if linear.bias is not None:
            linear.bias.copy_(torch.randn(case.out_features, generator=generator))
    quantizer = _quantizer(case.group_size, zero_point=not symmetric)
    weight, scales, zeros = quantizer.pseudo_quantize_tensor(linear.weight.data)
    linear.weight.data = weight
    if zeros is None:
        zeros = torch.full_like(scales, 8)
    # AutoAWQ's from_linear indexes groups with idx // group_size, so per-channel must be passed as K.
    buffers: dict[Layout, dict[str, torch.Tensor]] = {}
    for layout, cls in _module_classes().items():
        if layout not in case.layouts:
            continue
        if layout is MARLIN:
            module = cls.from_linear(linear, 4, case.group, scales=scales, zeros=None)
        elif layout is GEMM:
            module = cls.from_linear(
                linear, 4, case.group, scales=scales.t().contiguous(), zeros=zeros.t().contiguous()
            )
        else:
            module = cls.from_linear(linear, 4, case.group, scales=scales, zeros=zeros)
        # On a CUDA machine GEMM's from_linear builds qzeros on cuda:0 (get_best_device()); keep all on the CPU.
        buffers[layout] = {name: tensor.cpu() for name, tensor in module.state_dict().items()}
    return Reference(weight=weight, buffers=buffers)


def pairs(cases: list[Case]) -> list[tuple[Case, Layout]]:
    return [(case, layout) for case in cases for layout in case.layouts]


# --------------------------------------------------------------------------------------------------------------
# round trips and conversions against AutoAWQ's own packing


@pytest.mark.parametrize(("case", "layout"), pairs(CASES), ids=str)
def test_pack_of_unpack_reproduces_autoawq_bit_for_bit(case: Case, layout: Layout) -> None:
    buffers = autoawq(case).buffers[layout]
    weight = formats.unpack(layout, buffers, **case.dims)
    assert_same(formats.pack(layout, weight), buffers)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_layout_unpacks_to_autoawqs_quantized_weight(case: Case) -> None:
    reference = autoawq(case)
    unpacked = [formats.unpack(layout, reference.buffers[layout], **case.dims) for layout in case.layouts]
    first = unpacked[0]
    assert first.intweight.dtype == torch.uint8
    assert first.zeros is not None
    assert first.intweight.shape == (case.out_features, case.in_features)
    assert first.zeros.shape == first.scales.shape == (case.out_features, case.in_features // case.group)
    assert (first.group_size, first.n_groups) == (case.group, case.in_features // case.group)
    assert int(first.intweight.max()) <= 15
    for other in unpacked[1:]:
        assert_same_weight(other, first)
    # (q - z) * s rounded once to fp16 is exactly what AutoAWQ's pseudo-quantizer left in the linear layer.
    assert torch.equal(bits(formats.dequantize(first, torch.float16)), bits(reference.weight))


@pytest.mark.parametrize(
    ("case", "src", "dst"),
    [(case, src, dst) for case in CASES for src, dst in itertools.product(case.layouts, repeat=2)],
    ids=str,
)
def test_convert_gives_autoawqs_own_packing(case: Case, src: Layout, dst: Layout) -> None:
    buffers = autoawq(case).buffers
    assert_same(formats.convert(buffers[src], src, dst, **case.dims), buffers[dst])


@pytest.mark.parametrize("case", CASES, ids=str)
def test_dequantize_matches_autoawq_dequantize_gemm(case: Case) -> None:
    from awq.utils.packing_utils import dequantize_gemm

    gemm = autoawq(case).buffers[GEMM]
    expected = dequantize_gemm(gemm["qweight"], gemm["qzeros"], gemm["scales"], 4, case.group)
    weight = formats.unpack(GEMM, gemm, **case.dims)
    assert torch.equal(bits(formats.dequantize(weight, torch.float16).t()), bits(expected))
    # float32 is exact: (q - z) * s computed in float64 has no more bits.
    assert weight.zeros is not None
    exact = (weight.intweight.double() - weight.zeros.double().repeat_interleave(case.group, 1)) * (
        weight.scales.double().repeat_interleave(case.group, 1)
    )
    default = formats.dequantize(weight)
    assert default.dtype == torch.float32
    assert torch.equal(default.double(), exact)


@pytest.mark.parametrize(("case", "layout"), pairs(MARLIN_CASES), ids=str)
def test_symmetric_round_trip_and_conversions_with_marlin(case: Case, layout: Layout) -> None:
    reference = autoawq(case, symmetric=True)
    buffers = reference.buffers
    weight = formats.unpack(layout, buffers[layout], **case.dims)
    assert_same(formats.pack(layout, weight), buffers[layout])
    marlin = formats.unpack(MARLIN, buffers[MARLIN], **case.dims)
    assert marlin.zeros is None
    assert marlin.is_symmetric()
    assert torch.equal(weight.intweight, marlin.intweight)
    assert torch.equal(bits(weight.scales), bits(marlin.scales))
    # Values, not bits: AutoAWQ's symmetric pseudo-quantizer writes round(w / s) * s, which is -0.0 for a small
    # negative w; (q - 8) * s is +0.0 there.
    assert torch.equal(formats.dequantize(weight, torch.float16), reference.weight)
    assert torch.equal(formats.dequantize(weight), formats.dequantize(marlin))
    # Both directions give exactly what AutoAWQ packs (zeros of 8 where the layout stores zeros).
    assert_same(formats.convert(buffers[layout], layout, MARLIN, **case.dims), buffers[MARLIN])
    assert_same(formats.convert(buffers[MARLIN], MARLIN, layout, **case.dims), buffers[layout])
    if layout is not MARLIN:
        assert weight.zeros is not None
        assert bool((weight.zeros == 8).all())


def test_marlin_refuses_asymmetric_weights() -> None:
    case = MARLIN_CASES[0]
    gemm = autoawq(case).buffers[GEMM]
    with pytest.raises(ConversionError, match="no zero points") as info:
        formats.convert(gemm, GEMM, MARLIN, **case.dims)
    assert "zero_point=False" in str(info.value)
    weight = formats.unpack(GEMM, gemm, **case.dims)
    assert not weight.is_symmetric()
    with pytest.raises(ConversionError, match="not 8"):
        formats.pack(MARLIN, weight)


@pytest.mark.parametrize(
    ("in_features", "out_features", "group_size", "message"),
    [
        (192, 256, 64, "in_features to be a multiple of 128"),
        (256, 128, 128, "out_features to be a multiple of 256"),
        (256, 256, 64, "group_size 128 or -1"),
        (512, 256, 256, "group_size 128 or -1"),
    ],
)
def test_marlin_refuses_shapes_its_kernel_cannot_run(
    in_features: int, out_features: int, group_size: int, message: str
) -> None:
    groups = in_features // group_size
    weight = formats.UnpackedWeight(
        intweight=torch.full((out_features, in_features), 8, dtype=torch.uint8),
        zeros=None,
        scales=torch.ones(out_features, groups, dtype=torch.float16),
        group_size=group_size,
    )
    with pytest.raises(ConversionError, match=message):
        formats.pack(MARLIN, weight)
    with pytest.raises(ConversionError, match=message):
        formats.packed_shapes(MARLIN, in_features=in_features, out_features=out_features, group_size=group_size)


# --------------------------------------------------------------------------------------------------------------
# shapes AutoAWQ's from_linear cannot pack (its loops need out_features % 32) but its modules hold


def random_weight(out_features: int, in_features: int, group: int, *, seed: int = 0) -> formats.UnpackedWeight:
    generator = torch.Generator().manual_seed(seed)
    groups = in_features // group
    return formats.UnpackedWeight(
        intweight=torch.randint(0, 16, (out_features, in_features), generator=generator, dtype=torch.uint8),
        zeros=torch.randint(0, 16, (out_features, groups), generator=generator, dtype=torch.uint8),
        scales=(torch.rand(out_features, groups, generator=generator) * 0.01 + 1e-4).half(),
        group_size=group,
        bias=torch.randn(out_features, generator=generator).half(),
    )


@pytest.mark.parametrize(
    ("in_features", "out_features", "group_size", "layouts"),
    [
        (11008, 8, 128, ASYMMETRIC),
        (11008, 8, -1, ASYMMETRIC),
        (256, 40, 64, ASYMMETRIC),
        (320, 24, 32, ASYMMETRIC),
        (40, 16, -1, (GEMM,)),  # one group of 40 inputs: GEMV's zeros width has no rule for it
        (48, 8, 16, (GEMM,)),
    ],
)
def test_layouts_hold_what_autoawqs_modules_hold(
    in_features: int, out_features: int, group_size: int, layouts: tuple[Layout, ...]
) -> None:
    from awq.utils.packing_utils import dequantize_gemm

    group = in_features if group_size == -1 else group_size
    weight = random_weight(out_features, in_features, group)
    dims = {"in_features": in_features, "out_features": out_features, "group_size": group_size}
    for layout, cls in _module_classes().items():
        if layout is MARLIN:
            continue
        if layout not in layouts:
            with pytest.raises(ConversionError, match="use the GEMM layout"):
                formats.pack(layout, weight)
            continue
        module = cls(4, group_size, in_features, out_features, True, "cpu")
        expected = {name: (tuple(t.shape), t.dtype) for name, t in module.state_dict().items()}
        assert formats.packed_shapes(layout, **dims, bias=True) == expected
        packed = formats.pack(layout, weight)
        assert {name: (tuple(t.shape), t.dtype) for name, t in packed.items()} == expected
        assert_same_weight(formats.unpack(layout, packed, **dims), weight)
    gemm = formats.pack(GEMM, weight)
    expected_weight = dequantize_gemm(gemm["qweight"], gemm["qzeros"], gemm["scales"], 4, group)
    assert torch.equal(bits(formats.dequantize(weight, torch.float16).t()), bits(expected_weight))


def test_packed_shapes_of_marlin_match_autoawqs_module() -> None:
    module = _module_classes()[MARLIN](4, 128, 512, 256, False, "cpu")
    expected = {name: (tuple(t.shape), t.dtype) for name, t in module.state_dict().items()}
    assert formats.packed_shapes(MARLIN, in_features=512, out_features=256, group_size=128) == expected
    # AutoAWQ's WQLinear_Marlin cannot even be built with group_size=-1 (it makes a [-512, 256] buffer); what
    # the Marlin kernel reads for per-channel is one row of scales, as from_linear(group_size=in_features) packs.
    shapes = formats.packed_shapes(MARLIN, in_features=512, out_features=256, group_size=-1)
    assert shapes["scales"] == ((1, 256), torch.float16)


@pytest.mark.parametrize(
    ("in_features", "group_size", "expected"),
    [(4096, 128, 4), (11008, 128, 11), (11008, 64, 22), (11008, 32, 44), (192, 64, 2), (192, 32, 4), (256, -1, 1)],
)
def test_zeros_width_is_autoawqs(in_features: int, group_size: int, expected: int) -> None:
    from awq.modules.linear.gemv import calculate_zeros_width

    group = in_features if group_size == -1 else group_size
    assert formats.zeros_width(in_features, group_size) == expected == calculate_zeros_width(in_features, group)


def test_the_nibble_order_is_autoawqs() -> None:
    from awq.utils import packing_utils

    assert list(geometry.AWQ_ORDER) == packing_utils.AWQ_ORDER
    assert list(geometry.AWQ_REVERSE_ORDER) == packing_utils.AWQ_REVERSE_ORDER


def test_words_split_into_nibbles_least_significant_first_and_join_back() -> None:
    words = torch.tensor([[0x76543210, -0x789ABCDF]], dtype=torch.int32)  # -0x789ABCDF is 0x87654321
    nibbles = packing.split_nibbles(words)
    assert nibbles.tolist() == [[0, 1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5, 6, 7, 8]]
    assert torch.equal(packing.join_nibbles(nibbles, torch.int32), words)
    halves = packing.split_nibbles(torch.tensor([0x4321], dtype=torch.int16))
    assert halves.tolist() == [1, 2, 3, 4]


def test_from_awq_order_puts_every_column_where_awq_order_says() -> None:
    gen = torch.Generator().manual_seed(3)
    words = torch.randint(-(2**31), 2**31, (5, 3), dtype=torch.int32, generator=gen)
    values = packing.from_awq_order(words)  # [24, 5]
    assert values.shape == (24, 5) and values.is_contiguous()
    for row in range(5):
        for word in range(3):
            value = int(words[row, word]) & 0xFFFFFFFF
            for nibble, column in enumerate(geometry.AWQ_ORDER):
                assert int(values[8 * word + column, row]) == (value >> (4 * nibble)) & 0xF


def test_the_qzeros_reader_counts_zero_points_as_each_layout_stores_them() -> None:
    import numpy as np

    from awq_autoselect.formats.qzeros import StoredTensor, count_zero_points

    def stored(array: Any) -> StoredTensor:
        return StoredTensor(tuple(array.shape), array.tobytes)

    gemv = stored(np.array([[0x11111110]], dtype="<u4"))  # nibbles 0, 1, 1, ...: two groups, six padding nibbles
    assert count_zero_points(GEMV, gemv, groups=2, out_features=1, where="t") == (1, 2)
    assert count_zero_points(GEMM, stored(np.zeros((1, 1), dtype="<u4")), groups=1, out_features=8, where="t") == (8, 8)
    terms = stored(np.array([[0.0], [0.0], [-3.0]], dtype="<f2"))  # -scale * zero; a zero scale holds no zero point
    scales = stored(np.array([[1.0], [0.0], [1.0]], dtype="<f2"))
    assert count_zero_points(GEMV_FAST, terms, groups=3, out_features=1, scales=scales, where="t") == (1, 3)
    assert count_zero_points(MARLIN, gemv, groups=2, out_features=1, where="t") == (0, 0)
    with pytest.raises(CorruptCheckpointError, match="t \\[1, 1\\] holds 8 zero points per output, the layer has 9"):
        count_zero_points(GEMV, gemv, groups=9, out_features=1, where="t")
    with pytest.raises(CorruptCheckpointError, match="do not fit 3 groups"):
        count_zero_points(GEMV_FAST, terms, groups=3, out_features=1, where="t")


@pytest.mark.parametrize("layout", list(Layout))
def test_the_torch_free_shapes_are_the_packed_shapes(layout: Layout) -> None:
    geo = geometry.layer_geometry(layout, 512, 256, 128)
    expected = formats.packed_shapes(layout, in_features=512, out_features=256, group_size=128)
    assert {name: (shape, getattr(torch, dtype)) for name, (shape, dtype) in geometry.tensor_shapes(geo).items()} == (
        expected
    )


# --------------------------------------------------------------------------------------------------------------
# GEMV_FAST's fp16 zero term


def all_fp16_scales(limit: float) -> torch.Tensor:
    """Every finite nonzero fp16 value with |s| <= limit, subnormals included, both signs."""
    values = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.float16)
    return values[torch.isfinite(values) & (values != 0) & (values.float().abs() <= limit)]


def test_gemv_fast_zero_points_survive_fp16_for_every_scale() -> None:
    # Exhaustive: every fp16 scale for which 15 * s is finite, with every zero point 0..15.
    scales = all_fp16_scales(65504 / 15)
    s = scales.repeat_interleave(16)
    z = torch.arange(16, dtype=torch.uint8).repeat(scales.numel())
    rows = -(-s.numel() // 16) * 8  # two groups of 32 per row, rows a multiple of 8
    pad = rows * 2 - s.numel()
    weight = formats.UnpackedWeight(
        intweight=torch.zeros(rows, 64, dtype=torch.uint8),
        zeros=torch.cat((z, torch.zeros(pad, dtype=torch.uint8))).view(rows, 2),
        scales=torch.cat((s, torch.ones(pad, dtype=torch.float16))).view(rows, 2),
        group_size=32,
    )
    packed = formats.pack(GEMV_FAST, weight)
    back = formats.unpack(GEMV_FAST, packed, in_features=64, out_features=rows, group_size=32)
    assert weight.zeros is not None
    assert_same_weight(back, weight)
    assert_same(formats.pack(GEMV_FAST, back), packed)
    # The stored term differs from the exact -s*z by fp16 rounding only: at most 2**-11 relative, so at most
    # 15 * 2**-11 = 0.0073 of a quantization step; subnormal products are exact.
    qzeros = packed["qzeros"][:2].t().double()
    exact = -(weight.scales.double() * weight.zeros.double())
    error = (qzeros - exact).abs()
    assert bool((error <= exact.abs() * 2.0**-11).all())
    steps = error / weight.scales.double().abs()
    assert 0 < float(steps.max()) <= 15 * 2.0**-11
    tiny = exact.abs() < 2.0**-14
    assert bool((error[tiny] == 0).all())


@pytest.mark.parametrize("case", [c for c in CASES if GEMV_FAST in c.layouts][:4], ids=str)
def test_gemv_fast_dequantization_differs_only_by_its_fp16_zero_term(case: Case) -> None:
    """GEMV_FAST computes q * s + qzeros; the canonical weight is (q - z) * s. Quantify the gap."""
    buffers = autoawq(case).buffers[GEMV_FAST]
    weight = formats.unpack(GEMV_FAST, buffers, **case.dims)
    assert weight.zeros is not None
    groups = weight.n_groups
    s = buffers["scales"][:groups].t().double().repeat_interleave(case.group, 1)
    qz = buffers["qzeros"][:groups].t().double().repeat_interleave(case.group, 1)
    own = weight.intweight.double() * s + qz
    exact = formats.dequantize(weight, torch.float64)
    gap = (own - exact).abs()
    z = weight.zeros.double().repeat_interleave(case.group, 1)
    assert bool((gap <= (s * z).abs() * 2.0**-11).all())
    assert float((gap / s).max()) <= 15 * 2.0**-11
    assert float(gap.max()) > 0  # the rounding is real, so the bound above is not vacuous


def gemv_fast_buffers() -> tuple[Case, dict[str, torch.Tensor]]:
    case = CASES[0]
    return case, {name: t.clone() for name, t in autoawq(case).buffers[GEMV_FAST].items()}


def test_gemv_fast_zero_scale_reads_back_as_eight() -> None:
    case, buffers = gemv_fast_buffers()
    buffers["scales"][0, :5] = 0
    buffers["qzeros"][0, :5] = -0.0  # what AutoAWQ stores: -(0 * z)
    weight = formats.unpack(GEMV_FAST, buffers, **case.dims)
    assert weight.zeros is not None
    assert weight.zeros[:5, 0].tolist() == [8] * 5
    assert bool((formats.dequantize(weight)[:5, : case.group] == 0).all())
    assert_same(formats.pack(GEMV_FAST, weight), buffers)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("fraction", r"not -\(scale \* z\) for an integer zero point"),
        ("above_15", r"not -\(scale \* z\)"),
        ("positive", r"not -\(scale \* z\)"),
        ("inf", r"not -\(scale \* z\)"),
        ("zero_scale", "with scale 0.0"),
    ],
)
def test_gemv_fast_rejects_zero_terms_that_are_not_integer_zero_points(change: str, message: str) -> None:
    case, buffers = gemv_fast_buffers()
    s, qz = buffers["scales"], buffers["qzeros"]
    if change == "fraction":
        qz[1, 3] = qz[1, 3] - 0.3 * s[1, 3]
    elif change == "above_15":
        qz[1, 3] = -16 * s[1, 3]
    elif change == "positive":
        qz[1, 3] = 2 * s[1, 3]
    elif change == "inf":
        qz[1, 3] = float("-inf")
    else:
        s[1, 3], qz[1, 3] = 0, -0.5
    with pytest.raises(ConversionError, match=message) as info:
        formats.unpack(GEMV_FAST, buffers, **case.dims)
    assert "qzeros[1, 3]" in str(info.value)


def test_gemv_fast_refuses_scales_whose_zero_term_overflows() -> None:
    weight = random_weight(8, 64, 64)
    assert weight.zeros is not None
    weight.scales[0, 0], weight.zeros[0, 0] = 6000.0, 15
    with pytest.raises(ConversionError, match="overflows float16"):
        formats.pack(GEMV_FAST, weight)
    assert formats.pack(GEMM, weight)["scales"][0, 0] == 6000.0  # other layouts store the scale as it is


# --------------------------------------------------------------------------------------------------------------
# validation


def test_same_layout_convert_checks_and_returns_the_same_tensors() -> None:
    case = CASES[0]
    buffers = autoawq(case).buffers[GEMV]
    out = formats.convert(buffers, "GEMV", Layout.GEMV, **case.dims)
    assert set(out) == set(buffers)
    assert all(out[name] is buffers[name] for name in buffers)
    with pytest.raises(ConversionError, match=r"qweight should be int32\[256, 32\], found int32\[256, 64\]"):
        formats.convert({**buffers, "qweight": buffers["qweight"].repeat(1, 2)}, GEMV, GEMV, **case.dims)


def test_marlin_ignores_its_workspace_buffer() -> None:
    case = MARLIN_CASES[0]
    buffers = {**autoawq(case, symmetric=True).buffers[MARLIN], "workspace": torch.zeros(16, dtype=torch.int32)}
    assert "workspace" not in formats.convert(buffers, MARLIN, MARLIN, **case.dims)
    assert "workspace" not in formats.convert(buffers, MARLIN, GEMM, **case.dims)


def _edit(buffers: dict[str, torch.Tensor], edit: str) -> dict[str, torch.Tensor]:
    out = dict(buffers)
    if edit == "dtype":
        out["qweight"] = out["qweight"].long()
    elif edit == "shape":
        out["scales"] = out["scales"][:, :-8]
    elif edit == "missing":
        del out["qzeros"]
    elif edit == "extra":
        out["g_idx"] = torch.zeros(3)
    elif edit == "bias":
        out["bias"] = out["bias"][:-1]
    elif edit == "device":
        out["scales"] = out["scales"].to("meta")
    return out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("dtype", r"qweight should be int32\[256, 32\], found int64\[256, 32\]"),
        ("shape", r"scales should be float16\[2, 256\], found float16\[2, 248\]"),
        ("missing", r"missing tensor\(s\) qzeros"),
        ("extra", r"unexpected tensor\(s\) g_idx"),
        ("bias", r"bias should be a float \[256\] vector, found float16\[255\]"),
        ("device", "different devices .*scales on meta"),
    ],
)
def test_tensors_that_do_not_fit_the_declared_layout_are_named(edit: str, message: str) -> None:
    case = CASES[0]
    with pytest.raises(ConversionError, match=message) as info:
        formats.unpack(GEMM, _edit(autoawq(case).buffers[GEMM], edit), **case.dims)
    assert "GEMM layer [256x256, group 128]" in str(info.value)


def test_a_gemm_checkpoint_declared_as_gemv_is_refused_before_anything_is_read() -> None:
    case = CASES[0]  # square: GEMM and GEMV qweight have the same shape, qzeros and scales tell them apart
    with pytest.raises(ConversionError, match=r"GEMV layer .* qzeros should be int32\[256, 1\], found int32\[2, 32\]"):
        formats.unpack(GEMV, autoawq(case).buffers[GEMM], **case.dims)


def test_qzeros_for_marlin_is_explained() -> None:
    case = MARLIN_CASES[0]
    with pytest.raises(ConversionError, match="Marlin weights are symmetric and have no zero points"):
        formats.unpack(MARLIN, autoawq(case).buffers[GEMM], **case.dims)


@pytest.mark.parametrize(
    ("layout", "dims", "error", "message"),
    [
        ("gemv", (96, 32, -1), ConversionError, "group_size 96 cannot be held"),
        ("gemv_fast", (96, 32, 32), ConversionError, "in_features to be a multiple of 64"),
        ("gemv", (100, 32, 4), ConversionError, "in_features to be a multiple of 8"),
        ("gemm", (256, 36, 128), ConversionError, "out_features to be a multiple of 8"),
        ("gemm", (256, 32, 96), ConversionError, "does not divide in_features 256"),
        ("gemm", (256, 32, 0), ConversionError, "does not divide"),
        ("gemm", (0, 32, 128), ConversionError, "in_features must be a positive int"),
        ("gemm", (256, 32, True), ConversionError, "group_size must be an int"),
        ("exllama", (256, 32, 128), UnknownVersionError, "unknown AWQ packed layout 'exllama'"),
    ],
)
def test_layouts_refuse_geometry_they_cannot_hold(
    layout: str, dims: tuple[int, int, int], error: type[Exception], message: str
) -> None:
    in_features, out_features, group_size = dims
    with pytest.raises(error, match=message):
        formats.packed_shapes(layout, in_features=in_features, out_features=out_features, group_size=group_size)


@pytest.mark.parametrize("name", ["GEMV_FAST", "gemv-fast", "gemvfast", " Marlin "])
def test_layout_names_are_forgiving(name: str) -> None:
    shapes = formats.packed_shapes(name, in_features=256, out_features=256, group_size=128)
    assert "qweight" in shapes


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("intweight", torch.zeros(8, 64, dtype=torch.int32), "intweight should be uint8"),
        ("zeros", torch.zeros(8, 3, dtype=torch.uint8), r"zeros should be uint8\[8, 2\], found uint8\[8, 3\]"),
        ("scales", torch.zeros(8, 2), r"scales should be float16\[8, 2\], found float32\[8, 2\]"),
        ("group_size", -1, "group_size -1 must be positive"),
        ("bias", torch.zeros(9), r"bias should be a float \[8\] vector"),
        ("bias", torch.zeros(8, dtype=torch.int32), r"bias should be a float \[8\] vector"),
        ("zeros", torch.zeros(8, 2, dtype=torch.uint8, device="meta"), "different devices"),
    ],
)
def test_unpacked_weight_checks_its_tensors(field: str, value: object, message: str) -> None:
    fields: dict[str, object] = {
        "intweight": torch.zeros(8, 64, dtype=torch.uint8),
        "zeros": torch.zeros(8, 2, dtype=torch.uint8),
        "scales": torch.ones(8, 2, dtype=torch.float16),
        "group_size": 32,
    }
    fields[field] = value
    with pytest.raises(ConversionError, match=message):
        formats.UnpackedWeight(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["intweight", "zeros"])
def test_pack_refuses_values_that_are_not_4_bit(field: str) -> None:
    weight = random_weight(8, 64, 32)
    tensor = getattr(weight, field)
    tensor[0, 0] = 16
    with pytest.raises(ConversionError, match=f"{field} holds values above 15"):
        formats.pack(GEMV, weight)


def test_dequantize_refuses_integer_dtypes() -> None:
    with pytest.raises(ConversionError, match="floating-point"):
        formats.dequantize(random_weight(8, 64, 32), torch.int32)


def test_importing_formats_imports_no_torch() -> None:
    code = (
        "import sys, awq_autoselect.formats, awq_autoselect.formats.geometry, awq_autoselect.formats.qzeros; "
        "heavy = [m for m in ('torch', 'numpy', 'awq') if m in sys.modules]; assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------------------------
# checkpoints quantized and saved by AutoAWQ


CHECKPOINTS = [
    ("gemm", 64, True),
    ("gemm", 128, True),
    ("gemv", 64, True),
    ("gemv", 128, True),
    ("gemv_fast", 128, True),
    ("marlin", 128, False),
]


def load_layers(path: Path) -> tuple[int, dict[str, tuple[formats.UnpackedWeight, dict[str, torch.Tensor]]]]:
    from safetensors.torch import load_file

    info = read_checkpoint(path)
    stored: dict[str, torch.Tensor] = {}
    for file in info.weight_files:
        stored.update(load_file(str(file)))
    layers = {}
    for layer in info.layers:
        names = [s for s in ("qweight", "qzeros", "scales", "bias") if f"{layer.prefix}.{s}" in stored]
        tensors = {s: stored[f"{layer.prefix}.{s}"] for s in names}
        dims = {
            "in_features": layer.in_features,
            "out_features": layer.out_features,
            "group_size": info.quant.group_size,
        }
        layers[layer.prefix] = (formats.unpack(info.layout, tensors, **dims), tensors)
    assert layers
    return info.quant.group_size, layers


@pytest.mark.slow
@pytest.mark.parametrize(("version", "group_size", "zero_point"), CHECKPOINTS)
def test_autoawq_checkpoints_round_trip_through_every_layout(
    quantized: QuantizedFactory, version: str, group_size: int, zero_point: bool
) -> None:
    layout = Layout(version)
    _, layers = load_layers(quantized(version=version, group_size=group_size, zero_point=zero_point))
    targets: tuple[Layout, ...] = (GEMM, GEMV, GEMV_FAST, MARLIN) if not zero_point else ASYMMETRIC
    if group_size != 128:
        targets = tuple(t for t in targets if t is not MARLIN)
    for weight, tensors in layers.values():
        assert_same(formats.pack(layout, weight), tensors)
        assert (weight.zeros is None) == (layout is MARLIN)
        dims = {"in_features": weight.in_features, "out_features": weight.out_features, "group_size": group_size}
        for target in targets:
            there = formats.convert(tensors, layout, target, **dims)
            again = formats.unpack(target, there, **dims)
            assert torch.equal(again.intweight, weight.intweight)
            assert torch.equal(bits(again.scales), bits(weight.scales))
            assert torch.equal(formats.dequantize(again), formats.dequantize(weight))
            assert_same(formats.convert(there, target, layout, **dims), tensors)
        if zero_point:
            refusal = "no zero points" if group_size == 128 else "group_size 128 or -1"
            with pytest.raises(ConversionError, match=refusal):
                formats.convert(tensors, layout, MARLIN, **dims)


@pytest.mark.slow
@pytest.mark.parametrize("group_size", [64, 128])
def test_gemm_checkpoint_converts_to_the_gemv_and_gemv_fast_checkpoints_autoawq_wrote(
    quantized: QuantizedFactory, group_size: int
) -> None:
    # AutoAWQ's search does not depend on the version (only the final packing does), and is deterministic on
    # CPU: quantizing the same model as GEMM and as GEMV gives the same integers, packed two ways.
    _, gemm = load_layers(quantized(version="gemm", group_size=group_size))
    versions = ["gemv", "gemv_fast"] if group_size == 128 else ["gemv"]
    for version in versions:
        _, other = load_layers(quantized(version=version, group_size=group_size))
        assert set(other) == set(gemm)
        for prefix, (weight, tensors) in gemm.items():
            dims = {"in_features": weight.in_features, "out_features": weight.out_features, "group_size": group_size}
            assert_same(formats.convert(tensors, GEMM, version, **dims), other[prefix][1])


@pytest.mark.slow
def test_dequantize_of_a_gemm_checkpoint_matches_dequantize_gemm(quantized: QuantizedFactory) -> None:
    from awq.utils.packing_utils import dequantize_gemm

    group_size, layers = load_layers(quantized(version="gemm", group_size=128))
    for weight, tensors in layers.values():
        expected = dequantize_gemm(tensors["qweight"], tensors["qzeros"], tensors["scales"], 4, group_size)
        assert torch.equal(bits(formats.dequantize(weight, torch.float16).t()), bits(expected))


# --------------------------------------------------------------------------------------------------------------
# GPU: the same conversions on CUDA tensors


@pytest.mark.gpu
@pytest.mark.parametrize("case", [CASES[0], CASES[5], MARLIN_CASES[4]], ids=str)
def test_conversions_on_cuda_match_cpu(case: Case) -> None:
    device = torch.device("cuda")
    symmetric = MARLIN in case.layouts
    reference = autoawq(case, symmetric=symmetric)
    for src, dst in itertools.product(case.layouts, repeat=2):
        on_gpu = {name: t.to(device) for name, t in reference.buffers[src].items()}
        out = formats.convert(on_gpu, src, dst, **case.dims)
        assert all(t.device.type == "cuda" for t in out.values())
        assert_same({name: t.cpu() for name, t in out.items()}, reference.buffers[dst])
        weight = formats.unpack(src, on_gpu, **case.dims)
        assert weight.device.type == "cuda"
        cpu_dequant = formats.dequantize(formats.unpack(src, reference.buffers[src], **case.dims))
        assert torch.equal(formats.dequantize(weight).cpu(), cpu_dequant)
