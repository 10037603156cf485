"""A one-row int4 matmul for AWQ weights in Triton, reading a layout made for it ("gemv layout").

Why: at batch 1 a decode step is one matrix-vector product per layer, bound by how fast the weights stream from
memory. PyTorch's tinygemm reads them at about a third of the H200's bandwidth (docs/benchmarks.md); this kernel
is the project's own attempt at the rest.

The layout. AWQ's math is ``w[n, k] = (q[n, k] - z[n, g]) * s[n, g]`` for group ``g = k // G``. Rows are taken
``R`` at a time (``R`` = 4 or 8, "interleave"):

- ``qweight``: int32 ``[N / R, K / 8, R]``. Word ``[b, w, r]`` belongs to row ``n = R * b + r``; with
  ``w = g * (G / 8) + i`` (word ``i`` of group ``g``), its nibble ``j`` (bits ``4j .. 4j+3``) is input
  ``k = g * G + j * (G / 8) + i``. The ``R`` words of one ``(b, w)`` are contiguous, so one wide load gives a
  thread ``R`` rows at the same eight inputs: each input value it loads serves ``R`` rows. Nibble ``j`` of a tile
  of words meets one contiguous slice of the input vector, so no reshape or gather lines the two up.
- ``scale_zero``: int32 ``[N / R, K / G, R]``: the fp16 scale's bits in the low half, the zero point in the high
  half: one 4-byte load per row and group.

The math, per row ``n`` and group ``g``: ``sum_k (q - z) * x = 16 * sum_k f * x - (16 + z) * X`` with
``f = 1 + q / 16`` and ``X = sum_k x``. A nibble becomes ``f`` without an integer-to-float conversion: moved to
bits 19-22 and OR-ed into 1.0's bits (``0x3F800000``) it is ``1 + q / 16`` exactly; a multiply-add per weight
follows. ``f`` and ``x`` are of like size, so the subtraction loses no more than a bit or two. Everything is in
float32; against ``x @ dequantized(W).T`` computed in float32 the only differences are float32 rounding.

Private module: imported by :mod:`awq_autoselect.kernels.triton_int4`. Importing it imports torch, and triton when
installed (a missing or broken triton only disables the kernel).
"""

from __future__ import annotations

import logging
import types
from typing import Any, NamedTuple

import torch

from awq_autoselect.errors import ConversionError, InvalidArgumentError, MissingDependencyError
from awq_autoselect.formats.geometry import require_little_endian

from ._triton import IMPORT_ERROR as _TRITON_IMPORT_ERROR
from ._triton import interpreting, tl, triton

__all__ = [
    "INTERLEAVES",
    "GemvConfig",
    "check_geometry",
    "dequantize_gemv_layout",
    "dequantize_triton",
    "gemv",
    "pack_gemv_layout",
    "triton_import_error",
    "unpack_gemv_layout",
]


def __dir__() -> list[str]:
    return __all__


logger = logging.getLogger(__name__)

_ZERO_SHIFT = 16
#: Rows a word tile interleaves (the ``R`` of the layout).
INTERLEAVES = (4, 8)


class GemvConfig(NamedTuple):
    """How the kernel splits the work: ``blocks`` interleaved row blocks (``R`` rows each) per program,
    ``groups_per_step`` groups of inputs per step of the loop over ``K``, ``num_warps`` warps per program, and
    ``inner`` steps unrolled in each iteration of that loop (the compiler may issue their loads together).

    The loop is never unrolled whole: at 7B shapes that takes Triton 30 to 145 s to compile per configuration
    (measured with triton.compile for sm_90), and Triton's pipeliner does not pipeline these loads (the same PTX
    for any ``num_stages``), so ``num_stages`` stays 1."""

    blocks: int = 1
    groups_per_step: int = 4
    num_warps: int = 1
    inner: int = 2
    num_stages: int = 1

    def __str__(self) -> str:
        return f"b{self.blocks}-g{self.groups_per_step}-w{self.num_warps}-i{self.inner}"


def triton_import_error() -> str | None:
    """Why triton does not import here, or None."""
    return _TRITON_IMPORT_ERROR


# --------------------------------------------------------------------------------------------------------------
# the layout, in plain torch (any device)


def check_geometry(out_features: int, in_features: int, group_size: int, interleave: int) -> None:
    """Raise ConversionError unless the layout can hold a ``[out_features, in_features]`` weight.

    Raises:
        ConversionError: a group size that is not a power of two of at least 32 dividing ``in_features``, an
            interleave other than 4 or 8, or ``out_features`` not a multiple of the interleave.
    """
    where = f"[{out_features}x{in_features}, group {group_size}]"
    if group_size < 32 or group_size & (group_size - 1) or in_features % group_size:
        raise ConversionError(
            f"{where}: the gemv layout needs a group size that is a power of two, at least 32, dividing "
            f"in_features; use another version for this checkpoint"
        )
    if interleave not in INTERLEAVES or out_features % interleave:
        raise ConversionError(
            f"{where}: the gemv layout interleaves 4 or 8 rows (got {interleave}) and needs out_features to be a "
            "multiple of it; use another version for this layer"
        )


def pack_gemv_layout(
    intweight: torch.Tensor,
    zeros: torch.Tensor | None,
    scales: torch.Tensor,
    group_size: int,
    interleave: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(qweight, scale_zero)`` of the gemv layout from a layer's 4-bit values, zero points and fp16 scales.

    Args:
        intweight: uint8 ``[N, K]``, values 0..15.
        zeros: uint8 ``[N, K / G]``, values 0..15, or ``None`` for symmetric weights (every zero point 8).
        scales: float16 ``[N, K / G]``.
        group_size: ``G``, a power of two of at least 32 that divides ``K``.
        interleave: ``R``, rows per word tile (4 or 8).

    Returns:
        int32 ``[N / R, K / 8, R]`` and int32 ``[N / R, K / G, R]`` on ``intweight``'s device.

    Raises:
        ConversionError: shapes that do not fit, a group size or interleave the layout cannot hold, scales that
            are not fp16.
    """
    require_little_endian("gemv-layout weights")
    n, k = (int(d) for d in intweight.shape)
    check_geometry(n, k, group_size, interleave)
    groups = k // group_size
    if scales.dtype != torch.float16 or tuple(scales.shape) != (n, groups):
        raise ConversionError(f"expected float16 scales [{n}, {groups}], got {scales.dtype}{list(scales.shape)}")
    if zeros is not None and tuple(zeros.shape) != (n, groups):
        raise ConversionError(f"expected zeros [{n}, {groups}], got {list(zeros.shape)}")
    words = group_size // 8
    # [N, groups, j, i] -> [N, groups, i, j]: nibble j of word i is input j * words + i of its group
    nibbles = intweight.to(torch.int32).view(n, groups, 8, words).transpose(2, 3)
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=intweight.device)
    # Summed in int64, then wrapped to int32: the top nibble's high bit is the sign bit the kernel shifts out.
    rows = (nibbles << shifts).sum(dim=-1, dtype=torch.int64).to(torch.int32).reshape(n, k // 8)
    z = torch.full((n, groups), 8, dtype=torch.int32, device=intweight.device) if zeros is None else zeros
    scale_bits = scales.contiguous().view(torch.int16).to(torch.int32) & 0xFFFF
    scale_zero = scale_bits | (z.to(torch.int32) << _ZERO_SHIFT)
    return _interleave(rows, interleave), _interleave(scale_zero, interleave)


def _interleave(per_row: torch.Tensor, interleave: int) -> torch.Tensor:
    """``[N, C]`` -> ``[N / R, C, R]``: the ``R`` rows of a block side by side, column by column."""
    n, cols = per_row.shape
    return per_row.view(n // interleave, interleave, cols).transpose(1, 2).contiguous()


def _deinterleave(blocked: torch.Tensor) -> torch.Tensor:
    blocks, cols, interleave = blocked.shape
    return blocked.transpose(1, 2).reshape(blocks * interleave, cols)


def unpack_gemv_layout(
    qweight: torch.Tensor, scale_zero: torch.Tensor, group_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_gemv_layout`: ``(intweight uint8 [N, K], zeros uint8 [N, K/G], scales fp16)``.

    Raises:
        ConversionError: tensors that do not hold a gemv-layout weight.
    """
    require_little_endian("gemv-layout weights")
    if qweight.dtype != torch.int32 or scale_zero.dtype != torch.int32 or qweight.dim() != 3 or scale_zero.dim() != 3:
        raise ConversionError(
            f"expected int32 qweight [N/R, K/8, R] and int32 scale_zero [N/R, K/{group_size}, R], got "
            f"{qweight.dtype}{list(qweight.shape)} and {scale_zero.dtype}{list(scale_zero.shape)}"
        )
    blocks, words_per_row, interleave = (int(d) for d in qweight.shape)
    n, k = blocks * interleave, words_per_row * 8
    check_geometry(n, k, group_size, interleave)
    groups = k // group_size
    if tuple(scale_zero.shape) != (blocks, groups, interleave):
        raise ConversionError(f"scale_zero {list(scale_zero.shape)} does not fit qweight {list(qweight.shape)}")
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=qweight.device)
    words = _deinterleave(qweight).view(n, groups, group_size // 8, 1)
    nibbles = (words >> shifts) & 0xF  # [N, groups, i, j]
    intweight = nibbles.transpose(2, 3).reshape(n, k).to(torch.uint8)
    pairs = _deinterleave(scale_zero)
    zeros = ((pairs >> _ZERO_SHIFT) & 0xF).to(torch.uint8)
    scales = (pairs & 0xFFFF).to(torch.int16).view(torch.float16)
    return intweight, zeros, scales


def dequantize_gemv_layout(
    qweight: torch.Tensor, scale_zero: torch.Tensor, group_size: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The dense ``[N, K]`` weight ``(q - z) * s``, computed in float32 and cast to ``dtype``.

    Raises:
        ConversionError: tensors that do not hold a gemv-layout weight.
    """
    intweight, zeros, scales = unpack_gemv_layout(qweight, scale_zero, group_size)
    n, k = intweight.shape
    q = intweight.float().view(n, -1, group_size)
    w = (q - zeros.float().unsqueeze(-1)) * scales.float().unsqueeze(-1)
    return w.view(n, k).to(dtype)


# --------------------------------------------------------------------------------------------------------------
# the kernel


def _add(a: tl.tensor, b: tl.tensor) -> tl.tensor:
    """The combine function of the kernels' sums (``tl.reduce``). Not ``tl.sum``: that is a function triton.jit
    decorated when triton was imported, which Triton's interpreter cannot call when it was turned on later."""
    return a + b


def _gemv_step(  # noqa: PLR0917 - a Triton function: arguments by position
    acc: tl.tensor,
    x_row: tl.tensor,
    w_tile: tl.tensor,
    sz_tile: tl.tensor,
    g0: tl.tensor,
    blocks_ok: tl.tensor,
    N_GROUPS: tl.constexpr,  # noqa: N803 - Triton's convention: compile-time constants in capitals
    GROUP: tl.constexpr,  # noqa: N803
    GROUPS_PER_STEP: tl.constexpr,  # noqa: N803
    R: tl.constexpr,  # noqa: N803
    MASKED: tl.constexpr,  # noqa: N803
) -> tl.tensor:
    """Add groups ``g0 .. g0 + GROUPS_PER_STEP`` of every row of the block to ``acc [BLOCKS, GROUPS_PER_STEP, R]``."""
    WORDS: tl.constexpr = GROUP // 8  # noqa: N806
    steps = tl.arange(0, GROUPS_PER_STEP)
    lanes = tl.arange(0, WORDS)
    groups = g0 + steps
    if not MASKED:
        words = tl.load(w_tile + (groups * (WORDS * R))[None, :, None, None])
        packed = tl.load(sz_tile + (groups * R)[None, :, None])
        group_ok = steps < GROUPS_PER_STEP
    else:
        group_ok = groups < N_GROUPS
        words = tl.load(
            w_tile + (groups * (WORDS * R))[None, :, None, None],
            mask=blocks_ok[:, None, None, None] & group_ok[None, :, None, None],
            other=0,
        )
        packed = tl.load(
            sz_tile + (groups * R)[None, :, None], mask=blocks_ok[:, None, None] & group_ok[None, :, None], other=0
        )
    scale = (packed & 0xFFFF).to(tl.uint16).to(tl.float16, bitcast=True).to(tl.float32)
    zero = ((packed >> 16) & 0xF).to(tl.float32)
    x_base = x_row + (groups * GROUP)[:, None] + lanes[None, :]  # [GROUPS_PER_STEP, WORDS]
    dot = tl.full([1, GROUPS_PER_STEP, WORDS, R], 0.0, tl.float32)
    xsum = tl.full([GROUPS_PER_STEP, WORDS], 0.0, tl.float32)
    for j in tl.static_range(8):
        xj = tl.load(x_base + j * WORDS, mask=group_ok[:, None], other=0.0).to(tl.float32)
        # nibble j to bits 19-22, OR-ed into 1.0: the float 1 + q / 16, exactly
        if j < 5:  # noqa: SIM108 - j is a compile-time constant: one branch is compiled
            bits = (words << (19 - 4 * j)) & 0x00780000
        else:
            bits = (words >> (4 * j - 19)) & 0x00780000
        f = (bits | 0x3F800000).to(tl.float32, bitcast=True)
        dot += f * xj[None, :, :, None]
        xsum += xj
    total = tl.reduce(xsum, 1, _add)[None, :, None]  # [1, GROUPS_PER_STEP, 1]
    return acc + scale * (16.0 * tl.reduce(dot, 2, _add) - (16.0 + zero) * total)


def _gemv_kernel(  # noqa: PLR0917 - Triton kernels take their arguments by position
    x_ptr: tl.tensor,  # Triton resolves annotations inside the kernel: only its own names may appear here
    w_ptr: tl.tensor,
    sz_ptr: tl.tensor,
    out_ptr: tl.tensor,
    n_blocks: tl.tensor,  # N / R
    N_GROUPS: tl.constexpr,  # noqa: N803 - K / G
    GROUP: tl.constexpr,  # noqa: N803
    R: tl.constexpr,  # noqa: N803
    BLOCKS: tl.constexpr,  # noqa: N803
    GROUPS_PER_STEP: tl.constexpr,  # noqa: N803
    INNER: tl.constexpr,  # noqa: N803
    MASKED: tl.constexpr,  # noqa: N803 - a partial block of rows or of groups exists
) -> None:
    """``out[m, n] = sum_k x[m, k] * w[n, k]`` for ``BLOCKS * R`` outputs of row ``m = program_id(0)``.

    The rows are the grid's fastest axis: the programs of one block of outputs run side by side, so the weights
    the first reads from memory the others find in the L2 cache.
    """
    WORDS: tl.constexpr = GROUP // 8  # noqa: N806
    m = tl.program_id(0)
    blocks = tl.program_id(1) * BLOCKS + tl.arange(0, BLOCKS)
    blocks_ok = blocks < n_blocks
    lanes = tl.arange(0, WORDS)
    rows = tl.arange(0, R)
    words_per_block = N_GROUPS * WORDS * R
    w_tile = (
        w_ptr
        + blocks[:, None, None, None].to(tl.int64) * words_per_block
        + (lanes * R)[None, None, :, None]
        + rows[None, None, None, :]
    )
    sz_tile = sz_ptr + blocks[:, None, None] * (N_GROUPS * R) + rows[None, None, :]
    x_row = x_ptr + m * (N_GROUPS * GROUP)
    acc = tl.full([BLOCKS, GROUPS_PER_STEP, R], 0.0, tl.float32)
    for g0 in range(0, N_GROUPS, GROUPS_PER_STEP * INNER):
        for u in tl.static_range(INNER):
            acc = _gemv_step(
                acc,
                x_row,
                w_tile,
                sz_tile,
                g0 + u * GROUPS_PER_STEP,
                blocks_ok,
                N_GROUPS,
                GROUP,
                GROUPS_PER_STEP,
                R,
                MASKED,
            )
    result = tl.reduce(acc, 1, _add)  # [BLOCKS, R]
    out = out_ptr + m * (n_blocks * R) + blocks[:, None] * R + rows[None, :]
    tl.store(out, result.to(out_ptr.dtype.element_ty), mask=blocks_ok[:, None])


def _dequantize_kernel(  # noqa: PLR0917 - Triton kernels take their arguments by position
    w_ptr: tl.tensor,
    sz_ptr: tl.tensor,
    out_ptr: tl.tensor,
    n_blocks: tl.tensor,
    N_GROUPS: tl.constexpr,  # noqa: N803
    GROUP: tl.constexpr,  # noqa: N803
    R: tl.constexpr,  # noqa: N803
    GROUPS_PER_PROGRAM: tl.constexpr,  # noqa: N803
) -> None:
    """Dense ``(q - z) * s`` for the ``R`` rows of block ``program_id(0)`` and ``GROUPS_PER_PROGRAM`` groups."""
    WORDS: tl.constexpr = GROUP // 8  # noqa: N806
    block = tl.program_id(0)
    groups = tl.program_id(1) * GROUPS_PER_PROGRAM + tl.arange(0, GROUPS_PER_PROGRAM)
    group_ok = groups < N_GROUPS
    lanes = tl.arange(0, WORDS)
    rows = tl.arange(0, R)
    base = block.to(tl.int64) * (N_GROUPS * WORDS * R)
    words = tl.load(
        w_ptr + base + (groups * (WORDS * R))[:, None, None] + (lanes * R)[None, :, None] + rows[None, None, :],
        mask=group_ok[:, None, None],
        other=0,
    )  # [GROUPS, WORDS, R]
    packed = tl.load(
        sz_ptr + block * (N_GROUPS * R) + (groups * R)[:, None] + rows[None, :], mask=group_ok[:, None], other=0
    )
    scale = (packed & 0xFFFF).to(tl.uint16).to(tl.float16, bitcast=True).to(tl.float32)[:, None, :]
    zero = ((packed >> 16) & 0xF).to(tl.float32)[:, None, :]
    in_features = N_GROUPS * GROUP
    row_base = out_ptr + (block * R + rows).to(tl.int64) * in_features  # [R]
    for j in tl.static_range(8):
        q = ((words >> (4 * j)) & 0xF).to(tl.float32)
        values = tl.permute((q - zero) * scale, (2, 0, 1))  # [R, GROUPS, WORDS]: inputs contiguous per row
        cols = (groups * GROUP)[:, None] + j * WORDS + lanes[None, :]  # [GROUPS, WORDS]
        tl.store(
            row_base[:, None, None] + cols[None, :, :],
            values.to(out_ptr.dtype.element_ty),
            mask=group_ok[None, :, None],
        )


class _State:
    def __init__(self) -> None:
        self.kernels: dict[bool, tuple[Any, Any]] = {}  # by interpreter mode


_STATE = _State()


def _rebound(fn: Any, scope: dict[str, Any]) -> Any:
    """``fn`` with ``scope`` as its globals (the same code, name and docstring)."""
    bound = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__)
    bound.__module__ = fn.__module__
    bound.__qualname__ = fn.__qualname__
    bound.__doc__ = fn.__doc__
    bound.__annotations__ = fn.__annotations__
    return bound


def _kernels() -> tuple[Any, Any]:
    """The jitted kernels (gemv, dequantize) for the current mode.

    ``triton.jit`` reads ``TRITON_INTERPRET`` when it decorates, so the kernels are decorated lazily, once per mode.

    Raises:
        MissingDependencyError: triton does not import here.
    """
    if triton is None:
        raise MissingDependencyError(f"the int4 gemv kernel needs triton: {_TRITON_IMPORT_ERROR}; install triton")
    mode = interpreting()
    found = _STATE.kernels.get(mode)
    if found is None:
        # triton.jit resolves the names a kernel calls through the function's globals: each function gets a copy
        # of this module's in which the functions it calls are jitted in the same mode.
        scope = {**globals()}
        scope["_add"] = triton.jit(_rebound(_add, scope))
        scope["_gemv_step"] = triton.jit(_rebound(_gemv_step, scope))
        found = (triton.jit(_rebound(_gemv_kernel, scope)), triton.jit(_rebound(_dequantize_kernel, scope)))
        _STATE.kernels[mode] = found
    return found


def gemv(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale_zero: torch.Tensor,
    group_size: int,
    *,
    config: GemvConfig | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x @ W.T`` for ``x`` of shape ``[M, K]`` (float16, bfloat16 or float32) and a gemv-layout ``W``.

    Made for a few rows: every row is a program of its own; the programs of one block of outputs run side by side
    and share its weights through the L2 cache. Runs on CUDA tensors, or
    on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``).

    Args:
        x: ``[M, K]`` contiguous inputs.
        qweight: int32 ``[N / R, K / 8, R]`` (:func:`pack_gemv_layout`).
        scale_zero: int32 ``[N / R, K / group_size, R]``.
        group_size: inputs per group.
        config: block sizes and launch options (default :class:`GemvConfig`).
        out: ``[M, N]`` contiguous output in ``x``'s dtype to write into (default: a new tensor).

    Returns:
        ``[M, N]`` in ``x``'s dtype.

    Raises:
        InvalidArgumentError: shapes, dtypes or devices that do not fit together.
        MissingDependencyError: triton does not import.
    """
    cfg = config or GemvConfig()
    if x.dim() != 2 or not x.is_contiguous():
        raise InvalidArgumentError(f"gemv expects contiguous inputs [M, K], got {list(x.shape)}")
    m, k = (int(d) for d in x.shape)
    blocks, words_per_row, interleave = (int(d) for d in qweight.shape)
    n = blocks * interleave
    if words_per_row * 8 != k or k % group_size or tuple(scale_zero.shape) != (blocks, k // group_size, interleave):
        raise InvalidArgumentError(
            f"gemv: inputs [{m}, {k}] do not fit weights {list(qweight.shape)} / {list(scale_zero.shape)} with "
            f"group size {group_size}"
        )
    if qweight.device != x.device or scale_zero.device != x.device:
        raise InvalidArgumentError(
            f"gemv: inputs on {x.device}, weights on {qweight.device} and {scale_zero.device}: move them to one device"
        )
    if out is None:
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    elif tuple(out.shape) != (m, n) or out.dtype != x.dtype or out.device != x.device or not out.is_contiguous():
        raise InvalidArgumentError(
            f"gemv: out must be a contiguous {x.dtype} tensor [{m}, {n}] on {x.device}, got {out.dtype}"
            f"{list(out.shape)} on {out.device}"
        )
    kernel = _kernels()[0]
    grid = (m, triton.cdiv(blocks, cfg.blocks), 1)
    kernel[grid](
        x,
        qweight,
        scale_zero,
        out,
        blocks,
        N_GROUPS=k // group_size,
        GROUP=group_size,
        R=interleave,
        BLOCKS=cfg.blocks,
        GROUPS_PER_STEP=cfg.groups_per_step,
        INNER=cfg.inner,
        MASKED=bool(blocks % cfg.blocks or (k // group_size) % (cfg.groups_per_step * cfg.inner)),
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    return out


def dequantize_triton(
    qweight: torch.Tensor, scale_zero: torch.Tensor, group_size: int, dtype: torch.dtype
) -> torch.Tensor:
    """:func:`dequantize_gemv_layout` in one Triton kernel: reads the packed weight once, writes ``[N, K]`` once.

    ``(q - z) * s`` in float32, cast once to ``dtype`` (float16 or bfloat16). Runs on CUDA tensors, or on CPU
    tensors under Triton's interpreter.

    Raises:
        InvalidArgumentError: tensors that do not hold a gemv-layout weight.
        MissingDependencyError: triton does not import.
    """
    if qweight.dim() != 3 or scale_zero.dim() != 3:
        raise InvalidArgumentError(f"expected gemv-layout tensors, got {list(qweight.shape)}, {list(scale_zero.shape)}")
    dequantize = _kernels()[1]
    blocks, words_per_row, interleave = (int(d) for d in qweight.shape)
    k = words_per_row * 8
    groups = k // group_size
    out = torch.empty((blocks * interleave, k), dtype=dtype, device=qweight.device)
    per_program = 4
    grid = (blocks, triton.cdiv(groups, per_program), 1)
    dequantize[grid](
        qweight,
        scale_zero,
        out,
        blocks,
        N_GROUPS=groups,
        GROUP=group_size,
        R=interleave,
        GROUPS_PER_PROGRAM=per_program,
        num_warps=4,
    )
    return out
