"""The decode modes: one vocabulary for every way this project runs decode steps, and the subset each API takes.

A trial measures a layer called directly and replayed from a CUDA graph, so a workload ranks kernels for
``eager`` or ``graph`` decode (:data:`MEASURED`); ``load_quantized_auto(fast_decode=...)`` installs ``compile``,
``graph`` or ``eager`` steps (:data:`FAST_DECODE`); a benchmark times those and two whole-``generate()`` recipes
(:data:`BENCHMARKED`). Imports nothing but the errors.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from .errors import InvalidArgumentError

__all__ = ["BENCHMARKED", "FAST_DECODE", "MEASURED", "DecodeMode", "parse_decode_modes"]


class DecodeMode(str, enum.Enum):
    """How decode steps run."""

    EAGER = "eager"  # one Python call per layer, every step
    GRAPH = "graph"  # the step captured once as a CUDA graph, replayed
    COMPILE = "compile"  # the step compiled by torch.compile, captured and replayed
    GENERATE = "generate"  # the model's own generate(): what load_quantized_auto installed (a benchmark's recipe)
    HF_STATIC = "hf-static"  # transformers' generate with its static cache and compile (a benchmark's reference)

    def __str__(self) -> str:
        return self.value


#: What trials measure and a :class:`~awq_autoselect.workload.Workload` ranks kernels for.
MEASURED = (DecodeMode.GRAPH, DecodeMode.EAGER)
#: What ``load_quantized_auto(fast_decode=...)`` installs on ``generate()``.
FAST_DECODE = (DecodeMode.COMPILE, DecodeMode.GRAPH, DecodeMode.EAGER)
#: What ``benchmark_versions(decode=...)`` and ``awq-autoselect bench --decode`` time.
BENCHMARKED = (DecodeMode.EAGER, DecodeMode.GRAPH, DecodeMode.COMPILE, DecodeMode.GENERATE, DecodeMode.HF_STATIC)


def parse_decode_modes(decode: Sequence[str] | str, allowed: Sequence[DecodeMode] = BENCHMARKED) -> tuple[str, ...]:
    """``"eager, graph"`` or ``["eager", "graph"]`` -> ``("eager", "graph")``, in order, without repeats.

    Raises:
        InvalidArgumentError: no mode, or one that is not in ``allowed`` (default :data:`BENCHMARKED`).
    """
    names = [mode.value for mode in allowed]
    items = [d.strip() for d in decode.split(",")] if isinstance(decode, str) else [str(d).strip() for d in decode]
    modes = tuple(dict.fromkeys(d for d in items if d))
    unknown = [d for d in modes if d not in names]
    if not modes or unknown:
        raise InvalidArgumentError(
            f"decode={decode!r}: expected one or more of {', '.join(names)}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    return modes
