"""Running trials: the cache first, then one child process per kernel, timed in alternating rounds, with a
timeout; results cached on disk.

The caller's process never runs a kernel here: each is run by ``python -m awq_autoselect.trials.child`` (see
:mod:`.child`), so a kernel that poisons its CUDA context, aborts, segfaults or hangs costs only that process, and
the result says why (:class:`~.records.FailureCause`: the signal's name, the CUDA error, "did not finish within
N s"). The kernels that run in one call are alive together and timed round by round in alternation
(:mod:`.interleave`).

Verdicts by cause: a failure that is the kernel's own (a crash, wrong numbers, an import or "no kernel image"
failure, an error it raises) makes it *broken*, and is run once more in a fresh child before the cache keeps it;
one that does not repeat is not cached. A failure that says nothing about the kernel (a timeout, out of memory, an
interruption, a resource limit) is *inconclusive*: never cached; an interruption or a process that could not start
is retried once.

Two processes that need the same trial at once: the first runs it while holding the entry's lock; the second waits
for it (at most twice the trial timeout and half a minute) and reads the result from the cache. A call holds the
locks of all the kernels it runs, taken in catalogue order by every process.

A first trial takes seconds to minutes (8 s for a tiny model's two CPU kernels, 90 s for a 7B model with AutoAWQ's
kernels on an H200), so the kernels that run get a progress bar (tqdm's ``tqdm.auto``: a widget in Jupyter, text in a
terminal), on stderr. The rule (:func:`progress_enabled`): shown when stderr is a terminal or the code runs in a
notebook, never in logs, pipes or CI; ``show_progress=True``/``False`` (``progress=`` of the loader) or
``$AWQ_AUTOSELECT_PROGRESS`` (``1``/``0``) decides instead. Answers from the cache draw no bar.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from awq_autoselect import settings
from awq_autoselect.catalogue import CATALOGUE, Kernel
from awq_autoselect.checkpoint import CheckpointInfo
from awq_autoselect.errors import InvalidArgumentError

from .cache import CacheLookup, TrialCache, cached_trials, layer_shapes, signature_of
from .interleave import run_group
from .records import FailureCause, TrialReport, TrialResult, TrialStatus

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "PROGRESS_ENV",
    "TIMEOUT_ENV",
    "TRIALS_ENV",
    "cached_trials",
    "layer_shapes",
    "progress_enabled",
    "run_trials",
    "signature_of",
    "trials_enabled",
]

logger = logging.getLogger(__name__)

#: Seconds one kernel's trial may take before its process is killed (the trial is then inconclusive).
DEFAULT_TIMEOUT_S = settings.DEFAULT_TRIAL_TIMEOUT_S
#: Environment variable overriding :data:`DEFAULT_TIMEOUT_S` (:mod:`awq_autoselect.settings`).
TIMEOUT_ENV = settings.TRIAL_TIMEOUT
#: Environment variable that turns the loader's automatic trials off (:mod:`awq_autoselect.settings`).
TRIALS_ENV = settings.TRIALS
#: Environment variable for the trials' progress bar (:mod:`awq_autoselect.settings`).
PROGRESS_ENV = settings.PROGRESS
#: The numeric check's tolerance: the loader's probe tolerance.
TOLERANCE = 0.02

# Causes worth one more child at once: the next one may well finish.
_RETRIED = frozenset({FailureCause.INTERRUPTED, FailureCause.RESOURCE})


def trials_enabled(explicit: bool | None = None) -> bool:
    """Whether automatic trials run: ``explicit`` when given, else :data:`TRIALS_ENV` (default on).

    Raises:
        InvalidArgumentError: an ``AWQ_AUTOSELECT_*`` variable holds a bad value (:mod:`awq_autoselect.settings`).
    """
    if explicit is not None:
        return explicit
    return settings.current().trials


def progress_enabled(explicit: bool | None = None) -> bool:
    """Whether trials draw a progress bar: ``explicit`` when given, else :data:`PROGRESS_ENV` when set, else
    whether stderr is a terminal or this is a Jupyter kernel.

    Raises:
        InvalidArgumentError: ``explicit`` is not a bool or None, or an ``AWQ_AUTOSELECT_*`` variable (this one
            among them) holds a bad value (:mod:`awq_autoselect.settings`).
    """
    if explicit is not None:
        if not isinstance(explicit, bool):
            raise InvalidArgumentError(f"progress={explicit!r}: expected True, False or None (automatic)")
        return explicit
    chosen = settings.current().progress
    return _interactive() if chosen is None else chosen


def _interactive() -> bool:
    """Whether a person watches stderr: a terminal, or a notebook (whose stderr is no terminal)."""
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):  # a replaced or closed stream
        pass
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)  # loaded where a notebook runs us
    shell = get_ipython() if callable(get_ipython) else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _progress_bar(total: int, device: str) -> _Bar | None:
    """A tqdm bar over ``total`` kernels on stderr, or None without tqdm."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        logger.debug("tqdm is not installed: the trials run without a progress bar")
        return None
    bar: _Bar = tqdm(total=total, desc=f"awq-autoselect trials on {device}", unit="kernel", file=sys.stderr)
    return bar


class _Bar(Protocol):
    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None: ...
    def update(self, n: float = 1) -> bool | None: ...
    def close(self) -> None: ...


def _timeout(explicit: float | None) -> float:
    if explicit is None:
        return settings.current().trial_timeout_s
    value = float(explicit)
    if not (math.isfinite(value) and value > 0):
        from awq_autoselect.errors import InvalidArgumentError

        raise InvalidArgumentError(f"timeout_s={explicit!r}: expected a finite number of seconds above 0")
    return value


def _verdicts(
    jobs: dict[Kernel, dict[str, object]], timeout_s: float, on_round: Callable[[int, int], None] | None
) -> dict[Kernel, TrialResult]:
    """The kernels' verdicts: their children run together (:func:`~.interleave.run_group`), then a second, fresh
    child for each broken result (to confirm it) and for each that was interrupted or could not start (to retry)."""
    results = run_group(jobs, timeout_s, on_round=on_round)
    retry = [k for k, r in results.items() if r.inconclusive and r.cause in _RETRIED]
    if retry:
        for kernel in retry:
            logger.info("trial of %s %s; trying once more: %s", kernel.value, _words(results[kernel]), results[kernel])
        again = run_group({k: jobs[k] for k in retry}, timeout_s)
        for kernel in retry:
            note = f"retried after the first trial process {_words(results[kernel])}"
            results[kernel] = dataclasses.replace(
                again[kernel], reason="; ".join(x for x in (again[kernel].reason, note) if x)
            )
    broken = [k for k, r in results.items() if r.status is TrialStatus.BROKEN]
    if not broken:
        return results
    for kernel in broken:
        first = results[kernel]
        logger.info("trial of %s %s; confirming in a fresh process: %s", kernel.value, _words(first), first.reason)
    second = run_group({k: jobs[k] for k in broken}, timeout_s)
    for kernel in broken:
        first, repeat = results[kernel], second[kernel]
        if repeat.status is TrialStatus.BROKEN:
            results[kernel] = dataclasses.replace(
                first, confirmed=True, reason=first.reason + " (repeated in a second trial process)"
            )
            continue
        outcome = "passed" if repeat.ok else f"{_words(repeat)}: {repeat.reason}"
        results[kernel] = dataclasses.replace(
            first,
            reason=f"{first.reason} (not repeated in a second trial process, which {outcome}; not cached: the next "
            "load tries it again)",
        )
    return results


def _words(result: TrialResult) -> str:
    return result.cause.describe() if result.cause is not None else result.status.value


def run_trials(
    info: CheckpointInfo,
    kernels: Sequence[Kernel],
    *,
    device: str,
    rows: Sequence[int],
    graph: bool = True,
    cache: TrialCache | None = None,
    use_cache: bool = True,
    timeout_s: float | None = None,
    progress: Callable[[int, int, Kernel, str], None] | None = None,
    show_progress: bool | None = None,
    wait_s: float | None = None,
    measured_by: str = "run_trials",
) -> TrialReport:
    """Trial every kernel of ``kernels`` on layers of ``info``'s shapes on ``device``, each in a child process.

    Args:
        info: the checkpoint (its shapes, bits, group size and zero point; its weights are not read).
        kernels: the kernels to try (normally the viable candidates of a selection).
        device: ``"cuda:N"`` or ``"cpu"``.
        rows: the row counts to time (1 for batch-1 decode, the batch size, the prefill rows).
        graph: also time the calls replayed from a CUDA graph (CUDA only).
        cache: where results are kept (default: the user cache folder); ``use_cache=False`` runs every trial
            again and overwrites what is cached. A folder that cannot be used (:meth:`TrialCache.usable`) is left
            alone, with one warning per process.
        timeout_s: seconds one kernel's child process may spend on its own setup and rounds (not on waiting for the
            others' rounds; default :data:`DEFAULT_TIMEOUT_S`, or ``$AWQ_AUTOSELECT_TRIAL_TIMEOUT``).
        progress: called as ``progress(index, total, kernel, status)`` before and after each kernel.
        show_progress: draw a progress bar over the kernels that run (not those the cache answers) on stderr;
            ``None``: :func:`progress_enabled` decides (a terminal or a notebook).
        wait_s: the longest wait for another process running the same trial (default: twice the timeout and 30 s,
            what that trial and its confirmation may take); then this process runs it.
        measured_by: what runs the trials, kept with the cached results (``cache list`` and messages show it).

    Returns:
        A :class:`~.records.TrialReport` with one result per kernel, in the order given.

    Raises:
        InvalidArgumentError: ``timeout_s`` is not a positive number of seconds, ``show_progress`` is not a bool or
            None, or an ``AWQ_AUTOSELECT_*`` variable holds a bad value (:mod:`awq_autoselect.settings`); checked
            before any trial.
    """
    limit = _timeout(timeout_s)
    show = progress_enabled(show_progress)
    patience = 2 * limit + 30.0 if wait_s is None else max(0.0, float(wait_s))
    lookup = CacheLookup(info, device, rows, cache)
    total = len(kernels)
    answers: dict[Kernel, TrialResult] = {}
    from_cache: set[Kernel] = set()
    for index, kernel in enumerate(kernels, start=1):
        cached = lookup.answer(kernel) if use_cache else None
        if cached is not None:
            answers[kernel] = cached
            from_cache.add(kernel)
            if progress is not None:
                progress(index, total, kernel, f"cached: {cached.status.value}")
    to_run = [k for k in dict.fromkeys(kernels) if k not in answers]
    position = {kernel: index for index, kernel in enumerate(kernels, start=1)}
    bar = _progress_bar(len(to_run), device) if show and to_run else None
    try:
        with contextlib.ExitStack() as held_while_running:
            running: list[Kernel] = []
            # Entries are claimed in one order by every process, so two processes never wait for each other in turn.
            for kernel in sorted(to_run, key=_CATALOGUE_ORDER.__getitem__):

                def waiting(kernel: Kernel = kernel) -> None:
                    logger.info("another process is running the trial of %s; waiting for its result", kernel.value)
                    if progress is not None:
                        progress(position[kernel], total, kernel, "waiting for another process's trial")

                entry = contextlib.ExitStack()
                held = entry.enter_context(_claimed(lookup, kernel, patience, waiting))
                # Whoever held the entry may have measured it meanwhile: read again before measuring.
                meanwhile = lookup.answer(kernel) if use_cache and held else None
                if meanwhile is None:
                    held_while_running.enter_context(entry)
                    running.append(kernel)
                    continue
                entry.close()
                answers[kernel] = meanwhile
                from_cache.add(kernel)
                if bar is not None:
                    bar.update(1)
                if progress is not None:
                    progress(position[kernel], total, kernel, f"cached: {meanwhile.status.value}")
            running = [k for k in to_run if k in running]  # the caller's order again
            for kernel in running:
                if progress is not None:
                    progress(position[kernel], total, kernel, "running")
            if running:
                jobs = {kernel: _job(kernel, device, lookup, info, graph) for kernel in running}

                def on_round(done: int, rounds: int) -> None:
                    if bar is not None:
                        bar.set_postfix_str(f"round {done}/{rounds}")

                if bar is not None:
                    bar.set_postfix_str(", ".join(k.value for k in running))
                measured = _verdicts(jobs, limit, on_round)
                for kernel in running:
                    result = dataclasses.replace(measured[kernel], measured_by=measured_by)
                    logger.info("trial %s on %s: %s %s", kernel.value, device, result.status.value, result.reason)
                    lookup.keep(kernel, result)
                    answers[kernel] = result
                    if bar is not None:
                        bar.update(1)
                    if progress is not None:
                        progress(position[kernel], total, kernel, result.status.value)
    finally:
        if bar is not None:
            bar.close()
    return TrialReport(
        device=device,
        results=tuple(answers[k] for k in dict.fromkeys(kernels)),
        from_cache=tuple(k for k in dict.fromkeys(kernels) if k in from_cache),
        checkpoint=str(info.path),
    )


_CATALOGUE_ORDER = {kernel: index for index, kernel in enumerate(CATALOGUE)}


def _job(kernel: Kernel, device: str, lookup: CacheLookup, info: CheckpointInfo, graph: bool) -> dict[str, object]:
    return {
        "kernel": kernel.value,
        "device": device,
        "shapes": [[s.in_features, s.out_features, s.count] for s in lookup.shapes],
        "group_size": info.quant.group_size,
        "zero_point": info.quant.zero_point,
        "rows": sorted(lookup.wanted),
        "graph": graph,
        "tolerance": TOLERANCE,
    }


@contextlib.contextmanager
def _claimed(lookup: CacheLookup, kernel: Kernel, wait_s: float, on_wait: Callable[[], None]) -> Iterator[bool]:
    """The entry's lock while its trial runs (see :meth:`TrialCache.claim`); nothing when the cache is refused."""
    if not lookup.enabled:
        yield False
        return
    with contextlib.ExitStack() as stack:
        try:
            held = stack.enter_context(
                lookup.store.claim(lookup.machine, kernel, lookup.signature, wait_s=wait_s, on_wait=on_wait)
            )
        except OSError as exc:  # the lock file cannot be made: measure without it
            logger.warning("could not lock the trial cache entry of %s: %s", kernel.value, exc)
            held = False
        yield held
