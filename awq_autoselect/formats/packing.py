"""AutoAWQ's packed 4-bit layouts in torch: unpack, pack, exact conversions, dequantization.

AutoAWQ 0.2.9 ignores ``from_quantized(version=...)``: the packed layout a checkpoint was saved in decides which
kernel runs. To run another kernel, the loader converts the packed tensors in memory. This module is that
tensor-level layer: :func:`unpack` turns one layer's packed tensors into a layout-free :class:`UnpackedWeight`
(integer weights, integer zero points, fp16 scales), :func:`pack` writes one back in any layout, and
:func:`convert` does both. Every layout is reproduced bit for bit as AutoAWQ's own ``from_linear`` writes it;
docs/formats.md describes each layout and the exactness guarantees. The shapes, paddings and nibble orders
followed here are :mod:`.geometry`'s; :func:`split_nibbles`, :func:`join_nibbles` and :func:`from_awq_order`
are the one place words become 4-bit values and back (synthetic checkpoints and the int4 kernels use them).

Invariants: importing this module imports neither torch nor awq (torch is imported inside functions, awq never);
conversions are vectorized torch operations that run on whatever device the tensors are on, and never change
the quantized integers or the scales.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from awq_autoselect.catalogue import Layout
from awq_autoselect.errors import ConversionError

from .geometry import (
    MAX_Q,
    NIBBLES_PER_WORD,
    SYMMETRIC_ZERO,
    LayerGeometry,
    layer_geometry,
    parse_layout,
    require_little_endian,
    tensor_shapes,
    zeros_width,
)

if TYPE_CHECKING:
    from typing import TypeAlias

    import torch

    _Parts: TypeAlias = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]  # intweight, zeros, scales

__all__ = [
    "GEMV_FAST_ZERO_TOLERANCE",
    "UnpackedWeight",
    "convert",
    "dequantize",
    "from_awq_order",
    "join_nibbles",
    "pack",
    "packed_shapes",
    "split_nibbles",
    "unpack",
    "zeros_width",
]


def __dir__() -> list[str]:
    return __all__


logger = logging.getLogger(__name__)

# GEMV_FAST stores -(s * z) in fp16 instead of z. AutoAWQ's own rounding moves -qzeros / s at most 15 * 2**-11
# (0.0074) away from the integer z; anything further than this is not an integer zero point (docs/formats.md).
GEMV_FAST_ZERO_TOLERANCE: float = 1 / 16

# WQLinear_Marlin.post_init() adds a non-persistent scratch buffer; it is not weight data, so it is ignored.
_IGNORED = {Layout.MARLIN: frozenset({"workspace"})}


# --------------------------------------------------------------------------------------------------------------
# the canonical form


@dataclass(frozen=True, eq=False)
class UnpackedWeight:
    """One quantized linear layer in a layout-free form: ``weight = (intweight - zero) * scale``.

    Attributes:
        intweight: uint8 ``[out_features, in_features]``, values 0..15, contiguous.
        zeros: uint8 ``[out_features, n_groups]``, values 0..15; ``None`` means symmetric (Marlin): every zero
            point is 8.
        scales: float16 ``[out_features, n_groups]``.
        group_size: inputs per group, never -1 (a per-channel layer has ``group_size == in_features``).
        bias: the layer's bias ``[out_features]`` as stored, or ``None``.

    Raises:
        ConversionError: the tensors' dtypes, shapes or devices do not fit together.
    """

    intweight: torch.Tensor
    zeros: torch.Tensor | None
    scales: torch.Tensor
    group_size: int
    bias: torch.Tensor | None = None

    def __post_init__(self) -> None:
        import torch

        q = self.intweight
        _expect("intweight", q, torch.uint8, None, ndim=2)
        out_features, in_features = q.shape
        if self.group_size <= 0 or in_features % self.group_size:
            raise ConversionError(
                f"UnpackedWeight: group_size {self.group_size} must be positive and divide in_features "
                f"{in_features} (a per-channel layer uses group_size == in_features, not -1)"
            )
        groups = in_features // self.group_size
        _expect("scales", self.scales, torch.float16, (out_features, groups))
        if self.zeros is not None:
            _expect("zeros", self.zeros, torch.uint8, (out_features, groups))
        if self.bias is not None:
            _expect_bias(self.bias, out_features)
        devices = {t.device for t in (q, self.zeros, self.scales, self.bias) if t is not None}
        if len(devices) > 1:
            found = ", ".join(sorted(str(d) for d in devices))
            raise ConversionError(f"UnpackedWeight: tensors are on different devices ({found}); move them to one")

    @property
    def out_features(self) -> int:
        """Rows of the weight matrix (the layer's outputs)."""
        return int(self.intweight.shape[0])

    @property
    def in_features(self) -> int:
        """Columns of the weight matrix (the layer's inputs)."""
        return int(self.intweight.shape[1])

    @property
    def n_groups(self) -> int:
        """Quantization groups along the inputs (1 for a per-channel layer)."""
        return self.in_features // self.group_size

    @property
    def device(self) -> torch.device:
        """The device every tensor of this weight is on."""
        return self.intweight.device

    def is_symmetric(self) -> bool:
        """Whether every zero point is 8, i.e. the weight can be packed for Marlin (reads every zero)."""
        return self.zeros is None or bool((self.zeros == SYMMETRIC_ZERO).all())


# --------------------------------------------------------------------------------------------------------------
# shapes


def _shapes(geo: LayerGeometry) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    import torch

    return {name: (shape, getattr(torch, dtype)) for name, (shape, dtype) in tensor_shapes(geo).items()}


def packed_shapes(
    layout: Layout | str, *, in_features: int, out_features: int, group_size: int, bias: bool = False
) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The tensors a module of ``layout`` holds for one layer: name -> (shape, dtype).

    The same names, shapes and dtypes as AutoAWQ 0.2.9's ``WQLinear_*`` buffers (Marlin's non-persistent
    ``workspace`` excluded). ``group_size`` may be -1 (per-channel).

    Raises:
        UnknownVersionError: ``layout`` is not an AutoAWQ layout name.
        ConversionError: the layout cannot hold a layer of this shape and group size (the message says why).
    """
    import torch

    shapes = _shapes(layer_geometry(layout, in_features, out_features, group_size))
    if bias:
        shapes["bias"] = ((out_features,), torch.float16)
    return shapes


# --------------------------------------------------------------------------------------------------------------
# validation


def _describe(tensor: torch.Tensor) -> str:
    return f"{str(tensor.dtype).removeprefix('torch.')}{list(tensor.shape)}"


def _expect(
    name: str,
    tensor: object,
    dtype: torch.dtype,
    shape: tuple[int, ...] | None,
    *,
    ndim: int | None = None,
    where: str = "UnpackedWeight",
) -> None:
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise ConversionError(f"{where}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    wanted = f"{str(dtype).removeprefix('torch.')}{list(shape) if shape is not None else f'[{ndim}-D]'}"
    if (
        tensor.dtype != dtype
        or (shape is not None and tuple(tensor.shape) != shape)
        or (ndim is not None and tensor.dim() != ndim)
    ):
        raise ConversionError(f"{where}: {name} should be {wanted}, found {_describe(tensor)}")


def _expect_bias(bias: object, out_features: int, where: str = "UnpackedWeight") -> None:
    import torch

    if not isinstance(bias, torch.Tensor):
        raise ConversionError(f"{where}: bias must be a torch.Tensor, got {type(bias).__name__}")
    if tuple(bias.shape) != (out_features,) or not bias.dtype.is_floating_point:
        raise ConversionError(f"{where}: bias should be a float [{out_features}] vector, found {_describe(bias)}")


def _checked(geo: LayerGeometry, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The layer's tensors by name, after checking names, dtypes, shapes and devices against ``geo``."""
    where = f"{geo.layout.value.upper()} layer [{geo.out_features}x{geo.in_features}, group {geo.group_size}]"
    shapes = _shapes(geo)
    required = tuple(shapes)
    ignored = _IGNORED.get(geo.layout, frozenset())
    unknown = sorted(set(tensors) - {*required, "bias", *ignored})
    if unknown:
        hint = (
            ": Marlin weights are symmetric and have no zero points; if this layer has qzeros it is in another "
            "layout (GEMM, GEMV or GEMV_FAST)"
            if geo.layout is Layout.MARLIN and "qzeros" in unknown
            else ""
        )
        raise ConversionError(
            f"{where}: unexpected tensor(s) {', '.join(unknown)} (expected {', '.join(required)} and optional "
            f"bias){hint}"
        )
    missing = [name for name in required if name not in tensors]
    if missing:
        raise ConversionError(
            f"{where}: missing tensor(s) {', '.join(missing)} (expected {', '.join(required)} and optional bias)"
        )
    out = {name: tensors[name] for name in (*required, "bias") if name in tensors}
    for name, (shape, dtype) in shapes.items():
        _expect(name, out[name], dtype, shape, where=where)
    if "bias" in out:
        _expect_bias(out["bias"], geo.out_features, where)
    devices = {t.device for t in out.values()}
    if len(devices) > 1:
        found = ", ".join(f"{name} on {t.device}" for name, t in out.items())
        raise ConversionError(f"{where}: tensors are on different devices ({found}); move them to one device")
    return out


def _check_values(weight: UnpackedWeight, layout: Layout) -> None:
    """Refuse 4-bit values out of range, and asymmetric weights for Marlin."""
    if int(weight.intweight.max()) > MAX_Q:
        raise ConversionError(
            f"{layout.value.upper()}: intweight holds values above {MAX_Q}: not 4-bit weights; nothing packed"
        )
    if weight.zeros is not None and int(weight.zeros.max()) > MAX_Q:
        raise ConversionError(
            f"{layout.value.upper()}: zeros holds values above {MAX_Q}: not 4-bit zero points; nothing packed"
        )
    if layout is Layout.MARLIN and not weight.is_symmetric():
        assert weight.zeros is not None  # is_symmetric() is True for None
        other = weight.zeros[weight.zeros != SYMMETRIC_ZERO]
        found = ", ".join(str(v) for v in sorted(set(other[:4096].tolist()))[:6])
        raise ConversionError(
            "MARLIN cannot represent these weights: Marlin has no zero points (it always subtracts 8), but "
            f"{other.numel()} of this layer's {weight.zeros.numel()} zero points are not 8 (e.g. {found}). An "
            "asymmetric AWQ checkpoint "
            "(zero_point=True) cannot be converted to Marlin exactly: use GEMM, GEMV or GEMV_FAST, or quantize "
            "with zero_point=False for Marlin"
        )


# --------------------------------------------------------------------------------------------------------------
# nibbles <-> words


def split_nibbles(words: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., M * 2 * itemsize]``: the 4-bit fields of each word of ``words`` (any integer dtype), least
    significant first.

    Raises:
        ConversionError: a big-endian host (the words are read through a byte view).
    """
    import torch

    require_little_endian("packed AWQ weights")
    raw = words.contiguous().view(torch.uint8)
    return torch.stack((raw & 0xF, raw >> 4), dim=-1).flatten(-2)


def join_nibbles(nibbles: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of :func:`split_nibbles`: uint8 values 0..15 ``[..., n]`` -> ``dtype`` words, least significant
    first (``n`` a multiple of twice the word's bytes).

    Raises:
        ConversionError: a big-endian host (the words are assembled through a byte view).
    """
    require_little_endian("packed AWQ weights")
    packed = nibbles[..., 1::2] << 4
    packed |= nibbles[..., 0::2]
    return packed.contiguous().view(dtype)


@functools.cache
def _perms(device: torch.device) -> dict[str, torch.Tensor]:
    """Index permutations (position in the packed order -> natural index), built once per device."""
    import torch

    # GEMV_FAST, per 32 inputs: AutoAWQ's [0, 1, 8, 9, 16, 17, 24, 25, ...] followed by [0, 2, 4, 6, 1, 3, 5, 7]
    # within each 8 compose to position p holding input 8 * (p % 4) + p // 4.
    gemv_fast = torch.arange(32).view(4, 8).t().reshape(32)
    # Marlin (AutoAWQ's _perm), per 1024 values = 4 tiles of 16x16: 32 threads x 4 tiles x 2 blocks x 4 rows,
    # then the same 8-value interleave.
    i = torch.arange(32).view(32, 1, 1, 1)
    j = torch.arange(4).view(1, 4, 1, 1)
    block = torch.arange(2).view(1, 1, 2, 1)
    t = (i % 4).view(32, 1, 1, 1)
    row = torch.stack((2 * t, 2 * t + 1, 2 * t + 8, 2 * t + 9), dim=-1).view(32, 1, 1, 4)
    marlin = (16 * row + i // 4 + 8 * block + 256 * j).reshape(-1, 8)[:, [0, 2, 4, 6, 1, 3, 5, 7]].reshape(-1)
    marlin_scales = torch.arange(64).view(8, 8).t().reshape(64)
    marlin_scales_single = (2 * torch.arange(4).view(4, 1) + torch.tensor([0, 1, 8, 9, 16, 17, 24, 25])).reshape(32)
    forward = {
        "gemv_fast": gemv_fast,
        "marlin": marlin,
        "marlin_scales": marlin_scales,
        "marlin_scales_single": marlin_scales_single,
    }
    result: dict[str, torch.Tensor] = {}
    for name, perm in forward.items():
        result[name] = perm.to(device)
        result[f"{name}_inverse"] = torch.argsort(perm).to(device)
    return result


# --------------------------------------------------------------------------------------------------------------
# unpack


def unpack(
    layout: Layout | str,
    tensors: Mapping[str, torch.Tensor],
    *,
    in_features: int,
    out_features: int,
    group_size: int,
) -> UnpackedWeight:
    """Read one layer's packed tensors into the layout-free :class:`UnpackedWeight`.

    Args:
        layout: the layout the tensors are packed in (``Layout`` or its name, e.g. ``"gemv_fast"``).
        tensors: ``qweight``, ``qzeros`` (every layout but Marlin), ``scales`` and optionally ``bias``, named
            and shaped as AutoAWQ's module of that layout holds them (see :func:`packed_shapes`).
        in_features: the layer's inputs.
        out_features: the layer's outputs.
        group_size: the checkpoint's group size; -1 for per-channel.

    Returns:
        The integer weights, zero points (``None`` for Marlin) and scales. Exact for every layout: GEMV_FAST's
        fp16 ``-(s * z)`` terms give back the integer ``z`` (docs/formats.md).

    Raises:
        UnknownVersionError: ``layout`` is not an AutoAWQ layout name.
        ConversionError: a tensor is missing, unexpected, or of the wrong dtype or shape for ``layout`` (the
            message names it, with what was expected and found); the layout cannot hold this shape; or
            GEMV_FAST zero terms that are not ``-(s * z)`` for an integer ``z`` in 0..15.
    """
    geo = layer_geometry(layout, in_features, out_features, group_size)
    t = _checked(geo, tensors)
    unpackers = {
        Layout.GEMM: _unpack_gemm,
        Layout.GEMV: _unpack_gemv,
        Layout.GEMV_FAST: _unpack_gemv_fast,
        Layout.MARLIN: _unpack_marlin,
    }
    intweight, zeros, scales = unpackers[geo.layout](geo, t)
    return UnpackedWeight(intweight, zeros, scales, geo.group_size, t.get("bias"))


def from_awq_order(words: torch.Tensor) -> torch.Tensor:
    """int32 ``[R, C]`` packed in AutoAWQ's GEMM column order -> uint8 ``[8C, R]``: the 4-bit values in natural
    column order, transposed and contiguous (GEMM's ``qweight`` gives ``[out_features, in_features]``).

    Raises:
        ConversionError: a big-endian host (the words are read through a byte view).
    """
    import torch

    require_little_endian("packed AWQ weights")
    rows, cols = words.shape
    # Byte b of word c holds nibbles 2b and 2b + 1, so (AWQ_ORDER) columns 8c + 4 * (b & 1) + (b >> 1) in its low
    # half and that + 2 in its high half. The bytes are transposed first, so every later copy is a run of R bytes
    # (four times faster than gathering nibbles on a CPU).
    by_byte = words.contiguous().view(torch.uint8).view(rows, cols * 4).t().contiguous().view(cols, 2, 2, rows)
    out = torch.empty((cols, 2, 4, rows), dtype=torch.uint8, device=words.device)  # word, b & 1, column, row
    out[:, :, 0:2] = torch.bitwise_and(by_byte, 0xF).transpose(1, 2)
    out[:, :, 2:4] = torch.bitwise_right_shift(by_byte, 4).transpose(1, 2)
    return out.view(cols * NIBBLES_PER_WORD, rows)


def _to_awq_order(values: torch.Tensor) -> torch.Tensor:
    """uint8 ``[cols, rows]`` -> int32 ``[rows, cols / 8]`` in AutoAWQ's column order (inverse of the above)."""
    import torch

    cols, rows = values.shape
    # Nibble 4a + b of word c holds column 8c + 2b + a (AWQ_ORDER).
    ordered = values.view(cols // 8, 4, 2, rows).permute(3, 0, 2, 1).reshape(rows, cols)
    return join_nibbles(ordered, torch.int32)


def _unpack_gemm(geo: LayerGeometry, t: dict[str, torch.Tensor]) -> _Parts:
    intweight = from_awq_order(t["qweight"])
    zeros = from_awq_order(t["qzeros"])
    return intweight, zeros, t["scales"].t().contiguous()


def _unpack_gemv(geo: LayerGeometry, t: dict[str, torch.Tensor]) -> _Parts:
    g = geo.n_groups
    intweight = split_nibbles(t["qweight"])
    zeros = split_nibbles(t["qzeros"])[:, :g].contiguous()
    return intweight, zeros, t["scales"][:, :g].contiguous()


def _unpack_gemv_fast(geo: LayerGeometry, t: dict[str, torch.Tensor]) -> _Parts:
    n, k, g = geo.out_features, geo.in_features, geo.n_groups
    perm = _perms(t["qweight"].device)["gemv_fast_inverse"]
    # Each int16 holds 4 consecutive values of a 4-row x 64-input block read row-major; undo that, then the
    # in-row reorder of every 32 inputs.
    blocks = split_nibbles(t["qweight"]).view(n // 4, k // 64, 4, 64).transpose(1, 2)
    intweight = blocks.view(n // 4, 4, k // 64, 2, 32)[..., perm].reshape(n, k)
    scales = t["scales"][:g].t().contiguous()
    zeros = _gemv_fast_zeros(t["qzeros"][:g].t(), scales, where=f"GEMV_FAST layer [{n}x{k}]")
    return intweight, zeros, scales


def _gemv_fast_zeros(qzeros: torch.Tensor, scales: torch.Tensor, *, where: str) -> torch.Tensor:
    """The integer zero points behind GEMV_FAST's fp16 ``qzeros = -(s * z)`` ([N, G] each)."""
    import torch

    s = scales.float()
    qz = qzeros.float()
    zero_scale = s == 0
    ratio = -qz / torch.where(zero_scale, 1.0, s)
    z = ratio.round()
    bad = ~torch.isfinite(qz) | (zero_scale & (qz != 0))
    bad |= ~zero_scale & ((ratio - z).abs() > GEMV_FAST_ZERO_TOLERANCE)
    bad |= (z < 0) | (z > MAX_Q)
    if bool(bad.any()):
        row, group = (int(v) for v in bad.nonzero()[0])
        raise ConversionError(
            f"{where}: qzeros[{group}, {row}] = {float(qz[row, group])!r} with scale {float(s[row, group])!r} is "
            f"not -(scale * z) for an integer zero point z in 0..{MAX_Q}: these weights have real-valued or "
            "corrupt zero points that no other layout can represent; keep this checkpoint in GEMV_FAST"
        )
    # A zero scale makes every weight of its group 0 whatever z is, and stores -0.0: z cannot be read back.
    # 8 is as good as any, and keeps the group symmetric.
    z = torch.where(zero_scale, float(SYMMETRIC_ZERO), z)
    return z.to(torch.uint8)


def _unpack_marlin(geo: LayerGeometry, t: dict[str, torch.Tensor]) -> _Parts:
    n, k, g = geo.out_features, geo.in_features, geo.n_groups
    perms = _perms(t["qweight"].device)
    tiles = split_nibbles(t["qweight"]).view(-1, 1024)[:, perms["marlin_inverse"]]
    # tiles[kt, nt, kk, nn] holds weight[row nt*16 + nn, input kt*16 + kk].
    intweight = tiles.view(k // 16, n // 16, 16, 16).permute(1, 3, 0, 2).reshape(n, k)
    scale_perm = perms["marlin_scales_single_inverse" if geo.group_size == k else "marlin_scales_inverse"]
    scales = t["scales"].reshape(-1, scale_perm.numel())[:, scale_perm].view(g, n).t().contiguous()
    return intweight, None, scales


# --------------------------------------------------------------------------------------------------------------
# pack


def pack(layout: Layout | str, weight: UnpackedWeight) -> dict[str, torch.Tensor]:
    """Pack ``weight`` in ``layout``, bit for bit as AutoAWQ 0.2.9's ``WQLinear_*.from_linear`` would.

    Returns:
        The module's buffers by name (``qweight``, ``qzeros`` except for Marlin, ``scales``, and ``bias`` when
        the weight has one), on the weight's device. Symmetric weights (``zeros is None``) get zero points of 8
        in the layouts that store them.

    Raises:
        UnknownVersionError: ``layout`` is not an AutoAWQ layout name.
        ConversionError: the layout cannot hold a layer of this shape and group size; values outside 0..15;
            Marlin asked for weights whose zero points are not all 8; or GEMV_FAST asked for scales so large
            that ``s * z`` overflows fp16.
    """
    geo = layer_geometry(layout, weight.in_features, weight.out_features, weight.group_size)
    _check_values(weight, geo.layout)
    packers = {
        Layout.GEMM: _pack_gemm,
        Layout.GEMV: _pack_gemv,
        Layout.GEMV_FAST: _pack_gemv_fast,
        Layout.MARLIN: _pack_marlin,
    }
    out = packers[geo.layout](geo, weight)
    if weight.bias is not None:
        out["bias"] = weight.bias
    return out


def _zeros_or_eight(weight: UnpackedWeight) -> torch.Tensor:
    import torch

    if weight.zeros is not None:
        return weight.zeros
    return torch.full_like(weight.scales, SYMMETRIC_ZERO, dtype=torch.uint8)


def _padded(values: torch.Tensor, columns: int) -> torch.Tensor:
    """``values`` [R, C] with zero columns appended up to ``columns``."""
    if values.shape[1] == columns:
        return values.contiguous()
    out = values.new_zeros((values.shape[0], columns))
    out[:, : values.shape[1]] = values
    return out


def _pack_gemm(geo: LayerGeometry, weight: UnpackedWeight) -> dict[str, torch.Tensor]:
    return {
        "qweight": _to_awq_order(weight.intweight),
        "qzeros": _to_awq_order(_zeros_or_eight(weight)),
        "scales": weight.scales.t().contiguous(),
    }


def _pack_gemv(geo: LayerGeometry, weight: UnpackedWeight) -> dict[str, torch.Tensor]:
    import torch

    columns = geo.zeros_width * NIBBLES_PER_WORD
    return {
        "qweight": join_nibbles(weight.intweight, torch.int32),
        "qzeros": join_nibbles(_padded(_zeros_or_eight(weight), columns), torch.int32),
        "scales": _padded(weight.scales, columns),
    }


def _pack_gemv_fast(geo: LayerGeometry, weight: UnpackedWeight) -> dict[str, torch.Tensor]:
    import torch

    n, k = geo.out_features, geo.in_features
    perm = _perms(weight.device)["gemv_fast"]
    reordered = weight.intweight.view(n // 4, 4, k // 64, 2, 32)[..., perm]
    interleaved = reordered.transpose(1, 2).reshape(n // 4, k // 64 * 256)
    qweight = join_nibbles(interleaved, torch.int16).view(n // 4, k)
    # AutoAWQ: -(fp16 scale * float32 zero).to(fp16); the product is exact in float32, so one rounding.
    qzeros = torch.neg((weight.scales.float() * _zeros_or_eight(weight).float()).to(torch.float16))
    if not bool(torch.isfinite(qzeros).all()):
        raise ConversionError(
            f"GEMV_FAST layer [{n}x{k}]: scale * zero overflows float16 (a scale above {65504 / 15:.0f}?), so "
            "GEMV_FAST's pre-scaled zero points cannot hold these weights; use GEMM or GEMV"
        )
    rows = geo.zeros_width * NIBBLES_PER_WORD
    return {
        "qweight": qweight,
        "scales": _padded(weight.scales, rows).t().contiguous(),
        "qzeros": _padded(qzeros, rows).t().contiguous(),
    }


def _pack_marlin(geo: LayerGeometry, weight: UnpackedWeight) -> dict[str, torch.Tensor]:
    import torch

    n, k, g = geo.out_features, geo.in_features, geo.n_groups
    perms = _perms(weight.device)
    tiles = weight.intweight.view(n // 16, 16, k // 16, 16).permute(2, 0, 3, 1).reshape(-1, 1024)
    qweight = join_nibbles(tiles[:, perms["marlin"]], torch.int32).view(k // 16, 2 * n)
    scale_perm = perms["marlin_scales_single" if geo.group_size == k else "marlin_scales"]
    scales = weight.scales.t().reshape(-1, scale_perm.numel())[:, scale_perm].view(g, n)
    return {"qweight": qweight, "scales": scales}


# --------------------------------------------------------------------------------------------------------------
# convert, dequantize


def convert(
    tensors: Mapping[str, torch.Tensor],
    src: Layout | str,
    dst: Layout | str,
    *,
    in_features: int,
    out_features: int,
    group_size: int,
) -> dict[str, torch.Tensor]:
    """Repack one layer's tensors from layout ``src`` to layout ``dst`` (``unpack`` then ``pack``).

    Exact: the integer weights, zero points and scales are unchanged (docs/formats.md). When ``src == dst`` the
    tensors are checked and returned as they are, not copied.

    Raises:
        UnknownVersionError: ``src`` or ``dst`` is not an AutoAWQ layout name.
        ConversionError: the tensors do not fit ``src`` (the message names the tensor, expected and found), or
            ``dst`` cannot represent this layer (e.g. asymmetric weights or an unsupported shape for Marlin).
    """
    source, target = parse_layout(src), parse_layout(dst)
    if source is target:
        return _checked(layer_geometry(source, in_features, out_features, group_size), tensors)
    weight = unpack(source, tensors, in_features=in_features, out_features=out_features, group_size=group_size)
    out = pack(target, weight)
    logger.debug(
        "converted a %dx%d layer (group %d) from %s to %s", out_features, in_features, group_size, source, target
    )
    return out


def dequantize(weight: UnpackedWeight, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The real-valued weight ``(q - z) * s`` (``z = 8`` when symmetric), ``[out_features, in_features]``.

    Computed in float32, where it is exact (a 5-bit integer times an 11-bit fp16 mantissa), then rounded once
    to ``dtype`` (default float32). This is the reference every kernel approximates; for float16 it equals
    AutoAWQ's ``dequantize_gemm`` bit for bit (transposed).

    Raises:
        ConversionError: ``dtype`` is not a floating-point dtype.
    """
    import torch

    target = torch.float32 if dtype is None else dtype
    if not target.is_floating_point:
        raise ConversionError(f"dequantize: dtype must be a floating-point dtype, got {target}")
    n, k, g = weight.out_features, weight.in_features, weight.n_groups
    zeros = _zeros_or_eight(weight).float().unsqueeze(-1)
    grouped = weight.intweight.reshape(n, g, weight.group_size).float()
    grouped -= zeros
    grouped *= weight.scales.float().unsqueeze(-1)
    return grouped.view(n, k).to(target)
