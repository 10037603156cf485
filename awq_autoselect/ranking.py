"""The measured ranking: a workload's request modeled from a trial, with its spread, and an order of measured
candidates in which a margin within the noise is a tie, broken by the published rank.

A trial times each layer shape in rounds (:mod:`awq_autoselect.trials`). One request of a :class:`Workload` is
modeled as the prefill (``prefill_rows`` rows, eagerly) plus ``new_tokens`` decode steps (``decode_rows`` rows, in
the workload's decode mode where the kernel could be captured), each the sum over the checkpoint's layers of the
time per call of the layer's shape. :class:`RequestTime` holds that time (from the rounds' medians) and its bounds
(the same sum over the fastest and over the slowest round of every shape, so the spread is never under-stated).

Two candidates' times differ *within noise* when the margin is not larger than the mean of their spreads
(:func:`within_noise`: their ranges overlap, for ranges around their times). :func:`order` walks the measured
candidates fastest first: at each place, every candidate within noise of the fastest one left is tied with it, and
of those the one with the best published rank takes the place. A winner is declared by measurement only when its
margin exceeds the noise.

Plain data in, plain data out: nothing here imports torch, runs a trial or reads the cache.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .trials.records import DecodeMode, TrialResult
from .workload import Workload

__all__ = ["RequestTime", "order", "request_time", "within_noise"]

T = TypeVar("T", bound=Hashable)


@dataclass(frozen=True)
class RequestTime:
    """A kernel's modeled time for one request of a workload, from its trial.

    Attributes:
        ms: milliseconds of the request from the rounds' medians.
        low: the same from every shape's fastest round.
        high: the same from every shape's slowest round.
        step_ms: one decode step's milliseconds (``decode_rows`` rows, in ``mode``).
        prefill_ms: the prefill's milliseconds (``prefill_rows`` rows, eagerly).
        mode: the decode mode ``step_ms`` is for (eager when the kernel could not be captured in a graph).
    """

    ms: float
    low: float
    high: float
    step_ms: float
    prefill_ms: float
    mode: DecodeMode

    @property
    def spread(self) -> float:
        """Milliseconds between the request from the slowest rounds and from the fastest."""
        return self.high - self.low


def request_time(result: TrialResult, work: Workload, device: str) -> RequestTime | None:
    """``result``'s modeled request of ``work`` on ``device`` (CUDA graph timings for ``decode="graph"`` on CUDA,
    eager ones elsewhere); ``None`` when it was not measured at the workload's decode rows."""
    wanted = DecodeMode(work.decode) if device == "cuda" else DecodeMode.EAGER
    step = result.step_ms(work.decode_rows, wanted)
    if step is None:
        return None
    step_ms, mode = step
    step_bounds = result.layers_bounds_ms(work.decode_rows, mode) or (step_ms, step_ms)
    prefill = result.layers_ms(work.prefill_rows, DecodeMode.EAGER)
    prefill_bounds = result.layers_bounds_ms(work.prefill_rows, DecodeMode.EAGER)
    prefill_ms = prefill or 0.0
    low_prefill, high_prefill = prefill_bounds or (prefill_ms, prefill_ms)
    n = work.new_tokens
    return RequestTime(
        ms=prefill_ms + n * step_ms,
        low=low_prefill + n * step_bounds[0],
        high=high_prefill + n * step_bounds[1],
        step_ms=step_ms,
        prefill_ms=prefill_ms,
        mode=mode,
    )


def within_noise(a: RequestTime, b: RequestTime) -> bool:
    """Whether ``a`` and ``b`` differ by no more than the mean of their spreads (a tie)."""
    return abs(a.ms - b.ms) <= (a.spread + b.spread) / 2


def order(
    items: Sequence[T], time: Callable[[T], RequestTime], published: Callable[[T], tuple[object, ...]]
) -> tuple[list[T], dict[T, tuple[T, ...]]]:
    """``items`` best first, and for each the items it was tied with (within noise) when a place was decided.

    At each place the fastest item left and every item within noise of it compete; the one whose ``published`` key
    is smallest takes the place (the fastest, when it stands alone).
    """
    left = sorted(items, key=lambda item: (time(item).ms, published(item)))
    placed: list[T] = []
    ties: dict[T, set[T]] = {item: set() for item in items}
    while left:
        fastest = time(left[0])
        group = [item for item in left if within_noise(fastest, time(item))]
        best = min(group, key=published)
        if len(group) > 1:
            for item in group:
                ties[item].update(other for other in group if other != item)
        placed.append(best)
        left.remove(best)
    rank = {item: index for index, item in enumerate(placed)}
    return placed, {item: tuple(sorted(mates, key=rank.__getitem__)) for item, mates in ties.items()}
