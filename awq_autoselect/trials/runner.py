"""Running trials: one child process per kernel, with a timeout, results cached on disk.

The caller's process never runs a kernel here: each is run by ``python -m awq_autoselect.trials.child`` (see
:mod:`.child`), so a kernel that poisons its CUDA context, aborts, segfaults or hangs is recorded as *broken* with
the reason (the signal's name, the CUDA error, "timed out after N s") and the caller goes on.

A first trial takes seconds to minutes (8 s for a tiny model on a CPU, 90 s for a 7B model with AutoAWQ's kernels
on an H200), so the kernels that run get a progress bar (tqdm's ``tqdm.auto``: a widget in Jupyter, text in a
terminal), on stderr. The rule (:func:`progress_enabled`): shown when stderr is a terminal or the code runs in a
notebook, never in logs, pipes or CI; ``show_progress=True``/``False`` (``progress=`` of the loader) or
``$AWQ_AUTOSELECT_PROGRESS`` (``1``/``0``) decides instead. Answers from the cache draw no bar.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from awq_autoselect.catalogue import Kernel
from awq_autoselect.checkpoint import CheckpointInfo
from awq_autoselect.errors import InvalidArgumentError

from .cache import MachineKey, QuantSignature, TrialCache, machine_key
from .child import RESULT_MARKER
from .records import LayerShape, TrialReport, TrialResult

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

#: Seconds one kernel's trial may take before its process is killed and the kernel marked broken.
DEFAULT_TIMEOUT_S = 300.0
#: Environment variable overriding :data:`DEFAULT_TIMEOUT_S`.
TIMEOUT_ENV = "AWQ_AUTOSELECT_TRIAL_TIMEOUT"
#: Environment variable that turns the loader's automatic trials off (``0``, ``false``, ``no``, ``off``).
TRIALS_ENV = "AWQ_AUTOSELECT_TRIALS"
#: Environment variable for the trials' progress bar: ``1`` always, ``0`` never, unset: on a terminal or notebook.
PROGRESS_ENV = "AWQ_AUTOSELECT_PROGRESS"
#: The numeric check's tolerance: the loader's probe tolerance.
TOLERANCE = 0.02

_OFF = frozenset({"0", "false", "no", "off"})
_ON = frozenset({"1", "true", "yes", "on"})

_CUDA_ERRORS = ("illegal memory access", "CUDA error", "device-side assert", "misaligned address", "no kernel image")


def trials_enabled(explicit: bool | None = None) -> bool:
    """Whether automatic trials run: ``explicit`` when given, else not turned off by :data:`TRIALS_ENV`."""
    if explicit is not None:
        return explicit
    return os.environ.get(TRIALS_ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


def progress_enabled(explicit: bool | None = None) -> bool:
    """Whether trials draw a progress bar: ``explicit`` when given, else :data:`PROGRESS_ENV` when set, else
    whether stderr is a terminal or this is a Jupyter kernel.

    This is the one place :data:`PROGRESS_ENV` is read.

    Raises:
        InvalidArgumentError: ``explicit`` is not a bool or None, or :data:`PROGRESS_ENV` is set to something
            other than ``1``/``0`` (or ``true``/``false``, ``yes``/``no``, ``on``/``off``).
    """
    if explicit is not None:
        if not isinstance(explicit, bool):
            raise InvalidArgumentError(f"progress={explicit!r}: expected True, False or None (automatic)")
        return explicit
    raw = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if raw in _OFF:
        return False
    if raw in _ON:
        return True
    if raw:
        raise InvalidArgumentError(
            f"{PROGRESS_ENV}={raw!r}: expected 1 (always draw the trials' progress bar) or 0 (never); unset it to "
            "draw the bar on a terminal or in a notebook only"
        )
    return _interactive()


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
    if explicit is not None:
        return explicit
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        return float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        logger.warning("%s=%r is not a number of seconds; using %g", TIMEOUT_ENV, raw, DEFAULT_TIMEOUT_S)
        return DEFAULT_TIMEOUT_S


def _tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-500:]


class _Lookup:
    """The cache entries that answer for one checkpoint on one device at some row counts."""

    def __init__(self, info: CheckpointInfo, device: str, rows: Sequence[int], cache: TrialCache | None) -> None:
        self.store = cache if cache is not None else TrialCache()
        self.machine: MachineKey = machine_key(device)
        self.signature = signature_of(info)
        self.shapes = layer_shapes(info)
        self.wanted = frozenset(int(r) for r in rows)

    def answer(self, kernel: Kernel) -> TrialResult | None:
        """The cached result if it answers: broken, or measured at every wanted row count."""
        cached = self.store.get(self.machine, kernel, self.signature, self.shapes)
        if cached is not None and (not cached.ok or self.wanted <= cached.rows_measured()):
            return cached
        return None


def _run_child(kernel: Kernel, job: dict[str, object], timeout_s: float) -> TrialResult:
    device = str(job["device"])
    started = time.perf_counter()
    command = [sys.executable, "-m", "awq_autoselect.trials.child"]
    try:
        done = subprocess.run(
            command, input=json.dumps(job), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return TrialResult.broken(
            kernel, device, f"the trial did not finish within {timeout_s:g} s (killed)", timeout_s
        )
    except OSError as exc:
        return TrialResult.broken(
            kernel, device, f"the trial process could not start: {exc}", time.perf_counter() - started
        )
    seconds = time.perf_counter() - started
    marked = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if done.returncode == 0 and marked:
        from awq_autoselect._codec import from_json

        result = from_json(TrialResult, json.loads(marked[-1][len(RESULT_MARKER) :]))
        assert isinstance(result, TrialResult)
        return result
    stderr = done.stderr or ""
    cuda = next((hint for hint in _CUDA_ERRORS if hint.lower() in stderr.lower()), None)
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        what = f"the trial process was killed by {name}"
    else:
        what = f"the trial process exited with status {done.returncode} without a result"
    detail = f" after a CUDA error ({cuda})" if cuda else ""
    return TrialResult.broken(kernel, device, f"{what}{detail}: {_tail(stderr) or 'no output'}", seconds)


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
) -> TrialReport:
    """Trial every kernel of ``kernels`` on layers of ``info``'s shapes on ``device``, each in a child process.

    Args:
        info: the checkpoint (its shapes, bits, group size and zero point; its weights are not read).
        kernels: the kernels to try (normally the viable candidates of a selection).
        device: ``"cuda:N"`` or ``"cpu"``.
        rows: the row counts to time (1 for batch-1 decode, the batch size, the prefill rows).
        graph: also time the calls replayed from a CUDA graph (CUDA only).
        cache: where results are kept (default: the user cache folder); ``use_cache=False`` runs every trial
            again and overwrites what is cached.
        timeout_s: seconds one kernel may take (default :data:`DEFAULT_TIMEOUT_S`, or
            ``$AWQ_AUTOSELECT_TRIAL_TIMEOUT``).
        progress: called as ``progress(index, total, kernel, status)`` before and after each kernel.
        show_progress: draw a progress bar over the kernels that run (not those the cache answers) on stderr;
            ``None``: :func:`progress_enabled` decides (a terminal or a notebook).

    Returns:
        A :class:`~.records.TrialReport` with one result per kernel, in the order given.

    Raises:
        InvalidArgumentError: ``show_progress`` or :data:`PROGRESS_ENV` has a value that means nothing.
    """
    show = progress_enabled(show_progress)
    lookup = _Lookup(info, device, rows, cache)
    wanted = sorted(lookup.wanted)
    results: list[TrialResult] = []
    from_cache: list[Kernel] = []
    limit = _timeout(timeout_s)
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
            if progress is not None:
                progress(index, len(kernels), kernel, "running")
            if bar is not None:
                bar.set_postfix_str(kernel.value)
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
            result = _run_child(kernel, job, limit)
            logger.info("trial %s on %s: %s %s", kernel.value, device, result.status.value, result.reason)
            try:
                lookup.store.put(lookup.machine, kernel, lookup.signature, result)
            except Exception as exc:  # an unwritable cache costs a re-run later, nothing more
                logger.warning("could not cache the trial of %s: %s", kernel.value, exc)
            results.append(result)
            if bar is not None:
                bar.update(1)
            if progress is not None:
                progress(index, len(kernels), kernel, result.status.value)
    finally:
        if bar is not None:
            bar.close()
    return TrialReport(device=device, results=tuple(results), from_cache=tuple(from_cache))


def cached_trials(info: CheckpointInfo, kernels: Sequence[Kernel], *, device: str, rows: Sequence[int]) -> TrialReport:
    """What the cache knows for ``kernels`` (no trial is run); kernels without an answer are left out."""
    lookup = _Lookup(info, device, rows, None)
    found = [cached for kernel in kernels if (cached := lookup.answer(kernel)) is not None]
    return TrialReport(device=device, results=tuple(found), from_cache=tuple(r.kernel for r in found))
