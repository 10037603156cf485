"""Running trials: one child process per kernel, with a timeout, results cached on disk.

The caller's process never runs a kernel here: each is run by ``python -m awq_autoselect.trials.child`` (see
:mod:`.child`), so a kernel that poisons its CUDA context, aborts, segfaults or hangs costs only that process, and
the result says why (:class:`~.records.FailureCause`: the signal's name, the CUDA error, "did not finish within
N s").

Verdicts by cause: a failure that is the kernel's own (a crash, wrong numbers, an import or "no kernel image"
failure, an error it raises) makes it *broken*, and is run once more in a fresh child before the cache keeps it;
one that does not repeat is not cached. A failure that says nothing about the kernel (a timeout, out of memory, an
interruption, a resource limit) is *inconclusive*: never cached; an interruption or a process that could not start
is retried once.

Two processes that need the same trial at once: the first runs it while holding the entry's lock; the second waits
for it (at most twice the trial timeout and half a minute) and reads the result from the cache.

A first trial takes seconds to minutes (8 s for a tiny model on a CPU, 90 s for a 7B model with AutoAWQ's kernels
on an H200), so the kernels that run get a progress bar (tqdm's ``tqdm.auto``: a widget in Jupyter, text in a
terminal), on stderr. The rule (:func:`progress_enabled`): shown when stderr is a terminal or the code runs in a
notebook, never in logs, pipes or CI; ``show_progress=True``/``False`` (``progress=`` of the loader) or
``$AWQ_AUTOSELECT_PROGRESS`` (``1``/``0``) decides instead. Answers from the cache draw no bar.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from awq_autoselect import settings
from awq_autoselect.catalogue import Kernel
from awq_autoselect.checkpoint import CheckpointInfo
from awq_autoselect.errors import InvalidArgumentError

from .cache import MachineKey, QuantSignature, TrialCache, machine_key
from .child import CUDA_ERROR_HINTS, OOM_HINTS, RESULT_MARKER
from .records import FailureCause, LayerShape, TrialReport, TrialResult, TrialStatus

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

# Signals that end a child from outside, or for want of a resource: not the kernel's doing.
_INTERRUPTS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
_RESOURCE_SIGNALS = frozenset({signal.SIGKILL, signal.SIGXCPU, signal.SIGXFSZ})
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


def layer_shapes(info: CheckpointInfo) -> tuple[LayerShape, ...]:
    """The checkpoint's distinct quantized layer shapes, with how many layers have each."""
    counts: dict[tuple[int, int], int] = {}
    for layer in info.layers:
        key = (layer.in_features, layer.out_features)
        counts[key] = counts.get(key, 0) + 1
    return tuple(LayerShape(k, n, c) for (k, n), c in sorted(counts.items()))


def signature_of(info: CheckpointInfo) -> QuantSignature:
    """The checkpoint's quantization signature (the cache key's checkpoint part)."""
    return QuantSignature(
        bits=info.quant.bits, group_size=info.quant.group_size, zero_point=info.quant.zero_point, shapes=info.shapes()
    )


def _timeout(explicit: float | None) -> float:
    if explicit is None:
        return settings.current().trial_timeout_s
    value = float(explicit)
    if not (math.isfinite(value) and value > 0):
        from awq_autoselect.errors import InvalidArgumentError

        raise InvalidArgumentError(f"timeout_s={explicit!r}: expected a finite number of seconds above 0")
    return value


def _tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-500:]


class _Lookup:
    """The cache entries that answer for one checkpoint on one device at some row counts."""

    def __init__(self, info: CheckpointInfo, device: str, rows: Sequence[int], cache: TrialCache | None) -> None:
        self.store = cache if cache is not None else TrialCache()
        self.enabled = self.store.usable(info.path)  # a refused folder is neither read nor written
        self.checkpoint = info.path
        self.machine: MachineKey = machine_key(device)
        self.signature = signature_of(info)
        self.shapes = layer_shapes(info)
        self.wanted = frozenset(int(r) for r in rows)

    def answer(self, kernel: Kernel) -> TrialResult | None:
        """The cached result if it answers: broken, or measured at every wanted row count."""
        if not self.enabled:
            return None
        cached = self.store.get(self.machine, kernel, self.signature, self.shapes)
        if cached is not None and (not cached.ok or self.wanted <= cached.rows_measured()):
            return cached
        return None

    def keep(self, kernel: Kernel, result: TrialResult) -> None:
        """Cache ``result`` when it may be cached; an unwritable entry costs a re-run later, nothing more."""
        if not self.enabled or not result.cacheable:
            return
        try:
            self.store.put(self.machine, kernel, self.signature, result, self.checkpoint)
        except Exception as exc:
            logger.warning("could not cache the trial of %s: %s", kernel.value, exc)


def _signal_cause(number: int) -> tuple[FailureCause, str]:
    try:
        sig = signal.Signals(number)
    except ValueError:
        return FailureCause.CRASH, f"signal {number}"
    if sig in _INTERRUPTS:
        return FailureCause.INTERRUPTED, sig.name
    if sig in _RESOURCE_SIGNALS:
        hint = " (the system's out-of-memory killer, or a limit)" if sig is signal.SIGKILL else ""
        return FailureCause.RESOURCE, sig.name + hint
    return FailureCause.CRASH, sig.name


def _exit_cause(returncode: int, stderr: str) -> tuple[FailureCause, str]:
    """The cause and the words for a child that ended without a result."""
    lowered = stderr.lower()
    cuda = next((hint for hint in CUDA_ERROR_HINTS if hint in lowered), None)
    if returncode < 0:
        cause, name = _signal_cause(-returncode)
        what = f"the trial process was killed by {name}"
    else:
        cause, what = FailureCause.PROCESS, f"the trial process exited with status {returncode} without a result"
    if cause in (FailureCause.CRASH, FailureCause.PROCESS):
        if "no kernel image" in lowered:
            return FailureCause.NO_IMAGE, what + " after a CUDA error (no kernel image)"
        if cuda is not None:
            return FailureCause.CRASH, what + f" after a CUDA error ({cuda})"
        if cause is FailureCause.PROCESS and any(hint in lowered for hint in OOM_HINTS):
            return FailureCause.OOM, what + " (out of memory)"
    return cause, what


def _run_child(kernel: Kernel, job: dict[str, object], timeout_s: float) -> TrialResult:
    device = str(job["device"])
    started = time.perf_counter()
    command = [sys.executable, "-m", "awq_autoselect.trials.child"]
    try:
        done = subprocess.run(
            command, input=json.dumps(job), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return TrialResult.failed(
            kernel,
            device,
            FailureCause.TIMEOUT,
            f"the trial did not finish within {timeout_s:g} s (killed; not the kernel's fault as far as is known: "
            f"raise {TIMEOUT_ENV} or tune --timeout for a large model)",
            timeout_s,
        )
    except OSError as exc:
        return TrialResult.failed(
            kernel,
            device,
            FailureCause.RESOURCE,
            f"the trial process could not start: {exc}",
            time.perf_counter() - started,
        )
    seconds = time.perf_counter() - started
    marked = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if done.returncode == 0 and marked:
        from awq_autoselect._codec import from_json

        result = from_json(TrialResult, json.loads(marked[-1][len(RESULT_MARKER) :]))
        assert isinstance(result, TrialResult)
        return result
    stderr = done.stderr or ""
    cause, what = _exit_cause(done.returncode, stderr)
    return TrialResult.failed(kernel, device, cause, f"{what}: {_tail(stderr) or 'no output'}", seconds)


def _trial(kernel: Kernel, job: dict[str, object], timeout_s: float) -> TrialResult:
    """One kernel's verdict: a child process, and a second one to confirm a broken result or to retry one that was
    interrupted or could not start."""
    first = _run_child(kernel, job, timeout_s)
    if first.inconclusive and first.cause in _RETRIED:
        logger.info("trial of %s %s; trying once more: %s", kernel.value, _words(first), first.reason)
        retried = _run_child(kernel, job, timeout_s)
        note = f"retried after the first trial process {_words(first)}"
        first = dataclasses.replace(retried, reason="; ".join(x for x in (retried.reason, note) if x))
    if first.status is not TrialStatus.BROKEN:
        return first
    logger.info("trial of %s %s; confirming in a fresh process: %s", kernel.value, _words(first), first.reason)
    second = _run_child(kernel, job, timeout_s)
    if second.status is TrialStatus.BROKEN:
        return dataclasses.replace(first, confirmed=True, reason=first.reason + " (repeated in a second trial process)")
    outcome = "passed" if second.ok else f"{_words(second)}: {second.reason}"
    return dataclasses.replace(
        first,
        reason=f"{first.reason} (not repeated in a second trial process, which {outcome}; not cached: the next load "
        "tries it again)",
    )


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
        timeout_s: seconds one kernel's child process may take (default :data:`DEFAULT_TIMEOUT_S`, or
            ``$AWQ_AUTOSELECT_TRIAL_TIMEOUT``).
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
    lookup = _Lookup(info, device, rows, cache)
    wanted = sorted(lookup.wanted)
    results: list[TrialResult] = []
    from_cache: list[Kernel] = []
    answers = [lookup.answer(kernel) if use_cache else None for kernel in kernels]
    to_run = sum(answer is None for answer in answers)
    bar = _progress_bar(to_run, device) if show and to_run else None
    try:
        for index, (kernel, cached) in enumerate(zip(kernels, answers, strict=True), start=1):
            if cached is not None:
                results.append(cached)
                from_cache.append(kernel)
                if progress is not None:
                    progress(index, len(kernels), kernel, f"cached: {cached.status.value}")
                continue
            job: dict[str, object] = {
                "kernel": kernel.value,
                "device": device,
                "shapes": [[s.in_features, s.out_features, s.count] for s in lookup.shapes],
                "group_size": info.quant.group_size,
                "zero_point": info.quant.zero_point,
                "rows": wanted,
                "graph": graph,
                "tolerance": TOLERANCE,
            }

            def waiting(index: int = index, kernel: Kernel = kernel) -> None:
                logger.info("another process is running the trial of %s; waiting for its result", kernel.value)
                if progress is not None:
                    progress(index, len(kernels), kernel, "waiting for another process's trial")

            with _claimed(lookup, kernel, patience, waiting) as held:
                # Whoever held the entry may have measured it meanwhile: read again before measuring.
                meanwhile = lookup.answer(kernel) if use_cache and held else None
                if meanwhile is not None:
                    results.append(meanwhile)
                    from_cache.append(kernel)
                    if bar is not None:
                        bar.update(1)
                    if progress is not None:
                        progress(index, len(kernels), kernel, f"cached: {meanwhile.status.value}")
                    continue
                if progress is not None:
                    progress(index, len(kernels), kernel, "running")
                if bar is not None:
                    bar.set_postfix_str(kernel.value)
                result = dataclasses.replace(_trial(kernel, job, limit), measured_by=measured_by)
                logger.info("trial %s on %s: %s %s", kernel.value, device, result.status.value, result.reason)
                lookup.keep(kernel, result)
            results.append(result)
            if bar is not None:
                bar.update(1)
            if progress is not None:
                progress(index, len(kernels), kernel, result.status.value)
    finally:
        if bar is not None:
            bar.close()
    return TrialReport(device=device, results=tuple(results), from_cache=tuple(from_cache), checkpoint=str(info.path))


@contextlib.contextmanager
def _claimed(lookup: _Lookup, kernel: Kernel, wait_s: float, on_wait: Callable[[], None]) -> Iterator[bool]:
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


def cached_trials(info: CheckpointInfo, kernels: Sequence[Kernel], *, device: str, rows: Sequence[int]) -> TrialReport:
    """What the cache knows for ``kernels`` (no trial is run); kernels without an answer are left out.

    Raises:
        InvalidArgumentError: an ``AWQ_AUTOSELECT_*`` variable holds a bad value (:mod:`awq_autoselect.settings`).
    """
    lookup = _Lookup(info, device, rows, None)
    found = [cached for kernel in kernels if (cached := lookup.answer(kernel)) is not None]
    return TrialReport(
        device=device, results=tuple(found), from_cache=tuple(r.kernel for r in found), checkpoint=str(info.path)
    )
