"""The loader's arguments, checked before any work: before the checkpoint's weights are read and before any trial.

A bad value is an :class:`~awq_autoselect.errors.InvalidArgumentError` that names the argument, says what was
expected and how to fix it. Without these checks some bad values failed only after minutes of trials and a full
load (an unknown ``fast_decode``), and others were used silently (a string ``torch_dtype`` went to AutoAWQ, a NaN
``probe_tolerance`` made every probe fail).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from awq_autoselect.decode.fast import DECODE_MODES
from awq_autoselect.errors import InvalidArgumentError

from .probe import DEFAULT_PROBE_TOLERANCE

if TYPE_CHECKING:
    import torch

__all__ = ["FLOAT_DTYPES", "check_arguments", "float_dtype"]

#: The activation dtypes a model can be loaded in (every kernel computes in one of these).
FLOAT_DTYPES = ("float16", "bfloat16", "float32")


def check_arguments(*, probe_tolerance: object, max_seq_len: object, fast_decode: object) -> None:
    """Check the arguments that need neither torch nor the checkpoint.

    Raises:
        InvalidArgumentError: ``probe_tolerance`` is not a number >= 0 (NaN included), ``max_seq_len`` is not a
            whole number >= 1 or None, or ``fast_decode`` is none of its values.
    """
    if isinstance(probe_tolerance, bool) or not isinstance(probe_tolerance, (int, float)) or not probe_tolerance >= 0:
        raise InvalidArgumentError(
            f"probe_tolerance={probe_tolerance!r}: expected a relative error >= 0 (default "
            f"{DEFAULT_PROBE_TOLERANCE}); pass probe=False to load without the numeric check"
        )
    if max_seq_len is not None and (
        isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int) or max_seq_len < 1
    ):
        raise InvalidArgumentError(
            f"max_seq_len={max_seq_len!r}: expected a number of tokens >= 1, or None for AutoAWQ's default"
        )
    if not (fast_decode is None or isinstance(fast_decode, bool) or fast_decode in DECODE_MODES):
        modes = ", ".join(repr(mode) for mode in DECODE_MODES)
        raise InvalidArgumentError(
            f"fast_decode={fast_decode!r}: expected {modes}, True or None (the default for the kernel and "
            "device), or False (transformers' own generate)"
        )


def float_dtype(dtype: object, torch_dtype: object) -> torch.dtype | None:
    """The activation dtype asked for with ``dtype`` (transformers 5's name) or its alias ``torch_dtype``.

    Returns None when neither is given (the kernel's default then applies).

    Raises:
        InvalidArgumentError: a string or a dtype other than float16, bfloat16 or float32, or the two arguments
            given with different values.
    """
    import torch

    allowed = tuple(getattr(torch, name) for name in FLOAT_DTYPES)
    for name, value in (("dtype", dtype), ("torch_dtype", torch_dtype)):
        if value is None:
            continue
        if isinstance(value, str):
            fix = (
                "leave it out for the kernel's default"
                if value == "auto"
                else f"pass torch.{value if value in FLOAT_DTYPES else 'float16'}"
            )
            raise InvalidArgumentError(f"{name}={value!r}: expected a torch.dtype, not a string: {fix}")
        if value not in allowed:
            raise InvalidArgumentError(
                f"{name}={value!r}: expected the floating-point dtype of the model's activations: torch.float16, "
                "torch.bfloat16 or torch.float32"
            )
    if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
        raise InvalidArgumentError(
            f"dtype={dtype} and torch_dtype={torch_dtype} disagree: pass only dtype (torch_dtype is its older name)"
        )
    chosen = dtype if dtype is not None else torch_dtype
    assert chosen is None or isinstance(chosen, torch.dtype)
    return chosen
