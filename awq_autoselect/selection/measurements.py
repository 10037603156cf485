"""Measurements, taken as data: the trials a selection ranks by (given, or what the trial cache holds for this
checkpoint on this machine), applied to the judged candidates.

A kernel measured broken is rejected with its trial's reason; one that ran gets the modeled time of the workload's
request (:func:`awq_autoselect.ranking.request_time`), which :mod:`.select` ranks by; an inconclusive trial ranks
every candidate of the call by its published score.

Invariant: this module never starts a trial (:func:`awq_autoselect.planning.plan` does, then selects again); it
reads the trial cache, and a cache that cannot be read is no measurement, never an error (but a bad
``AWQ_AUTOSELECT_*`` value is). Imports neither torch nor awq.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import NamedTuple

from awq_autoselect.catalogue import Kernel
from awq_autoselect.checkpoint import CheckpointInfo
from awq_autoselect.environment import Environment
from awq_autoselect.errors import InvalidArgumentError
from awq_autoselect.ranking import RequestTime, request_time
from awq_autoselect.trials.records import TrialReport
from awq_autoselect.workload import Workload

from .records import Candidate

__all__ = ["Measured", "apply_measurements"]


def __dir__() -> list[str]:
    return __all__


logger = logging.getLogger(__name__)


class Measured(NamedTuple):
    """The candidates with their trials applied, the modeled request time of each kernel that ran (what the
    ranking orders by), and notes for the selection."""

    candidates: list[Candidate]
    times: dict[Kernel, RequestTime]
    notes: tuple[str, ...]


def apply_measurements(
    candidates: list[Candidate],
    measurements: TrialReport | bool | None,
    info: CheckpointInfo | None,
    *,
    device: str,
    index: int | None,
    work: Workload,
    env: Environment,
) -> Measured:
    """``candidates`` with the trials to rank by: ``measurements`` when a report, none when ``False``, else what
    the trial cache holds (this machine only: never for a planned environment or without a checkpoint directory).

    Raises:
        InvalidArgumentError: an ``AWQ_AUTOSELECT_*`` variable read by the cache lookup holds a bad value.
    """
    report = _lookup(measurements, info, candidates, device=device, index=index, work=work, env=env)
    if report is None:
        return Measured(candidates, {}, ())
    # A trial that could not finish (timeout, memory) measured nothing: ranking the others by their times would
    # put every measured kernel before it, however slow. This call ranks by the published scores instead.
    unsure = [c.kernel.value for c in candidates if c.viable and c.kernel in report.inconclusive]
    applied = [_apply(c, report, work, device, timings=not unsure) for c in candidates]
    times = {candidate.kernel: timed for candidate, timed in applied if timed is not None}
    notes: tuple[str, ...] = ()
    if unsure:
        notes = (
            f"the trials of {', '.join(unsure)} were inconclusive (see their notes): ranked by published scores "
            "for this call; nothing of that was cached",
        )
    elif times:
        mode = work.decode if device == "cuda" else "eager"
        notes = (f"{len(times)} candidate(s) ranked by trials measured on this machine ({mode} decode)",)
    return Measured([candidate for candidate, _ in applied], times, notes)


def _apply(
    candidate: Candidate, report: TrialReport, work: Workload, device: str, *, timings: bool = True
) -> tuple[Candidate, RequestTime | None]:
    """A candidate with its trial: rejected with the trial's reason when broken (saying so when the verdict came
    from the cache); with its modeled request time when it ran (unless ``timings`` is off: then ranked by its
    published score); left as it is, with a note, when its trial was inconclusive."""
    result = report.result(candidate.kernel)
    if result is None or not candidate.viable:
        return candidate, None
    if result.inconclusive:
        note = f"its trial was inconclusive, ranked by its published score for this call (not cached): {result.reason}"
        return replace(candidate, notes=(*candidate.notes, note)), None
    if not result.ok:
        cached = report.cache_note(candidate.kernel)
        reason = f"measured broken on this machine (trial in a child process): {result.reason}"
        return replace(candidate, viable=False, reasons=(reason + (f" {cached}" if cached else ""),), notes=()), None
    timed = request_time(result, work, device) if timings else None
    if timed is None:
        return candidate, None
    text = (
        f"{timed.step_ms:.3f} ms per decode step ({work.decode_rows} row(s), {timed.mode.value}) x {work.new_tokens} "
        f"+ {timed.prefill_ms:.2f} ms prefill ({work.prefill_rows} rows) for the quantized layers, "
        f"{timed.low:.2f}-{timed.high:.2f} ms over the rounds; " + result.layer_times(work.decode_rows, timed.mode)
    )
    if result.host is not None:
        text += f"; host while measuring: {result.host.describe()}"
    cached = report.cache_note(candidate.kernel)
    if cached:
        text += f" {cached}"
    notes = candidate.notes + ((f"trial note: {result.reason}",) if result.reason else ())
    if result.thin:
        notes += (f"thin measurement: {result.thin}",)
    return replace(candidate, measurement=text, notes=notes), timed


def _lookup(
    measurements: TrialReport | bool | None,
    info: CheckpointInfo | None,
    candidates: Sequence[Candidate],
    *,
    device: str,
    index: int | None,
    work: Workload,
    env: Environment,
) -> TrialReport | None:
    """The trials to rank by: given, looked up in the cache (this machine only), or none."""
    if isinstance(measurements, TrialReport):
        return measurements
    if measurements is False or info is None or not info.layers or env.assumed or device not in ("cuda", "cpu"):
        return None
    from awq_autoselect.trials.cache import cached_trials

    viable = [c.kernel for c in candidates if c.viable]
    where = "cpu" if device == "cpu" else f"cuda:{index or 0}"
    try:
        return cached_trials(info, viable, device=where, rows=(work.decode_rows, work.prefill_rows))
    except InvalidArgumentError:  # a bad AWQ_AUTOSELECT_* value: refused, never read as "no cache"
        raise
    except Exception as exc:  # the cache is an optimisation: a problem with it must not stop a selection
        logger.warning("trial cache lookup failed: %s", exc)
        return None
