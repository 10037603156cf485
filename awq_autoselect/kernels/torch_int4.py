"""AWQ weights repacked for PyTorch's own int4 weight-only matmul, ``aten._weight_int4pack_mm`` ("tinygemm").

Why: on a current PyTorch (CUDA 13) AutoAWQ's compiled kernels cannot import, and its Triton GEMM is slower
than fp16 at batch 1. PyTorch ships an int4 x bf16 kernel that runs at 2.3 ms/token for a 7B Llama on an H200
(research/h200-measurements.md). docs/torch-int4.md has the derivation of everything below.

The math. AWQ stores ``w = (q - z) * s`` with 4-bit ``q`` and ``z`` and an fp16 ``s`` per group of inputs.
tinygemm computes ``w = (q - 8) * scale + zero`` with ``scale`` and ``zero`` in the float domain, so
``scale = s`` and ``zero = (8 - z) * s``, both stored in bf16 (``scales_and_zeros [n_groups, N, 2]``). The
only error is bf16 rounding of ``s`` and of ``(8 - z) * s`` (and of the dequantized weight on CUDA):
``|w_int4 - w| <= 2**-8 * s * (|q - 8| + |8 - z|) * (1 + 2**-8) + 2**-8 * |w|`` per weight, at most about
``0.122 * s``. See :func:`weight_error_bound`.

Layouts. On CUDA the 4-bit weights live in tinygemm's tensor-core tile layout, int32
``[N / 8, K / (inner_k_tiles * 16), 32, inner_k_tiles / 2]``, made by ``aten._convert_weight_to_int4pack``
from uint8 ``[N, K / 2]`` (two weights per byte, the even input in the HIGH nibble). On CPU the op
``aten._weight_int4pack_mm_for_cpu`` wants ``aten._convert_weight_to_int4pack_for_cpu``'s layout, which
depends on the CPU's vector ISA; the module keeps that one beside a tile-layout copy (0.5 byte/weight each).
The tile layout is the module's state (``qtiles``), so a state dict moves between devices.

Dispatch. tinygemm is a GEMV-class kernel: it re-reads the weights for every 16 rows, so its time grows with
the rows. From ``dense_threshold`` rows on, the module dequantizes to a dense weight (per call, or cached with
``cache_dense=True``: 2 bytes/weight more memory; on CUDA one Triton kernel launched directly, its checks made
once per module, :class:`.int4_dequant.DenseBuilder`) and calls ``F.linear`` (cuBLAS). The threshold is
:data:`DENSE_THRESHOLD` (32 rows, measured on the H200 with scripts/measure_int4_threshold.py).

Private module: imported by :mod:`awq_autoselect.loading` inside functions, never by ``import awq_autoselect``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name

from awq_autoselect import settings
from awq_autoselect._packages import satisfies
from awq_autoselect.catalogue import CATALOGUE, Kernel
from awq_autoselect.errors import ConversionError, InvalidArgumentError, VersionUnavailableError
from awq_autoselect.formats.geometry import SYMMETRIC_ZERO
from awq_autoselect.formats.packing import join_nibbles, split_nibbles

from .int4_dequant import DenseBuilder, dequantize_tiles

if TYPE_CHECKING:
    from typing import Self

    from awq_autoselect.formats import UnpackedWeight

__all__ = [
    "BF16_UNIT_ROUNDOFF",
    "DENSE_THRESHOLD",
    "DENSE_THRESHOLD_ENV",
    "MIN_CAPABILITY",
    "MIN_TORCH",
    "SUPPORTED_GROUP_SIZES",
    "TorchInt4Linear",
    "convert_model_to_torch_int4",
    "default_dense_threshold",
    "inner_k_tiles_for",
    "pack_tiles",
    "unpack_tiles",
    "weight_error_bound",
]

logger = logging.getLogger(__name__)

#: Rows (``x.numel() // in_features``) from which ``forward`` leaves tinygemm for dequantize + ``F.linear``.
#: Measured on the lent H200 (torch 2.11+cu130, Triton dequantization): for every 7B layer shape the dense path
#: is at least as fast as tinygemm from 32 rows on (docs/torch-int4.md, docs/results/int4-threshold-h200.json).
DENSE_THRESHOLD = 32

#: Environment variable that overrides :data:`DENSE_THRESHOLD` for every new layer (tuning on another GPU).
DENSE_THRESHOLD_ENV = settings.INT4_DENSE_THRESHOLD


def default_dense_threshold() -> int:
    """:data:`DENSE_THRESHOLD`, or the value of ``$AWQ_AUTOSELECT_INT4_DENSE_THRESHOLD`` when set.

    Raises:
        InvalidArgumentError: (a ``ValueError``) the variable, or another ``AWQ_AUTOSELECT_*`` variable, holds a bad
            value (:mod:`awq_autoselect.settings`): never a silent default, which would be another kernel path.
    """
    value = settings.current().int4_dense_threshold
    return DENSE_THRESHOLD if value is None else value


#: Group sizes tinygemm has kernels for (CUDA and CPU alike).
SUPPORTED_GROUP_SIZES = (32, 64, 128, 256)
#: First torch with uint8 ``[N, K/2]`` input to the CUDA pack op and with the ``*_for_cpu`` ops.
MIN_TORCH = (2, 6)
#: tinygemm's CUDA kernel is built on bf16 ``mma.sync``: compute capability 8.0 or newer.
MIN_CAPABILITY = (8, 0)
#: Unit roundoff of bfloat16 (8 significant bits, round to nearest even).
BF16_UNIT_ROUNDOFF = 2.0**-8

_CPU_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


# --------------------------------------------------------------------------------------------------------------
# tinygemm's CUDA tile layout, in plain torch


def inner_k_tiles_for(in_features: int) -> int:
    """The widest ``innerKTiles`` (8, 4 or 2) whose ``16 * innerKTiles`` divides ``in_features``.

    Raises:
        ConversionError: ``in_features`` is not a multiple of 32, the least tinygemm can tile.
    """
    for tiles in (8, 4, 2):
        if in_features % (16 * tiles) == 0:
            return tiles
    raise ConversionError(
        f"in_features {in_features} is not a multiple of 32: tinygemm packs inputs in tiles of 16 * innerKTiles "
        "(innerKTiles 2, 4 or 8); this layer cannot use torch_int4, use the gemm version"
    )


# Element (n, k) of the weight sits, within tile (n // 8, k // (16 * innerKTiles)), at lane t = 4 * a + b and
# int32 p, nibble j = 4 * h + c, where n % 8 = a and k % (16 * innerKTiles) = 32 * p + 8 * c + 2 * b + h.
# That is aten's matrix_to_m16n8k16_Bint4_layout for uint8 input with the even input in the high nibble
# (docs/torch-int4.md); tests/gpu/test_torch_int4.py checks pack_tiles against aten's op bit for bit.


def pack_tiles(intweight: torch.Tensor, inner_k_tiles: int) -> torch.Tensor:
    """uint8 ``[N, K]`` (values 0..15) -> int32 ``[N/8, K/(16*inner_k_tiles), 32, inner_k_tiles/2]``.

    The same bits as ``aten._convert_weight_to_int4pack`` on CUDA, computed with torch ops on any device.

    Raises:
        ConversionError: the shape does not tile (N not a multiple of 8, K not of ``16 * inner_k_tiles``).
    """
    n, k = intweight.shape
    if n % 8 or inner_k_tiles not in (2, 4, 8) or k % (16 * inner_k_tiles):
        raise ConversionError(
            f"a [{n}, {k}] weight does not fit tinygemm tiles of 8 outputs x {16 * inner_k_tiles} inputs"
        )
    pairs = inner_k_tiles // 2
    # dims: nt, a, ko, p, bl, nib, b, h  (c = 2 * bl + nib; byte 2 * h + bl of the int32, nibble nib of it)
    grid = intweight.reshape(n // 8, 8, k // (16 * inner_k_tiles), pairs, 2, 2, 4, 2)
    grid = grid.permute(0, 2, 1, 6, 3, 7, 4, 5)  # nt, ko, a, b, p, h, bl, nib
    # (p, h, bl, nib) is the nibble's place in the lane's int32s: byte 2 * h + bl of int32 p, its nibble nib
    nibbles = grid.reshape(n // 8, k // (16 * inner_k_tiles), 32, pairs * 8)
    return join_nibbles(nibbles, torch.int32)


def unpack_tiles(tiles: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """Inverse of :func:`pack_tiles`: the uint8 ``[N, K]`` 4-bit values (0..15) of a tile-layout weight.

    Raises:
        ConversionError: ``tiles`` is not int32 of the tile shape for ``[out_features, in_features]``.
    """
    if tiles.dtype != torch.int32 or tiles.dim() != 4 or tiles.shape[2] != 32:
        raise ConversionError(
            f"expected int32 tinygemm tiles [N/8, K/(16*t), 32, t/2], got {tiles.dtype}{list(tiles.shape)}"
        )
    n_tiles, k_outer, _, pairs = tiles.shape
    if n_tiles * 8 != out_features or k_outer * pairs * 32 != in_features:
        raise ConversionError(f"tiles {list(tiles.shape)} do not hold a [{out_features}, {in_features}] weight")
    nibbles = split_nibbles(tiles).view(n_tiles, k_outer, 8, 4, pairs, 2, 2, 2)  # nt, ko, a, b, p, h, bl, nib
    return nibbles.permute(0, 2, 1, 4, 6, 7, 3, 5).reshape(out_features, in_features)


def weight_error_bound(
    intweight: torch.Tensor, zeros: torch.Tensor | None, scales: torch.Tensor, group_size: int
) -> torch.Tensor:
    """Per-weight bound on ``|w_torch_int4 - (q - z) * s|``, float32 ``[N, K]`` (docs/torch-int4.md).

    ``u * s * (|q - 8| + |8 - z|) * (1 + u) + u * |(q - z) * s|`` with ``u = 2**-8``: bf16 rounding of the
    scale and of the float zero ``(8 - z) * s``, then of the dequantized weight itself. At most ``0.122 * s``.
    """
    n, k = intweight.shape
    u = BF16_UNIT_ROUNDOFF
    q = intweight.float().view(n, -1, group_size)
    z = (torch.full_like(scales, SYMMETRIC_ZERO, dtype=torch.float32) if zeros is None else zeros.float()).unsqueeze(-1)
    s = scales.float().unsqueeze(-1)
    bound = u * (1 + u) * s * ((q - SYMMETRIC_ZERO).abs() + (SYMMETRIC_ZERO - z).abs()) + u * ((q - z) * s).abs()
    return bound.view(n, k)


# --------------------------------------------------------------------------------------------------------------
# checks


def _check_platform(device: torch.device, dtype: torch.dtype) -> None:
    """Raise when torch, the device or the dtype cannot run tinygemm."""
    reasons: list[str] = []
    spec = CATALOGUE[Kernel.TORCH_INT4]
    ops = spec.ops_for(device.type)  # the catalogue's aten ops for this device type (none for others)
    if spec.torch is not None and not satisfies(torch.__version__, spec.torch):
        reasons.append(f"needs torch >= {MIN_TORCH[0]}.{MIN_TORCH[1]}, this is torch {torch.__version__}")
    if device.type == "cuda":
        if dtype != torch.bfloat16:
            reasons.append(f"tinygemm on CUDA computes in bfloat16 only, got dtype={dtype}; pass dtype=torch.bfloat16")
        capability = torch.cuda.get_device_capability(device)
        if capability < MIN_CAPABILITY:
            reasons.append(
                f"{device} has compute capability {capability[0]}.{capability[1]}; tinygemm needs "
                f"{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]}+ (bf16 tensor cores)"
            )
    elif device.type == "cpu":
        if dtype not in _CPU_DTYPES:
            reasons.append(f"the CPU op computes in bfloat16, float16 or float32, got dtype={dtype}")
    else:
        reasons.append(f"device {device} has no int4pack kernel here; use cuda or cpu")
    missing = [op for op in ops if not hasattr(torch.ops.aten, op)]
    if missing:
        reasons.append(f"torch {torch.__version__} lacks aten.{', aten.'.join(missing)}; upgrade torch to >= 2.6")
    if reasons:
        raise VersionUnavailableError(
            f"torch_int4 cannot run on {device}: " + "; ".join(reasons), "torch_int4", tuple(reasons)
        )


def _check_shape(in_features: int, out_features: int, group_size: int, device: torch.device) -> int:
    """Return innerKTiles for this layer; raise when tinygemm cannot hold it."""
    where = f"layer [{out_features}x{in_features}, group {group_size}]"
    if group_size not in SUPPORTED_GROUP_SIZES:
        raise ConversionError(
            f"{where}: torch_int4 supports group sizes {', '.join(map(str, SUPPORTED_GROUP_SIZES))}, got "
            f"{group_size}; use the gemm version for this checkpoint"
        )
    if in_features % group_size:
        raise ConversionError(f"{where}: group_size {group_size} does not divide in_features {in_features}")
    multiple = 16 if device.type == "cpu" else 8  # aten's CPU pack asks N % 16; the CUDA tiles are 8 wide
    if out_features % multiple:
        raise ConversionError(
            f"{where}: torch_int4 on {device.type} needs out_features to be a multiple of {multiple}; "
            "use the gemm version"
        )
    return inner_k_tiles_for(in_features)


# --------------------------------------------------------------------------------------------------------------
# the module


class TorchInt4Linear(torch.nn.Module):
    """A 4-bit AWQ linear layer computed by ``aten._weight_int4pack_mm`` (CUDA, bf16) or its CPU twin.

    State (what ``state_dict`` holds, device-independent):

    - ``qtiles``: int32 tinygemm tile layout of the 4-bit weights (:func:`pack_tiles`).
    - ``scales_and_zeros``: ``[n_groups, out_features, 2]`` of ``(s, (8 - z) * s)`` in the compute dtype.
    - ``bias``: ``[out_features]`` in the compute dtype, or ``None``.

    The compute dtype is bfloat16 on CUDA (the kernel's only one); on CPU it may be bfloat16, float16 or
    float32. Inputs of another dtype are cast to it and the output cast back (two extra kernels per call: keep
    the model in the compute dtype, as :func:`convert_model_to_torch_int4` does). Moving the module to CUDA
    casts its floating state back to bfloat16.

    Args:
        in_features: inputs (K): a multiple of 32 (of 128 for the widest tiles) and of ``group_size``.
        out_features: outputs (N): a multiple of 8 (of 16 on CPU).
        group_size: 32, 64, 128 or 256.
        bias: whether the layer has a bias.
        device: where the state lives; default CPU.
        dtype: compute dtype (bfloat16 on CUDA).
        dense_threshold: rows from which ``forward`` dequantizes and calls ``F.linear`` instead of tinygemm;
            default :data:`DENSE_THRESHOLD` (measured).
        cache_dense: keep the dequantized dense weight after its first use (2 bytes/weight more memory) instead
            of dequantizing on every many-row call.

    Raises:
        ConversionError: the shape or group size cannot be held by tinygemm.
        VersionUnavailableError: torch, the device or the dtype cannot run tinygemm (too old a torch, compute
            capability below 8.0, a dtype the kernel lacks).
        InvalidArgumentError: (a ``ValueError``) ``dense_threshold`` below 1; or ``dense_threshold`` not given and
            ``$AWQ_AUTOSELECT_INT4_DENSE_THRESHOLD`` (or another ``AWQ_AUTOSELECT_*`` variable) holds a bad value.
    """

    qtiles: torch.Tensor
    scales_and_zeros: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        group_size: int,
        *,
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.bfloat16,
        dense_threshold: int | None = None,
        cache_dense: bool = False,
    ) -> None:
        super().__init__()
        dev = torch.device("cpu" if device is None else device)
        if str(dev) == "cuda":  # no index: the current device, pinned now so that checks and buffers agree
            dev = torch.device("cuda", torch.cuda.current_device())
        threshold = default_dense_threshold() if dense_threshold is None else dense_threshold
        if threshold < 1:
            raise InvalidArgumentError(
                f"dense_threshold={dense_threshold!r}: expected a number of rows >= 1 (from which forward dequantizes "
                f"and calls F.linear); pass None for the default ({DENSE_THRESHOLD})"
            )
        _check_platform(dev, dtype)
        self.inner_k_tiles = _check_shape(in_features, out_features, group_size, dev)
        self.in_features = in_features
        self.out_features = out_features
        self.group_size = group_size
        self.dense_threshold = threshold
        self.cache_dense = cache_dense
        tile_shape = (out_features // 8, in_features // (16 * self.inner_k_tiles), 32, self.inner_k_tiles // 2)
        self.register_buffer("qtiles", torch.zeros(tile_shape, dtype=torch.int32, device=dev))
        groups = in_features // group_size
        self.register_buffer("scales_and_zeros", torch.zeros((groups, out_features, 2), dtype=dtype, device=dev))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype, device=dev) if bias else None)
        # Derived, not state: aten's CPU layout (CPU only) and the optional dense copy. Rebuilt on demand.
        self._cpu_packed: torch.Tensor | None = None
        self._dense: torch.Tensor | None = None
        self._builder: DenseBuilder | None = None

    # --- construction ------------------------------------------------------------------------------------------

    @classmethod
    def from_unpacked(
        cls,
        weight: UnpackedWeight,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.bfloat16,
        dense_threshold: int | None = None,
        cache_dense: bool = False,
    ) -> TorchInt4Linear:
        """Build the module from the layout-free form of :func:`awq_autoselect.formats.unpack`.

        Args:
            weight: integer weights, zero points (``None``: symmetric, 8) and fp16 scales of one layer.
            device: where the module lives; default the weight's device.
            dtype: compute dtype (bfloat16 on CUDA).
            dense_threshold: see the class.
            cache_dense: see the class.

        Raises:
            ConversionError: the shape or group size cannot be held by tinygemm.
            VersionUnavailableError: torch, the device or the dtype cannot run tinygemm.
        """
        dev = weight.intweight.device if device is None else torch.device(device)
        out_features, in_features = weight.intweight.shape
        module = cls(
            int(in_features),
            int(out_features),
            weight.group_size,
            bias=weight.bias is not None,
            device=dev,
            dtype=dtype,
            dense_threshold=dense_threshold,
            cache_dense=cache_dense,
        )
        module.load_unpacked(weight)
        return module

    @torch.no_grad()
    def load_unpacked(self, weight: UnpackedWeight) -> None:
        """Repack ``weight`` into this module's state (its shape and group size must match the module's).

        Raises:
            ConversionError: the weight's shape or group size differs from the module's.
        """
        n, k = (int(d) for d in weight.intweight.shape)
        if (n, k, weight.group_size) != (self.out_features, self.in_features, self.group_size):
            raise ConversionError(
                f"weight [{n}x{k}, group {weight.group_size}] does not fit this TorchInt4Linear "
                f"[{self.out_features}x{self.in_features}, group {self.group_size}]"
            )
        if (self.bias is None) != (weight.bias is None):
            raise ConversionError(
                f"bias mismatch: this TorchInt4Linear has {'a' if self.bias is not None else 'no'} bias, the weight "
                f"has {'a' if weight.bias is not None else 'no'} bias"
            )
        dev = self.qtiles.device
        dtype = self.scales_and_zeros.dtype
        q = weight.intweight.to(dev).contiguous()
        s = weight.scales.to(dev, torch.float32)
        z = torch.full_like(s, SYMMETRIC_ZERO) if weight.zeros is None else weight.zeros.to(dev, torch.float32)
        # (8 - z) * s is exact in float32 (a 5-bit integer times an 11-bit fp16 mantissa): one rounding to dtype.
        pairs = torch.stack((s, (SYMMETRIC_ZERO - z) * s), dim=-1)  # [N, G, 2]
        self.scales_and_zeros.copy_(pairs.transpose(0, 1))
        if dev.type == "cuda":
            # aten's CUDA pack: uint8 [N, K/2], the even input in the high nibble.
            halves = ((q[:, 0::2] << 4) | q[:, 1::2]).contiguous()
            self.qtiles.copy_(torch.ops.aten._convert_weight_to_int4pack(halves, self.inner_k_tiles))
        else:
            self.qtiles.copy_(pack_tiles(q, self.inner_k_tiles))
        if self.bias is not None and weight.bias is not None:
            self.bias.copy_(weight.bias.to(dev, dtype))
        self._invalidate()

    # --- derived state -----------------------------------------------------------------------------------------

    def _invalidate(self) -> None:
        self._cpu_packed = None
        self._dense = None
        self._builder = None

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Self:
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        if self.qtiles.device.type == "cuda":
            # `.to(torch.float16)` on a whole model also reaches this module; the CUDA kernel is bf16 only.
            if self.scales_and_zeros.dtype != torch.bfloat16:
                self.scales_and_zeros = self.scales_and_zeros.to(torch.bfloat16)
            if self.bias is not None and self.bias.dtype != torch.bfloat16:
                self.bias = self.bias.to(torch.bfloat16)
        self._invalidate()
        return self

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._invalidate()

    def _cpu_layout(self) -> torch.Tensor:
        if self._cpu_packed is None:
            q = unpack_tiles(self.qtiles, self.out_features, self.in_features)
            self._cpu_packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), self.inner_k_tiles)
        return self._cpu_packed

    def dequantize(self) -> torch.Tensor:
        """The dense ``[out_features, in_features]`` weight this module computes with, in its compute dtype.

        ``(q - 8) * scale + zero`` rounded once, as tinygemm does on CUDA (the CPU kernel keeps it in float32).
        On CUDA a Triton kernel builds it (one pass), elsewhere torch ops; the same bits either way
        (:mod:`awq_autoselect.kernels.int4_dequant`).
        """
        with torch.no_grad():
            return dequantize_tiles(
                self.qtiles, self.scales_and_zeros, self.out_features, self.in_features, self.group_size
            )

    def _dense_weight(self) -> torch.Tensor:
        if self._dense is not None:
            return self._dense
        builder = self._builder
        # Checked once; every prefill after that pays one allocation and one launch. A new builder where the state
        # was replaced without _apply or load_state_dict (a buffer assigned directly).
        if builder is None or not builder.holds(self.qtiles, self.scales_and_zeros):
            self._builder = builder = DenseBuilder(
                self.qtiles, self.scales_and_zeros, self.out_features, self.in_features, self.group_size
            )
        dense = builder()
        if self.cache_dense:
            self._dense = dense
        return dense

    # --- forward -----------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + bias`` over the last dimension; returns ``x``'s dtype.

        Raises:
            InvalidArgumentError: ``x``'s last dimension is not ``in_features``.
        """
        if torch.is_grad_enabled():  # the layer has no gradient; inference mode (the usual caller) skips this
            with torch.no_grad():
                return self._forward(x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise InvalidArgumentError(f"TorchInt4Linear expects inputs [..., {self.in_features}], got {list(x.shape)}")
        out_shape = (*x.shape[:-1], self.out_features)
        compute = self.scales_and_zeros.dtype
        rows = x.reshape(-1, self.in_features).to(compute).contiguous()
        if rows.shape[0] == 0:
            return x.new_zeros(out_shape)
        if rows.shape[0] >= self.dense_threshold:
            out = F.linear(rows, self._dense_weight())
        elif rows.device.type == "cuda":
            out = torch.ops.aten._weight_int4pack_mm(rows, self.qtiles, self.group_size, self.scales_and_zeros)
        else:
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(
                rows, self._cpu_layout(), self.group_size, self.scales_and_zeros
            )
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(out_shape).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}, "
            f"bias={self.bias is not None}, dtype={self.scales_and_zeros.dtype}, "
            f"dense_threshold={self.dense_threshold}, cache_dense={self.cache_dense}"
        )


# --------------------------------------------------------------------------------------------------------------
# whole models


def _gemm_layers(model: torch.nn.Module) -> Iterator[tuple[torch.nn.Module, str, torch.nn.Module]]:
    from awq.modules.linear.gemm import WQLinear_GEMM

    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, WQLinear_GEMM):
                yield parent, name, child


def _layer_geometry(layer: torch.nn.Module) -> tuple[torch.device, int, int, int]:
    """(device, in_features, out_features, group_size) of a ``WQLinear_GEMM``."""
    sizes = vars(layer)
    return (
        layer.get_buffer("qweight").device,
        int(sizes["in_features"]),
        int(sizes["out_features"]),
        int(sizes["group_size"]),
    )


def _unpack_gemm_module(layer: torch.nn.Module) -> UnpackedWeight:
    from awq_autoselect import formats
    from awq_autoselect.catalogue import Layout

    tensors = {name: layer.get_buffer(name) for name in ("qweight", "qzeros", "scales")}
    bias = layer._buffers.get("bias")
    if bias is not None:
        tensors["bias"] = bias
    _, in_features, out_features, group_size = _layer_geometry(layer)
    return formats.unpack(
        Layout.GEMM, tensors, in_features=in_features, out_features=out_features, group_size=group_size
    )


def _release(module: torch.nn.Module) -> None:
    # The caller may still hold the old module; drop its buffers so its memory goes now, not with the module.
    for name in list(module._buffers):
        module._buffers[name] = None


def _cast_model(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast everything floating to ``dtype``, except rotary ``inv_freq`` buffers (computed in float32)."""
    keep: list[tuple[torch.nn.Module, str, torch.Tensor]] = []
    for module in model.modules():
        for name, buf in module._buffers.items():
            if buf is not None and "inv_freq" in name and buf.dtype == torch.float32:
                keep.append((module, name, buf))
    model.to(dtype)
    for module, name, buf in keep:
        module._buffers[name] = buf
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "dtype"):
        config.dtype = dtype
    elif config is not None and hasattr(config, "torch_dtype"):
        config.torch_dtype = dtype


def convert_model_to_torch_int4(
    model: torch.nn.Module, *, dtype: torch.dtype = torch.bfloat16, dense_threshold: int | None = None
) -> int:
    """Replace every AutoAWQ ``WQLinear_GEMM`` (and subclass) in ``model`` with :class:`TorchInt4Linear`.

    Each layer is repacked on its own device and its old buffers released. Then the rest of the model
    (embeddings, norms, ``lm_head``) is cast to ``dtype`` so that no layer pays a dtype round trip; rotary
    ``inv_freq`` buffers stay float32 (transformers computes rotary angles in float32). ``config.dtype`` is set
    to ``dtype``. Every layer is checked before any is replaced: on error the model is unchanged.

    Args:
        model: a transformers model (or AutoAWQ's wrapper) holding GEMM-layout AWQ layers. Load it with
            ``fuse_layers=False``: AutoAWQ's fused attention keeps its own fp16 cache.
        dtype: compute dtype; bfloat16 (the only one on CUDA; CPU also takes float16 and float32).
        dense_threshold: rows from which the layers use dequantize + ``F.linear``; default
            :data:`DENSE_THRESHOLD` (measured).

    Returns:
        The number of layers replaced (0 leaves the model as it was, not cast).

    Raises:
        ConversionError: a layer's shape or group size cannot be held by tinygemm (the message names it).
        VersionUnavailableError: torch, a layer's device or ``dtype`` cannot run tinygemm.
    """
    layers = list(_gemm_layers(model))
    if not layers:
        logger.info("convert_model_to_torch_int4: no WQLinear_GEMM layer in %s", type(model).__name__)
        return 0
    checked: set[tuple[torch.device, int, int, int]] = set()
    for _parent, name, layer in layers:
        key = _layer_geometry(layer)
        if key in checked:
            continue
        dev, in_features, out_features, group_size = key
        try:
            _check_platform(dev, dtype)
            _check_shape(in_features, out_features, group_size, dev)
        except ConversionError as exc:
            raise ConversionError(f"{name} ({type(layer).__name__}): {exc}") from None
        checked.add(key)
    for parent, name, layer in layers:
        replacement = TorchInt4Linear.from_unpacked(
            _unpack_gemm_module(layer), device=_layer_geometry(layer)[0], dtype=dtype, dense_threshold=dense_threshold
        )
        setattr(parent, name, replacement)
        _release(layer)
    _cast_model(model, dtype)
    logger.info("convert_model_to_torch_int4: %d layers repacked for aten._weight_int4pack_mm (%s)", len(layers), dtype)
    return len(layers)
