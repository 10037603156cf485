"""The child processes of one trial run, timed round by round in alternation.

Every kernel keeps its own child process (:mod:`.child`): a kernel that crashes, hangs or poisons its CUDA context
costs only that process. The children of one run are alive together: each builds and checks its kernel and says it
is ready; then this module asks them for a *round* each, one child at a time, in alternation (A B C, B C A,
C A B, ...: the order turns every round, so that no kernel always runs first after a pause), for :data:`ROUNDS`
rounds, and collects their results. A busy moment of the host then falls on every kernel's rounds alike instead of
on whichever kernel was measured at that moment, and the rounds' spread says how noisy the measurement was.

While one child times its round, the others wait on their stdin and use no CPU. The host's load while the run
lasts (:class:`~.host.HostMeter`: what other processes used, less this run's own processes) is kept with every
result, and decides how many threads the CPU trials' timed calls use (:func:`~.host.free_threads`).

Every child of a run starts at once and imports what its kernel needs (on CUDA it also makes its context) before
its job arrives. On a CPU the children then build their kernels at the same time (the numeric checks overlap too);
on CUDA one after another, because building a kernel may time it on the GPU (gemv_triton tunes its launches at
build).

A kernel that cannot win leaves early: once a majority of the rounds ran (:func:`cut_after`: 3 of 5), a kernel whose
*fastest* round costs more than :data:`CUT_FACTOR` times another kernel's *slowest* round, at every row count and
mode both measured, is finished there (its result holds the rounds it ran, and says so). The median of its rounds'
costs over the full run could only be larger, and the other's only smaller, than those bounds: by that median the
full run would have ordered the two the same way at every point (a ranking weighs points, never inverts them). One
round is not enough: a host stall during one round (a CPU kernel's threads waiting for each other) would decide
alone.

Each child has its own budget of ``timeout_s`` seconds: its own setup, and the time its rounds take; the time it
waits for the others' rounds does not count. A child over its budget is killed and its trial is *inconclusive*.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO

from awq_autoselect import settings
from awq_autoselect.catalogue import Kernel

from .child import CUDA_ERROR_HINTS, OOM_HINTS, READY_MARKER, RESULT_MARKER, ROUND_MARKER
from .host import HostMeter, free_threads, sample_host
from .records import FailureCause, TrialResult

__all__ = ["CUT_FACTOR", "ROUNDS", "cannot_win", "cut_after", "exit_cause", "run_group"]

logger = logging.getLogger(__name__)

#: Rounds each kernel of a run is timed in.
ROUNDS = 5
#: A kernel whose fastest round costs more than this many times another's slowest, everywhere, stops being timed.
CUT_FACTOR = 2.0

_Line = tuple[float, str | None]  # when it arrived, the line (None: the child closed its stdout)
#: A round's cost per row count and mode: {(rows, "eager" or "graph"): milliseconds of the checkpoint's layers}.
RoundCosts = dict[tuple[int, str], float]
_MARKERS = (READY_MARKER, ROUND_MARKER, RESULT_MARKER)
# Signals that end a child from outside, or for want of a resource: not the kernel's doing.
_INTERRUPTS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
_RESOURCE_SIGNALS = frozenset({signal.SIGKILL, signal.SIGXCPU, signal.SIGXFSZ})


class _Child:
    """One trial child process: its pipes, the lines it printed (read by a thread, stamped), its budget."""

    def __init__(self, kernel: Kernel, job: Mapping[str, object], timeout_s: float) -> None:
        self.kernel = kernel
        self.job = job
        self.device = str(job["device"])
        self.timeout_s = timeout_s
        self.spent = 0.0  # seconds of its own budget used so far
        self.rounds: list[RoundCosts] = []  # each round's costs, as the child reported them
        self.lines: queue.Queue[_Line] = queue.Queue()
        # A file, not a pipe: a chatty child never blocks on a full pipe. Closed by close(), whoever ends the child.
        self.stderr: IO[str] = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "awq_autoselect.trials.child", self.device, kernel.value],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        threading.Thread(target=self._read, name=f"trial-{kernel.value}", daemon=True).start()

    def begin(self) -> None:
        """Send the job: the child builds its kernel now; its budget counts from here."""
        self.started = time.perf_counter()
        self.send(json.dumps(dict(self.job)))

    def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        with stdout:
            for line in stdout:
                if line.startswith(_MARKERS):
                    self.lines.put((time.perf_counter(), line.rstrip("\n")))
        self.lines.put((time.perf_counter(), None))

    def send(self, text: str) -> bool:
        """Write one line to the child; False when it can no longer read (it ended)."""
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write(text + "\n")
            stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return False
        return True

    def expect(self, since: float) -> TrialResult | None:
        """Wait for the child's next answer within its budget, counting from ``since``: ``None`` for "ready" or
        "round done", else its final result (its own, or why it ended without one)."""
        deadline = since + max(0.0, self.timeout_s - self.spent)
        while True:
            try:
                stamp, line = self.lines.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                self.spent = self.timeout_s
                return self._timed_out()
            if line is None:
                return self.ended()
            if line == READY_MARKER or line.startswith(ROUND_MARKER):
                self.spent += stamp - since
                if line.startswith(ROUND_MARKER):
                    self.rounds.append(_costs(line[len(ROUND_MARKER) :]))
                return None
            if line.startswith(RESULT_MARKER):
                from awq_autoselect._codec import from_json

                result = from_json(TrialResult, json.loads(line[len(RESULT_MARKER) :]))
                assert isinstance(result, TrialResult)
                self.close()
                return result

    def _timed_out(self) -> TrialResult:
        self.kill()
        return TrialResult.failed(
            self.kernel,
            self.device,
            FailureCause.TIMEOUT,
            f"the trial did not finish within {self.timeout_s:g} s (killed; not the kernel's fault as far as is "
            f"known: raise {settings.TRIAL_TIMEOUT} or tune --timeout for a large model)",
            self.timeout_s,
        )

    def ended(self) -> TrialResult:
        """Why the child ended without a result (its exit status and the tail of its stderr)."""
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # its stdout closed, yet it lives on: end it
            self.kill()
            code = self.process.returncode
        stderr = self.read_stderr()
        cause, what = exit_cause(code, stderr)
        self.close()
        seconds = time.perf_counter() - self.started
        return TrialResult.failed(self.kernel, self.device, cause, f"{what}: {_tail(stderr) or 'no output'}", seconds)

    def read_stderr(self) -> str:
        try:
            self.stderr.seek(0)
            return self.stderr.read()
        except (OSError, ValueError):
            return ""

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        self.close()

    def close(self) -> None:
        for stream in (self.process.stdin, self.stderr):
            with contextlib.suppress(OSError, ValueError, BrokenPipeError):
                if stream is not None:
                    stream.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)


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


def exit_cause(returncode: int, stderr: str) -> tuple[FailureCause, str]:
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


def _tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-500:]


def _start(kernel: Kernel, job: Mapping[str, object], timeout_s: float) -> _Child | TrialResult:
    try:
        return _Child(kernel, job, timeout_s)
    except OSError as exc:
        return TrialResult.failed(
            kernel, str(job["device"]), FailureCause.RESOURCE, f"the trial process could not start: {exc}", 0.0
        )


def run_group(
    jobs: Mapping[Kernel, Mapping[str, object]],
    timeout_s: float,
    *,
    rounds: int = ROUNDS,
    on_round: Callable[[int, int], None] | None = None,
) -> dict[Kernel, TrialResult]:
    """Run the trials of ``jobs`` (one child process each), their rounds in alternation; one result per kernel, in
    the order of ``jobs``.

    A child that fails (its kernel crashed, raised, computed wrong numbers, ran out of time) leaves the rotation with
    its result; one that cannot win (:func:`cannot_win`) leaves it with the rounds it ran; the others go on.
    ``on_round(done, rounds)`` is called after each round of every kernel.
    """
    results: dict[Kernel, TrialResult] = {}
    children: dict[Kernel, _Child] = {}
    cut: dict[Kernel, str] = {}
    meter = HostMeter()
    cpu = all(str(job["device"]).startswith("cpu") for job in jobs.values())
    with _ending(children):  # every child started is killed on the way out, whatever happens
        meter.start()
        for kernel, job in jobs.items():  # all at once: their imports overlap
            begun = _start(kernel, job, timeout_s)
            if isinstance(begun, TrialResult):
                results[kernel] = begun
            else:
                children[kernel] = begun
                meter.watch([begun.process.pid])
        if cpu:  # built at the same time: their setup is no measurement
            for child in children.values():
                child.begin()
        for kernel, child in list(children.items()):  # on CUDA built one after another
            if not cpu:
                child.begin()
            failed = child.expect(child.started)
            if failed is not None:
                results[kernel] = failed
                del children[kernel]
        threads = _threads(meter) if cpu and children else None
        command = "round" if threads is None else f"round {threads}"
        for number in range(rounds):
            order = list(children)
            turn = number % len(order) if order else 0
            for kernel in order[turn:] + order[:turn]:
                child = children[kernel]
                asked = time.perf_counter()
                child.send(command)
                failed = child.expect(asked)
                if failed is not None:
                    results[kernel] = failed
                    del children[kernel]
            if cut_after(rounds) <= number + 1 < rounds:
                losers = cannot_win({kernel: child.rounds for kernel, child in children.items()})
                if len(losers) >= len(children):  # cannot happen while the costs are consistent; keep one anyway
                    losers = {}
                for kernel, why in losers.items():
                    cut[kernel] = f"timed in {number + 1} of {rounds} rounds: {why}"
                    results[kernel] = _finish(children.pop(kernel))
            if on_round is not None:
                on_round(number + 1, rounds)
        host = meter.stop(threads)
        for kernel, child in list(children.items()):
            results[kernel] = _finish(child)
            del children[kernel]
    for kernel, result in results.items():
        if result.ok:
            reason = "; ".join(part for part in (result.reason, cut.get(kernel, "")) if part)
            results[kernel] = dataclasses.replace(result, host=host, reason=reason)
    logger.info("trials of %s: %s", ", ".join(k.value for k in jobs), host.describe())
    return {kernel: results[kernel] for kernel in jobs}


def _finish(child: _Child) -> TrialResult:
    """Ask ``child`` for its result now."""
    asked = time.perf_counter()
    child.send("finish")
    return child.expect(asked) or child.ended()  # "ready" again instead of a result: it ended wrong


def cut_after(rounds: int) -> int:
    """The rounds a kernel runs before it may be cut: a majority of ``rounds``, whose medians then bound the full
    run's median from below (for the kernel cut) and from above (for the kernel it lost to)."""
    return rounds // 2 + 1


def cannot_win(rounds: Mapping[Kernel, Sequence[RoundCosts]]) -> dict[Kernel, str]:
    """The kernels that cannot win, with why: a kernel's fastest round so far costs more than :data:`CUT_FACTOR`
    times one other kernel's slowest round, at every (row count, mode) that both measured (at least one).

    Fastest against slowest leaves the noise to the kernel being judged; comparing with a single other kernel at
    every point means that no weighting of row counts or modes, which the workload decides later, can rank it first.
    """
    losers: dict[Kernel, str] = {}
    for kernel, own in rounds.items():
        best = _extreme(own, min)
        if not best:
            continue
        for other, theirs in rounds.items():
            if other is kernel or other in losers:
                continue
            worst = _extreme(theirs, max)
            shared = best.keys() & worst.keys()
            if shared and all(best[key] > CUT_FACTOR * worst[key] for key in shared):
                ratio = min(best[key] / worst[key] for key in shared)
                losers[kernel] = f"at least {ratio:.1f}x slower than {other.value} everywhere, so it cannot win"
                break
    return losers


def _extreme(rounds: Sequence[RoundCosts], pick: Callable[[list[float]], float]) -> RoundCosts:
    """Per (row count, mode), ``pick`` (min or max) of the rounds' costs; only keys every round has."""
    if not rounds:
        return {}
    keys = set.intersection(*(set(costs) for costs in rounds))
    return {key: pick([costs[key] for costs in rounds]) for key in keys}


def _costs(text: str) -> RoundCosts:
    """The costs a round's marker line carries (:meth:`.child.Session.round_costs`); empty when it carries none."""
    try:
        raw = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    costs: RoundCosts = {}
    if isinstance(raw, dict):
        for rows, pair in raw.items():
            if not (isinstance(pair, list) and len(pair) == 2 and str(rows).isdigit()):
                continue
            for mode, value in zip(("eager", "graph"), pair, strict=True):
                if isinstance(value, (int, float)) and value > 0:
                    costs[(int(rows), mode)] = float(value)
    return costs


def _threads(meter: HostMeter) -> int | None:
    """The thread cap of the CPU rounds (``None``: torch's default), from what other processes used while the
    children were built (the children's own CPU time left out), or from a short sample where that is unknown."""
    so_far = meter.stop()
    if so_far.others_cpus is None:
        so_far = sample_host()
    return free_threads(so_far)


@contextlib.contextmanager
def _ending(children: dict[Kernel, _Child]) -> Iterator[None]:
    """Kill every child still running when the run ends, however it ends (an error, Ctrl-C)."""
    try:
        yield
    finally:
        for child in children.values():
            child.kill()
