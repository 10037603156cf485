"""A layer's stored zero points, read from its packed bytes with numpy (no torch).

Selection asks how many zero points are 0 (ExLlama's kernels cannot store them: see
:attr:`awq_autoselect.catalogue.KernelSpec.zero_minus_one`) before any kernel is loaded, on machines without
torch. :func:`count_zero_points` reads one layer's ``qzeros`` as each layout stores them: GEMM and GEMV hold one
4-bit zero point per nibble of little-endian int32 words (GEMV's padding nibbles past ``in_features / group`` are
skipped, :func:`.geometry.zeros_width`); GEMV_FAST stores ``-scale * zero`` in float16, so a 0 there under a
non-zero scale is a zero point of 0 (a group whose scale is 0 holds no zero point: it reads back as 8,
docs/formats.md); Marlin stores none. :func:`awq_autoselect.checkpoint.count_zero_point_zeros` walks a
checkpoint's layers with it.

Invariant: importing this module imports neither numpy nor torch (numpy is imported inside the function). The
bytes are read with explicit little-endian dtypes, so the count is the same on any host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from awq_autoselect.catalogue import Layout
from awq_autoselect.errors import CorruptCheckpointError

from .geometry import NIBBLES_PER_WORD

__all__ = ["StoredTensor", "count_zero_points"]


def __dir__() -> list[str]:
    return __all__


class StoredTensor(NamedTuple):
    """One stored tensor as the reader needs it: its shape, and how to read its bytes (only once the shapes are
    known to fit)."""

    shape: tuple[int, ...]
    read: Callable[[], bytes]


def count_zero_points(
    layout: Layout,
    qzeros: StoredTensor,
    *,
    groups: int,
    out_features: int,
    scales: StoredTensor | None = None,
    where: str,
) -> tuple[int, int]:
    """``(zero points equal to 0, zero points in all)`` of one layer's stored ``qzeros``, padding excluded.

    What is stored is counted, whatever the checkpoint's ``zero_point`` says: the kernels use it as stored.

    Args:
        layout: the layer's packed layout.
        qzeros: its ``qzeros`` tensor (int32 words, or float16 for GEMV_FAST).
        groups: its quantization groups (``in_features / group_size``).
        out_features: its outputs (for messages).
        scales: its ``scales`` tensor; needed for GEMV_FAST, whose stored terms are ``-scale * zero``.
        where: the tensor's name and file, for messages.

    Raises:
        ImportError: numpy is not installed (transformers, a dependency, installs it).
        CorruptCheckpointError: the ``qzeros`` (or GEMV_FAST's ``scales``) do not fit the layer.
        Exception: whatever ``read`` raises.
    """
    import numpy as np

    if layout is Layout.MARLIN:
        return 0, 0
    shape = qzeros.shape
    if layout is Layout.GEMV_FAST:  # -scale * zero, [padded groups, out_features]
        if scales is None or scales.shape != shape or shape[0] < groups:
            raise CorruptCheckpointError(
                f"{where} {list(shape)} and its scales {list(scales.shape) if scales else None} do not fit "
                f"{groups} groups of {out_features} outputs: the weights file is damaged"
            )
        terms = np.frombuffer(qzeros.read(), dtype="<f2").reshape(shape)[:groups]
        factors = np.frombuffer(scales.read(), dtype="<f2").reshape(shape)[:groups]
        return int(np.count_nonzero((terms == 0) & (factors != 0))), int(terms.size)
    # GEMM [groups, out/8] or GEMV [out, padded groups / 8]: int32 words of 8 nibbles, least significant first
    words = np.frombuffer(qzeros.read(), dtype="<u4").reshape(shape)
    shifts = np.arange(0, 4 * NIBBLES_PER_WORD, 4, dtype=np.uint32)
    values = ((words[:, :, None] >> shifts) & 0xF).reshape(shape[0], -1)
    if layout is Layout.GEMV:
        if values.shape[1] < groups:
            raise CorruptCheckpointError(
                f"{where} {list(shape)} holds {values.shape[1]} zero points per output, the layer has {groups} "
                "groups: the weights file is damaged"
            )
        values = values[:, :groups]
    return int(np.count_nonzero(values == 0)), int(values.size)
