"""Triton, imported once for the project's Triton kernels (:mod:`.int4_dequant`, :mod:`.int4_gemv`).

A missing or broken triton only disables those kernels: ``triton`` and ``tl`` are then ``None`` and
:data:`IMPORT_ERROR` says why. Private module.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["IMPORT_ERROR", "interpreting", "tl", "triton"]

triton: Any = None
tl: Any = None
IMPORT_ERROR: str | None = None
try:
    import triton  # type: ignore[no-redef]
    import triton.language as tl  # type: ignore[no-redef]
except Exception as _exc:  # any broken triton install just means: no Triton kernels
    triton = None
    tl = None
    IMPORT_ERROR = f"triton does not import ({type(_exc).__name__}: {_exc})"


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter now (``TRITON_INTERPRET=1``, read when a kernel is
    decorated; the project's kernels are decorated lazily, once per mode)."""
    if triton is None:
        return False
    knobs = getattr(triton, "knobs", None)
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").lower() in {"1", "true", "on", "yes"}  # pragma: no cover
