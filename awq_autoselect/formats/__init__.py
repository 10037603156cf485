"""AutoAWQ's packed 4-bit layouts: their geometry, exact conversions between them, and reading their zero points.

One home for every fact about how AutoAWQ packs a layer:

- :mod:`.geometry`: the tensors each layout holds, zero-point padding, the GEMM nibble order, the byte-order
  guard (plain numbers, no torch);
- :mod:`.packing`: :func:`unpack`, :func:`pack`, :func:`convert` and :func:`dequantize` in torch, bit for bit as
  AutoAWQ 0.2.9 packs (docs/formats.md);
- :mod:`.qzeros`: a checkpoint's stored zero points read with numpy, without torch.

Invariant: importing this package imports neither torch, numpy nor awq (each is imported inside the functions
that need it).
"""

from __future__ import annotations

from .packing import (
    GEMV_FAST_ZERO_TOLERANCE,
    UnpackedWeight,
    convert,
    dequantize,
    pack,
    packed_shapes,
    unpack,
    zeros_width,
)

__all__ = [
    "GEMV_FAST_ZERO_TOLERANCE",
    "UnpackedWeight",
    "convert",
    "dequantize",
    "pack",
    "packed_shapes",
    "unpack",
    "zeros_width",
]


def __dir__() -> list[str]:
    return __all__
