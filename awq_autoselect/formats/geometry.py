"""What a layer of each AutoAWQ packed layout holds, as plain numbers: the facts every packer and reader shares.

The tensors' names, shapes and dtypes per layout (:func:`tensor_shapes`), the zero-point padding of GEMV and
GEMV_FAST (:func:`zeros_width`), the order AutoAWQ packs 8 columns into one int32 word (:data:`AWQ_ORDER`), and
the byte order the packers' byte views assume (:func:`require_little_endian`). The torch packers
(:mod:`.packing`), the numpy zero-point reader (:mod:`.qzeros`), synthetic checkpoints and the project's kernels
read them from here.

Invariant: importing this module imports neither torch nor numpy; nothing here touches a tensor.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

from awq_autoselect.catalogue import Layout
from awq_autoselect.errors import ConversionError, UnknownVersionError

__all__ = [
    "AWQ_ORDER",
    "AWQ_REVERSE_ORDER",
    "MAX_Q",
    "NIBBLES_PER_WORD",
    "SYMMETRIC_ZERO",
    "LayerGeometry",
    "layer_geometry",
    "parse_layout",
    "require_little_endian",
    "tensor_shapes",
    "zeros_width",
]


def __dir__() -> list[str]:
    return __all__


#: 4-bit values per int32 word (every layout's qweight and GEMM/GEMV's qzeros).
NIBBLES_PER_WORD = 8
#: The largest 4-bit value.
MAX_Q = 15
#: The zero point of a symmetric weight (``UnpackedWeight.zeros is None``): Marlin, which stores no zero points,
#: subtracts 8 from every stored 4-bit value.
SYMMETRIC_ZERO = 8
#: AutoAWQ's GEMM packing order: nibble ``i`` (bits ``4i .. 4i+3``) of word ``c`` holds column
#: ``8c + AWQ_ORDER[i]`` (AWQ:awq/utils/packing_utils.py ``AWQ_ORDER``).
AWQ_ORDER: tuple[int, ...] = (0, 2, 4, 6, 1, 3, 5, 7)
#: Its inverse: column ``8c + j`` is nibble ``AWQ_REVERSE_ORDER[j]`` of word ``c`` (AutoAWQ's ``AWQ_REVERSE_ORDER``).
AWQ_REVERSE_ORDER: tuple[int, ...] = tuple(AWQ_ORDER.index(column) for column in range(NIBBLES_PER_WORD))


def require_little_endian(what: str) -> None:
    """Refuse a big-endian host: packed words are split into bytes (and assembled from them) with tensor views,
    which see the host's byte order, while AutoAWQ's layouts are defined on little-endian words.

    Raises:
        ConversionError: the host is big-endian; ``what`` names what could not be packed or read.
    """
    if sys.byteorder != "little":  # pragma: no cover - no big-endian machine runs this
        raise ConversionError(f"{what} can only be packed or unpacked on a little-endian host")


class LayerGeometry(NamedTuple):
    """One layer's dimensions in one layout, checked by :func:`layer_geometry`."""

    layout: Layout
    in_features: int
    out_features: int
    group_size: int  # effective: in_features for per-channel
    n_groups: int
    zeros_width: int  # int32 words of qzeros per row in GEMV; GEMV/GEMV_FAST pad groups to zeros_width * 8; else 0


def zeros_width(in_features: int, group_size: int) -> int:
    """Int32 words per output row that AutoAWQ's GEMV and GEMV_FAST layouts reserve for zero points.

    The group count rounded up to whole words of 8, then up to a multiple of 1 word (group size 128 or more),
    2 (64) or 4 (32); ``scales`` (and GEMV_FAST's ``qzeros``) are padded to ``zeros_width * 8`` groups. This is
    AutoAWQ 0.2.9's ``calculate_zeros_width``, with ``group_size=-1`` read as ``in_features``.

    Raises:
        ConversionError: a group size these layouts cannot hold (anything but 32, 64 or 128 and more), or one
            that does not divide ``in_features``.
    """
    group = in_features if group_size == -1 else group_size
    if group <= 0 or in_features <= 0 or in_features % group:
        raise ConversionError(
            f"group_size {group_size} does not divide in_features {in_features}: expected a positive divisor, "
            "or -1 for one group per row"
        )
    if group >= 128:
        multiple = 1
    elif group == 64:
        multiple = 2
    elif group == 32:
        multiple = 4
    else:
        raise ConversionError(
            f"group_size {group} cannot be held by AutoAWQ's GEMV/GEMV_FAST layouts (they take 32, 64 or >= 128); "
            "use the GEMM layout for this layer"
        )
    words = -(-(in_features // group) // NIBBLES_PER_WORD)
    return -(-words // multiple) * multiple


def parse_layout(value: Layout | str) -> Layout:
    """The :class:`Layout` for a layout or its name (case-insensitive, ``-`` or ``_``, ``gemvfast`` too).

    Raises:
        UnknownVersionError: ``value`` names no AutoAWQ layout.
    """
    if isinstance(value, Layout):
        return value
    key = str(value).strip().lower().replace("-", "_")
    key = {"gemvfast": "gemv_fast"}.get(key, key)
    try:
        return Layout(key)
    except ValueError:
        known = ", ".join(v.value for v in Layout)
        raise UnknownVersionError(f"unknown AWQ packed layout {value!r}: expected one of {known}") from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def layer_geometry(layout: Layout | str, in_features: int, out_features: int, group_size: int) -> LayerGeometry:
    """Check that ``layout`` can hold a ``[out_features, in_features]`` layer of ``group_size`` and describe it.

    Raises:
        UnknownVersionError: ``layout`` is not an AutoAWQ layout name.
        ConversionError: a dimension that is not a positive int, a group size that does not divide
            ``in_features``, or a shape or group size the layout cannot hold (the message says why).
    """
    kind = parse_layout(layout)
    name = kind.value.upper()
    for label, value in (("in_features", in_features), ("out_features", out_features)):
        if not _is_int(value) or value <= 0:
            raise ConversionError(f"{name}: {label} must be a positive int, got {value!r}")
    if not _is_int(group_size):
        raise ConversionError(f"{name}: group_size must be an int (-1 for per-channel), got {group_size!r}")
    group = in_features if group_size == -1 else group_size
    if group <= 0 or in_features % group:
        raise ConversionError(
            f"{name}: group_size {group_size} does not divide in_features {in_features}: expected a positive "
            "divisor, or -1 for one group per row"
        )

    def need(multiple: int, label: str, value: int, why: str) -> None:
        if value % multiple:
            raise ConversionError(
                f"{name} layout needs {label} to be a multiple of {multiple} ({why}), got {value}; "
                "use the GEMM layout for this layer"
            )

    # AutoAWQ's modules all assert out_features % 8 == 0 (8 nibbles per int32), whatever the layout.
    need(NIBBLES_PER_WORD, "out_features", out_features, "AutoAWQ packs 8 weights per int32")
    width = 0
    if kind is Layout.GEMV:
        need(NIBBLES_PER_WORD, "in_features", in_features, "8 inputs per int32")
        width = zeros_width(in_features, group)
    elif kind is Layout.GEMV_FAST:
        need(64, "in_features", in_features, "weights are interleaved in 64-input blocks")
        width = zeros_width(in_features, group)
    elif kind is Layout.MARLIN:
        need(128, "in_features", in_features, "the Marlin kernel's tiles are 128 inputs deep")
        need(256, "out_features", out_features, "the Marlin kernel's tiles are 256 outputs wide")
        if group not in (128, in_features):
            raise ConversionError(
                f"MARLIN layout supports group_size 128 or -1 (per-channel), got {group_size} for in_features "
                f"{in_features}: the Marlin kernel has no other group size; use the GEMM layout"
            )
    return LayerGeometry(kind, in_features, out_features, group, in_features // group, width)


def tensor_shapes(geo: LayerGeometry) -> dict[str, tuple[tuple[int, ...], str]]:
    """The tensors a module of ``geo.layout`` holds for the layer: name -> (shape, dtype name), in the order
    AutoAWQ 0.2.9's ``WQLinear_*`` registers them (bias and Marlin's scratch ``workspace`` excluded). The dtype
    names are torch's (``"int32"``, ``"int16"``, ``"float16"``)."""
    k, n, g, zw = geo.in_features, geo.out_features, geo.n_groups, geo.zeros_width
    per_word = NIBBLES_PER_WORD
    if geo.layout is Layout.GEMM:
        return {
            "qweight": ((k, n // per_word), "int32"),
            "qzeros": ((g, n // per_word), "int32"),
            "scales": ((g, n), "float16"),
        }
    if geo.layout is Layout.GEMV:
        return {
            "qweight": ((n, k // per_word), "int32"),
            "qzeros": ((n, zw), "int32"),
            "scales": ((n, zw * per_word), "float16"),
        }
    if geo.layout is Layout.GEMV_FAST:
        # four rows per int16 row: each int16 holds 4 values of a 4-row x 64-input block
        return {
            "qweight": ((n // 4, k), "int16"),
            "qzeros": ((zw * per_word, n), "float16"),
            "scales": ((zw * per_word, n), "float16"),
        }
    return {"qweight": ((k // 16, n * 2), "int32"), "scales": ((g, n), "float16")}
