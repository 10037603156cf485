"""Dense weights from tinygemm's int4 tiles: one Triton kernel on CUDA, plain torch everywhere else.

:class:`awq_autoselect.kernels.torch_int4.TorchInt4Linear` leaves tinygemm for ``F.linear`` from ``dense_threshold``
rows on, and then needs its weight dense. :func:`dequantize_tiles` builds it: ``(q - 8) * scale + zero`` in
float32, cast to the scales' dtype, ``[out_features, in_features]``. For scales and zeros converted from AWQ
(``(8 - z) * s``, bf16) the float32 sum is exact, so that cast is the one rounding tinygemm's fused multiply-add
makes. The torch version (:func:`dequantize_tiles_torch`) makes several full-size passes (nibble split, an 8-D
permute copy, ``addcmul``); the Triton kernel reads the tiles once (0.5 byte/weight) and writes the weight once
(2 bytes/weight).

Exactness. The Triton kernel matches the torch version bit for bit, for any bfloat16 or float16 scales and
zeros (NaN payloads aside): ``q - 8`` (4 bits) times a bf16 (8-bit significand) or fp16 (11-bit) scale is exact
in float32, so the float32 sum ``product + zero`` is rounded once whether or not the compiler fuses it into an
FMA (torch's ``addcmul`` computes the same exact product and rounds the same sum), and the cast to the output
dtype rounds to nearest even in both. Float32 scales (CPU only: the module keeps bf16 on CUDA) would make the product
inexact, and torch's CPU ``addcmul`` fuses where a GPU kernel might not; they always take the torch path.

Triton's interpreter (``TRITON_INTERPRET=1``, how the CPU tests run the kernel) casts float32 to bfloat16 by
truncation, and its documentation says it does not support bfloat16 arithmetic. Under the interpreter the
kernel therefore rounds to bfloat16 with integer operations (``ROUND_BY_BITS``), the same round-to-nearest-even
as the GPU's ``cvt.rn.bf16.f32``; the GPU tests check that both roundings agree.

Dispatch (``backend="auto"``): CUDA tensors with bf16/fp16 scales use the Triton kernel when triton imports;
everything else uses torch. If the kernel fails to build or launch (a Triton that cannot compile for this GPU),
the torch path is used from then on in this process, logged once at debug level; :func:`triton_failure` says why.

Private module: imported by :mod:`awq_autoselect.kernels.torch_int4`. Importing it imports torch, and triton when
installed (a missing or broken triton only disables the Triton path).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import torch

from awq_autoselect.errors import ConversionError, InvalidArgumentError, MissingDependencyError
from awq_autoselect.formats.packing import split_nibbles

from ._triton import IMPORT_ERROR as _TRITON_IMPORT_ERROR
from ._triton import interpreting, tl, triton

if TYPE_CHECKING:
    from typing import TypeAlias

__all__ = [
    "TRITON_DTYPES",
    "DenseBuilder",
    "DequantBackend",
    "dequantize_tiles",
    "dequantize_tiles_torch",
    "dequantize_tiles_triton",
    "triton_failure",
]


def __dir__() -> list[str]:
    return __all__


logger = logging.getLogger(__name__)

DequantBackend: TypeAlias = Literal["auto", "triton", "torch"]

#: Scale dtypes the Triton kernel reproduces bit for bit (see the module docstring for float32).
TRITON_DTYPES = (torch.bfloat16, torch.float16)

_TINYGEMM_OFFSET = 8  # tinygemm reads a stored 4-bit q as the signed value q - 8
_MAX_ELEMENTS = 2**31  # the kernel indexes the output with int32 offsets
# 8 x 256 blocks, 4 warps: the fastest of scripts/measure_int4_threshold.py's sweep on the H200 (3.4-3.6 TB/s,
# about 10% ahead of 16 x 256; docs/results/int4-threshold-h200.json).
_DEFAULT_BLOCK_N = 8
_DEFAULT_BLOCK_K = 256
_DEFAULT_NUM_WARPS = 4


class _TritonState:
    """What this process learned about the Triton path: its kernels (compiled, interpreted) and any failure."""

    def __init__(self) -> None:
        self.kernels: dict[bool, Any] = {}
        self.failure: str | None = None
        self.logged: set[str] = set()
        # Compiled kernels by everything Triton specializes them on: launched directly, they skip Triton's
        # per-launch argument binding and option parsing (hundreds of microseconds per call in Python).
        self.compiled: dict[tuple[object, ...], Any] = {}
        self.direct_failure: str | None = None  # why direct launches stopped in this process


_STATE = _TritonState()


# --------------------------------------------------------------------------------------------------------------
# the torch version (any device, any floating dtype)


def dequantize_tiles_torch(
    qtiles: torch.Tensor, scales_and_zeros: torch.Tensor, out_features: int, in_features: int, group_size: int
) -> torch.Tensor:
    """The dense weight tinygemm computes, ``(q - 8) * scale + zero`` rounded once to the scales' dtype.

    Plain torch ops on any device; the reference the Triton kernel is tested against. No input checks (see
    :func:`dequantize_tiles`).
    """
    n, k = out_features, in_features
    n_tiles, k_outer, _, pairs = qtiles.shape
    # dims: nt, ko, a, b, p, h, bl, nib  (lane 4a + b, int32 p, byte 2h + bl of it; docs/torch-int4.md)
    nibbles = split_nibbles(qtiles).view(n_tiles, k_outer, 8, 4, pairs, 2, 2, 2)
    # q - 8 in int8 while the data is one byte per weight; the only full-size passes are in the output dtype.
    centred = nibbles.view(torch.int8).sub_(_TINYGEMM_OFFSET)
    ordered = centred.permute(0, 2, 1, 4, 6, 7, 3, 5)  # nt, a, ko, p, bl, nib, b, h = n, k
    dense = ordered.to(scales_and_zeros.dtype, memory_format=torch.contiguous_format).view(
        n, k // group_size, group_size
    )
    scale = scales_and_zeros[..., 0].t().unsqueeze(-1)
    zero = scales_and_zeros[..., 1].t().unsqueeze(-1)
    # addcmul computes zero + q * scale in float32 and rounds once, like tinygemm's fused multiply-add.
    return torch.addcmul(zero, dense, scale, out=dense).view(n, k)


# --------------------------------------------------------------------------------------------------------------
# the Triton kernel


def _dequantize_kernel(  # noqa: PLR0917 - Triton kernels take their arguments by position
    tiles_ptr: tl.tensor,  # Triton resolves annotations inside the kernel: only its own names may appear here
    scales_and_zeros_ptr: tl.tensor,
    out_ptr: tl.tensor,
    n_rows: tl.tensor,
    n_cols: tl.tensor,
    PAIRS: tl.constexpr,  # noqa: N803 - Triton's convention: compile-time constants in capitals
    GROUP: tl.constexpr,  # noqa: N803
    BLOCK_N: tl.constexpr,  # noqa: N803
    BLOCK_M: tl.constexpr,  # noqa: N803
    ROUND_BY_BITS: tl.constexpr,  # noqa: N803
) -> None:
    """One ``[BLOCK_N, 8 * BLOCK_M]`` block of the dense weight, rows of contiguous inputs.

    Element ``(n, k)``, with ``k = 8 * m + 2 * b + h`` (chunk ``m`` of eight inputs), is nibble ``4 * h + c`` of
    int32 ``[n // 8, ko, 4 * (n % 8) + b, p]`` of the tiles, where chunk ``m`` lies in tile ``ko = m // (4 * PAIRS)``
    at ``p = (m // 4) % PAIRS`` and ``c = m % 4``: the layout of docs/torch-int4.md, ``k % (16 * innerKTiles) =
    32 * p + 8 * c + 2 * b + h``. A stripe of 8 rows holds ``n_cols`` int32 words, one tile ``32 * PAIRS``.
    """
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    chunks = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    lanes = tl.arange(0, 4)  # b
    row_ok = rows < n_rows
    block_ok = row_ok[:, None] & (chunks < n_cols // 8)[None, :]

    row_word = (rows // 8) * n_cols + (rows % 8) * (4 * PAIRS)
    chunk_word = (chunks // (4 * PAIRS)) * (32 * PAIRS) + (chunks // 4) % PAIRS
    words = tl.load(
        tiles_ptr + (row_word[:, None, None] + chunk_word[None, :, None] + (lanes * PAIRS)[None, None, :]),
        mask=block_ok[:, :, None],
        other=0,
    )  # [BLOCK_N, BLOCK_M, 4 (b)]
    shift = ((chunks % 4) * 4)[None, :, None]
    # 0x4B000000 is 2**23 as float32: OR-ing a nibble into its significand gives 2**23 + q exactly, so q - 8 is
    # one exact subtraction (no int-to-float conversion).
    low = ((words >> shift) & 0xF) | 0x4B000000
    high = ((words >> (shift + 16)) & 0xF) | 0x4B000000
    centred = tl.join(low, high).to(tl.float32, bitcast=True) - 8388616.0  # [.., 4 (b), 2 (h)]: 2**23 + 8

    pair = ((chunks // (GROUP // 8))[None, :] * n_rows + rows[:, None]) * 2  # scales_and_zeros[g, n, 0]
    scale = tl.load(scales_and_zeros_ptr + pair, mask=block_ok, other=0.0).to(tl.float32)
    zero = tl.load(scales_and_zeros_ptr + pair + 1, mask=block_ok, other=0.0).to(tl.float32)
    # The product is exact in float32 (bf16/fp16 scales), so this rounds once with or without an FMA.
    values = centred * scale[:, :, None, None] + zero[:, :, None, None]
    values = tl.reshape(values, [BLOCK_N, BLOCK_M * 8])

    cols = tl.program_id(1) * (BLOCK_M * 8) + tl.arange(0, BLOCK_M * 8)
    out = out_ptr + (rows[:, None] * n_cols + cols[None, :])
    out_ok = row_ok[:, None] & (cols < n_cols)[None, :]
    if ROUND_BY_BITS:
        # float32 -> bfloat16 bits, round to nearest even (the interpreter's own cast truncates); NaN stays NaN.
        bits = values.to(tl.int32, bitcast=True)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        rounded = tl.where((bits & 0x7FFFFFFF) > 0x7F800000, 0x7FC0, rounded)
        tl.store(out, rounded.to(tl.int16), mask=out_ok)
    else:
        tl.store(out, values.to(out_ptr.dtype.element_ty), mask=out_ok)


def _kernel() -> tuple[Any, bool]:
    """The jitted kernel for the current mode, and whether it is Triton's interpreter.

    ``triton.jit`` reads ``TRITON_INTERPRET`` when it decorates, so the kernel is decorated lazily, once per mode.

    Raises:
        MissingDependencyError: triton does not import here.
    """
    if triton is None:
        raise MissingDependencyError(
            f"the Triton dequantization needs triton: {_TRITON_IMPORT_ERROR}; install triton (Linux CUDA builds "
            "of torch bring it) or use backend='torch'"
        )
    mode = interpreting()
    kernel = _STATE.kernels.get(mode)
    if kernel is None:
        kernel = triton.jit(_dequantize_kernel)
        _STATE.kernels[mode] = kernel
    return kernel, type(kernel).__name__ == "InterpretedFunction"


def _launch(
    qtiles: torch.Tensor,
    scales_and_zeros: torch.Tensor,
    out_features: int,
    in_features: int,
    group_size: int,
    *,
    block_n: int = _DEFAULT_BLOCK_N,
    block_k: int = _DEFAULT_BLOCK_K,
    num_warps: int = _DEFAULT_NUM_WARPS,
    round_by_bits: bool | None = None,
    on_compiled: Callable[[Callable[..., object], tuple[object, ...]], None] | None = None,
) -> torch.Tensor:
    """Run the kernel (inputs already checked). ``round_by_bits``: None = only under the interpreter, for bf16.

    ``on_compiled`` receives the compiled kernel's launcher, bound to this grid, and the constants it takes after
    the five arguments, whenever this call knows the compiled kernel (not under the interpreter) and direct
    launches have not been given up in this process.
    """
    kernel, interpreted = _kernel()
    out = torch.empty((out_features, in_features), dtype=scales_and_zeros.dtype, device=qtiles.device)
    by_bits = (interpreted if round_by_bits is None else round_by_bits) and out.dtype == torch.bfloat16
    # Three dimensions: a compiled kernel's launcher reads grid[2] (kernel[grid] pads a shorter grid itself).
    grid = (triton.cdiv(out_features, block_n), triton.cdiv(in_features, block_k), 1)
    args = (
        qtiles.contiguous(),
        scales_and_zeros.contiguous(),
        out.view(torch.int16) if by_bits else out,
        out_features,
        in_features,
    )
    constants = {
        "PAIRS": int(qtiles.shape[3]),
        "GROUP": group_size,
        "BLOCK_N": block_n,
        "BLOCK_M": block_k // 8,
        "ROUND_BY_BITS": by_bits,
    }
    # FMA contraction changes nothing (the product is exact); asked for explicitly, as Triton 3.9 wants.
    options = {"num_warps": num_warps, "enable_fp_fusion": True}
    if qtiles.device.type != "cuda":
        kernel[grid](*args, **constants, **options)
        return out
    key = _specialization(args, constants, num_warps, qtiles.device)
    with torch.cuda.device(qtiles.device):  # Triton launches on the current device
        compiled = None if interpreted or _STATE.direct_failure else _STATE.compiled.get(key)
        if compiled is not None:
            try:
                compiled[grid](*args, *constants.values())
            except Exception as exc:  # a Triton whose compiled-kernel launch differs: the normal launch, always
                _direct_failed(exc)
                compiled = None
        if compiled is None:
            launched = kernel[grid](*args, **constants, **options)
            if not interpreted and callable(getattr(launched, "__getitem__", None)):
                _STATE.compiled[key] = compiled = launched
        if compiled is not None and on_compiled is not None and not _STATE.direct_failure:
            try:
                on_compiled(compiled[grid], (*constants.values(),))
            except Exception as exc:  # the launch worked; only the binding for later direct launches did not
                _direct_failed(exc)
    return out


def _direct_failed(exc: Exception) -> None:
    """Stop launching compiled kernels directly in this process (the normal launch works), said once."""
    if _STATE.direct_failure is None:
        _STATE.direct_failure = f"{type(exc).__name__}: {exc}"
        logger.warning(
            "launching the int4 dequantization kernel directly failed (%s); using Triton's normal launch, which "
            "costs the host about twice as much per call",
            _STATE.direct_failure,
        )


def _specialization(
    args: tuple[object, ...], constants: Mapping[str, object], num_warps: int, device: torch.device
) -> tuple[object, ...]:
    """What Triton specializes a compiled kernel on for these arguments: dtypes, 16-byte alignment of pointers,
    divisibility by 16 and equality to 1 of integers, the constants and options."""
    parts: list[object] = [device, num_warps, tuple(constants.items())]
    for arg in args:
        if isinstance(arg, torch.Tensor):
            parts.append((arg.dtype, arg.data_ptr() % 16 == 0))
        elif isinstance(arg, int):
            parts.append((arg % 16 == 0, arg == 1))
        else:
            parts.append(arg)
    return tuple(parts)


# --------------------------------------------------------------------------------------------------------------
# checks and dispatch


def _check_tiles(
    qtiles: torch.Tensor, scales_and_zeros: torch.Tensor, out_features: int, in_features: int, group_size: int
) -> None:
    """Raise ConversionError unless the tensors hold a tile-layout ``[out_features, in_features]`` weight."""
    where = f"[{out_features}x{in_features}, group {group_size}]"
    if qtiles.dtype != torch.int32 or qtiles.dim() != 4 or qtiles.shape[2] != 32 or qtiles.shape[3] not in (1, 2, 4):
        raise ConversionError(
            f"expected int32 tinygemm tiles [N/8, K/(16*t), 32, t/2] with t in 2, 4, 8 for {where}, got "
            f"{qtiles.dtype}{list(qtiles.shape)}; build them with pack_tiles or aten._convert_weight_to_int4pack"
        )
    n_tiles, k_outer, _, pairs = (int(d) for d in qtiles.shape)
    if n_tiles * 8 != out_features or k_outer * pairs * 32 != in_features:
        raise ConversionError(f"tiles {list(qtiles.shape)} do not hold a {where} weight")
    if group_size <= 0 or in_features % group_size:
        raise ConversionError(f"{where}: group_size must be a positive divisor of in_features {in_features}")
    expected = [in_features // group_size, out_features, 2]
    if list(scales_and_zeros.shape) != expected or not scales_and_zeros.is_floating_point():
        raise ConversionError(
            f"{where}: expected floating scales_and_zeros {expected}, got "
            f"{scales_and_zeros.dtype}{list(scales_and_zeros.shape)}"
        )
    if scales_and_zeros.device != qtiles.device:
        raise ConversionError(
            f"{where}: qtiles are on {qtiles.device}, scales_and_zeros on {scales_and_zeros.device}; move both to "
            "one device"
        )


def _triton_refusal(scales_and_zeros: torch.Tensor, out_features: int, in_features: int, group_size: int) -> str | None:
    """Why the kernel cannot take these inputs, or None."""
    if scales_and_zeros.dtype not in TRITON_DTYPES:
        return (
            f"the Triton kernel reproduces bfloat16 and float16 scales only, got {scales_and_zeros.dtype} "
            "(float32 products are inexact, so rounding would depend on FMA contraction)"
        )
    if out_features * in_features >= _MAX_ELEMENTS:
        return f"a [{out_features}x{in_features}] weight has 2**31 or more elements; the kernel uses int32 offsets"
    if group_size % 8:
        return f"group_size {group_size} is not a multiple of 8"
    return None


def dequantize_tiles_triton(
    qtiles: torch.Tensor,
    scales_and_zeros: torch.Tensor,
    out_features: int,
    in_features: int,
    group_size: int,
    *,
    block_n: int = _DEFAULT_BLOCK_N,
    block_k: int = _DEFAULT_BLOCK_K,
    num_warps: int = _DEFAULT_NUM_WARPS,
) -> torch.Tensor:
    """:func:`dequantize_tiles` with the Triton kernel, nothing else: no fallback, errors propagate.

    Runs on CUDA tensors, or on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``).

    Args:
        qtiles: int32 tinygemm tiles ``[N/8, K/(16*t), 32, t/2]``.
        scales_and_zeros: ``[K/group_size, N, 2]`` bfloat16 or float16 ``(scale, zero)`` pairs.
        out_features: N.
        in_features: K.
        group_size: inputs per scale.
        block_n: rows per program (a power of two).
        block_k: inputs per program (a power of two, at least 8).
        num_warps: warps per program.

    Returns:
        The dense ``[N, K]`` weight in the scales' dtype.

    Raises:
        ConversionError: the tensors do not hold such a weight, or the kernel cannot take them (float32 scales,
            2**31 or more elements).
        InvalidArgumentError: (a ``ValueError``) a block size that is not a power of two (``block_k`` below 8).
        MissingDependencyError: triton does not import.
        Exception: whatever Triton raises when the kernel does not compile or launch.
    """
    _check_tiles(qtiles, scales_and_zeros, out_features, in_features, group_size)
    refusal = _triton_refusal(scales_and_zeros, out_features, in_features, group_size)
    if refusal is not None:
        raise ConversionError(f"{refusal}; use backend='torch'")
    for name, value, least in (("block_n", block_n, 1), ("block_k", block_k, 8)):
        if value < least or value & (value - 1):
            raise InvalidArgumentError(
                f"{name}={value!r}: expected a power of two >= {least}; pass e.g. {name}={max(least, 32)}"
            )
    return _launch(
        qtiles,
        scales_and_zeros,
        out_features,
        in_features,
        group_size,
        block_n=block_n,
        block_k=block_k,
        num_warps=num_warps,
    )


def _log_once(reason: str) -> None:
    if reason not in _STATE.logged:
        _STATE.logged.add(reason)
        logger.debug("int4 dequantization uses the torch path: %s", reason)


def _try_triton(
    qtiles: torch.Tensor,
    scales_and_zeros: torch.Tensor,
    out_features: int,
    in_features: int,
    group_size: int,
    *,
    on_compiled: Callable[[Callable[..., object], tuple[object, ...]], None] | None = None,
) -> torch.Tensor | None:
    """The Triton result, or None (logged once) when the kernel is unavailable or has failed in this process.

    ``on_compiled``: see :func:`_launch`.
    """
    if _STATE.failure is not None:
        return None
    refusal = _TRITON_IMPORT_ERROR or _triton_refusal(scales_and_zeros, out_features, in_features, group_size)
    if refusal is not None:
        _log_once(refusal)
        return None
    try:
        return _launch(qtiles, scales_and_zeros, out_features, in_features, group_size, on_compiled=on_compiled)
    except Exception as exc:  # Triton's compile and launch errors have no common base class
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            raise  # not the kernel's fault, and the torch path needs more memory still
        if qtiles.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise  # the capture is broken either way: the torch path cannot run in it now
        _STATE.failure = f"the Triton kernel failed on {qtiles.device} ({type(exc).__name__}: {exc})"
        logger.debug("int4 dequantization: %s; using the torch path from now on", _STATE.failure, exc_info=True)
        return None


def dequantize_tiles(
    qtiles: torch.Tensor,
    scales_and_zeros: torch.Tensor,
    out_features: int,
    in_features: int,
    group_size: int,
    *,
    backend: DequantBackend = "auto",
) -> torch.Tensor:
    """The dense ``[out_features, in_features]`` weight of tinygemm tiles, in the scales' dtype.

    ``(q - 8) * scale + zero`` computed in float32 and cast to the scales' dtype (one rounding for converted AWQ
    weights, as tinygemm's FMA on CUDA). Both backends give the same bits (bfloat16/float16 scales; float32 always
    runs in torch).

    Args:
        qtiles: int32 tinygemm tiles ``[N/8, K/(16*t), 32, t/2]`` (``TorchInt4Linear.qtiles``).
        scales_and_zeros: ``[K/group_size, N, 2]`` ``(scale, zero)`` pairs, on the tiles' device.
        out_features: N.
        in_features: K.
        group_size: inputs per scale.
        backend: ``"auto"`` (the Triton kernel for CUDA tensors when it can run, else torch, see the module
            docstring), ``"triton"`` (the kernel or an error) or ``"torch"``.

    Returns:
        A new dense tensor on the tiles' device.

    Raises:
        ConversionError: the tensors do not hold such a weight (``backend="triton"``: or the kernel cannot take
            them).
        InvalidArgumentError: (a ``ValueError``) an unknown ``backend``.
        MissingDependencyError: ``backend="triton"`` and triton does not import.
    """
    if backend == "triton":
        return dequantize_tiles_triton(qtiles, scales_and_zeros, out_features, in_features, group_size)
    if backend not in {"auto", "torch"}:
        raise InvalidArgumentError(
            f"backend={backend!r}: expected 'auto', 'triton' or 'torch'; pass 'auto' to use the Triton kernel where "
            "it can run"
        )
    _check_tiles(qtiles, scales_and_zeros, out_features, in_features, group_size)
    if backend == "auto" and qtiles.device.type == "cuda":
        dense = _try_triton(qtiles, scales_and_zeros, out_features, in_features, group_size)
        if dense is not None:
            return dense
    return dequantize_tiles_torch(qtiles, scales_and_zeros, out_features, in_features, group_size)


class DenseBuilder:
    """One layer's dense weight, built again on every call at the least host cost.

    A long prompt's prefill dequantizes every layer once per forward (128 calls for a 7B Llama with fused
    projections), and an eager forward is paced by the host: each call's Python is wall time. A builder checks
    the tensors once; its first call runs :func:`dequantize_tiles`'s ``"auto"`` path (which compiles or finds
    the kernel), later calls allocate the output and launch the compiled kernel through its bound launcher, with
    none of the per-call checks (on the lent H200: 25 us of host time per call against 56 us, docs/torch-int4.md).
    The same bits as :func:`dequantize_tiles`, and the torch path wherever that takes it (a CPU tensor, float32
    scales, no triton, a kernel that failed in this process).

    The builder holds the tensors themselves: their values may change, but whoever replaces them (a module moved
    to another device, reloaded) makes a new builder (:class:`~.torch_int4.TorchInt4Linear` does).

    Raises:
        ConversionError: the tensors do not hold such a weight (when the builder is made).
    """

    def __init__(
        self,
        qtiles: torch.Tensor,
        scales_and_zeros: torch.Tensor,
        out_features: int,
        in_features: int,
        group_size: int,
    ) -> None:
        _check_tiles(qtiles, scales_and_zeros, out_features, in_features, group_size)
        self._tensors = (qtiles, scales_and_zeros)
        self._shape = (out_features, in_features, group_size)
        self._cuda_index = qtiles.device.index if qtiles.device.type == "cuda" else None
        self._try_kernel = self._cuda_index is not None
        # The direct launch passes the tensors as they are; _launch would pass contiguous copies.
        self._may_bind = qtiles.is_contiguous() and scales_and_zeros.is_contiguous()
        self._direct: Callable[..., object] | None = None
        self._constants: tuple[object, ...] = ()

    def holds(self, qtiles: torch.Tensor, scales_and_zeros: torch.Tensor) -> bool:
        """Whether these are the very tensors this builder reads."""
        return self._tensors[0] is qtiles and self._tensors[1] is scales_and_zeros

    def _bind(self, launcher: Callable[..., object], constants: tuple[object, ...]) -> None:
        if self._may_bind:
            self._direct, self._constants = launcher, constants

    def __call__(self) -> torch.Tensor:
        """The dense ``[out_features, in_features]`` weight, a new tensor in the scales' dtype."""
        qtiles, pairs = self._tensors
        n, k, group = self._shape
        direct = self._direct
        if (
            direct is not None
            and _STATE.failure is None
            and _STATE.direct_failure is None
            and torch.cuda.current_device() == self._cuda_index
        ):
            out = torch.empty((n, k), dtype=pairs.dtype, device=qtiles.device)
            try:
                direct(qtiles, pairs, out, n, k, *self._constants)
            except Exception as exc:  # a launcher that does not take these: the checked launch from now on
                self._direct = None
                _direct_failed(exc)
            else:
                return out
        if self._try_kernel:
            dense = _try_triton(qtiles, pairs, n, k, group, on_compiled=self._bind)
            if dense is not None:
                return dense
            self._try_kernel = False  # refused (logged once) or failed (recorded): torch from now on
        return dequantize_tiles_torch(qtiles, pairs, n, k, group)


def triton_failure() -> str | None:
    """Why ``backend="auto"`` no longer tries the Triton kernel in this process (it failed once), or None."""
    return _STATE.failure
