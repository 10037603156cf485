"""What a model will be asked to do: a :class:`Workload` (batch size, prompt and output lengths, decode mode), and
the :class:`Regime` it spends its time in.

Imports nothing heavy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import InvalidArgumentError
from .modes import MEASURED

__all__ = ["BATCH_THRESHOLD", "DECODE_MODES", "MAX_PREFILL_ROWS", "Regime", "Workload"]

#: How decode steps can run, as a workload names them: replayed from a captured CUDA graph, or one Python call per
#: layer (:data:`awq_autoselect.modes.MEASURED`).
DECODE_MODES = tuple(mode.value for mode in MEASURED)
#: Prefill row counts are measured up to this many rows.
MAX_PREFILL_ROWS = 4096

#: From this batch size on, the workload is batched throughput (:attr:`Regime.BATCH`). AutoAWQ's GEMV switches
#: to its GEMM-like kernel above 8 rows, GEMV_fast's decode kernel only runs batches below 8, and AutoAWQ's
#: README marks GEMV "avoid" at batch 8 (docs/selection.md).
BATCH_THRESHOLD = 8


class Regime(str, enum.Enum):
    """What a :class:`Workload` spends its time on; the catalogue's published priorities are given per regime."""

    DECODE = "decode"  # single query (batch < 8), decode-dominated: few rows per matmul
    PREFILL = "prefill"  # single query whose prompt outweighs its output: many rows once, then few
    BATCH = "batch"  # batched throughput (batch >= 8): many rows every step

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Workload:
    """What the model will be asked to do: how many sequences at once, how long the prompts and the outputs, and
    how decode steps run (``graph``: replayed from a CUDA graph, the default fast path on CUDA; ``eager``).

    With measured trials, selection ranks by the modeled time of such a request (:attr:`prefill_rows` once, then
    ``new_tokens`` decode steps of :attr:`decode_rows` in the :attr:`decode` mode). Without them, only
    :attr:`regime` steers selection: ``batch`` from :data:`BATCH_THRESHOLD` sequences on, else ``prefill`` when the
    prompt is longer than the output, else ``decode``.

    Raises:
        InvalidArgumentError: ``batch_size`` or ``prompt_tokens`` below 1, or ``new_tokens`` below 0.
    """

    batch_size: int = 1
    prompt_tokens: int = 128
    new_tokens: int = 128
    decode: str = "graph"

    def __post_init__(self) -> None:
        for name, minimum in (("batch_size", 1), ("prompt_tokens", 1), ("new_tokens", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise InvalidArgumentError(f"workload {name}={value!r}: expected an integer >= {minimum}")
        if self.decode not in DECODE_MODES:
            raise InvalidArgumentError(
                f"workload decode={self.decode!r}: expected one of {', '.join(DECODE_MODES)} (how decode steps run)"
            )

    @property
    def decode_rows(self) -> int:
        """Rows of every matmul in a decode step: one per sequence."""
        return self.batch_size

    @property
    def prefill_rows(self) -> int:
        """Rows of the prefill's matmuls (capped at :data:`MAX_PREFILL_ROWS`: longer prompts scale alike)."""
        return min(self.batch_size * self.prompt_tokens, MAX_PREFILL_ROWS)

    @property
    def regime(self) -> Regime:
        """The regime the workload spends its time in (see the class docstring)."""
        if self.batch_size >= BATCH_THRESHOLD:
            return Regime.BATCH
        if self.prompt_tokens > self.new_tokens:
            return Regime.PREFILL
        return Regime.DECODE

    def describe(self) -> str:
        """``"decode (batch 1, 128 prompt + 128 new tokens, graph decode)"``."""
        sizes = f"batch {self.batch_size}, {self.prompt_tokens} prompt + {self.new_tokens} new tokens"
        return f"{self.regime.value} ({sizes}, {self.decode} decode)"

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict, with the derived regime."""
        return {
            "batch_size": self.batch_size,
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "decode": self.decode,
            "regime": self.regime.value,
        }
