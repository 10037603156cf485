"""How busy the host is: CPU time other processes use, measured from ``/proc/stat``, and the load average.

A trial's timings mean what they say only when the trial had the machine to itself. This module measures how much
of the machine other processes took while a trial ran (:class:`HostMeter`: the whole machine's busy time from
``/proc/stat``, less the CPU time of the trial's own processes from ``/proc/<pid>/stat``), and whether the machine is
quiet right now (:func:`sample_host`). Where ``/proc`` cannot be read (not Linux), the 1-minute load average stands
in, which lags a minute behind; where neither exists, the load is unknown and the host is never called quiet.

Reading these files costs microseconds; nothing here starts a process or imports anything heavy.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from .records import HostLoad

__all__ = ["HostMeter", "cpu_count", "free_threads", "load_average", "sample_host"]

logger = logging.getLogger(__name__)

_STAT = Path("/proc/stat")
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal (guest time is inside user)
_IDLE_FIELDS = (3, 4)  # idle, iowait


def cpu_count() -> int:
    """The machine's CPUs, as ``/proc/stat`` counts them (at least 1)."""
    return max(1, os.cpu_count() or 1)


def load_average() -> float | None:
    """The 1-minute load average, or ``None`` where the platform has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def _machine_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of every CPU since boot, from the first line of ``/proc/stat``."""
    try:
        with _STAT.open(encoding="ascii") as fh:
            first = fh.readline().split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    try:
        values = [int(v) for v in first[1:]]
    except ValueError:
        return None
    busy = sum(values[i] for i in _BUSY_FIELDS if i < len(values))
    return busy, busy + sum(values[i] for i in _IDLE_FIELDS if i < len(values))


def _process_ticks(pid: int, *, reaped: bool = False) -> int | None:
    """User and system clock ticks of one process (every thread; with ``reaped``, plus those of its children it
    has waited for), or ``None`` once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    try:
        # utime, stime, cutime, cstime: fields 14 to 17 of the whole line
        return sum(int(fields[i]) for i in ((11, 12, 13, 14) if reaped else (11, 12)))
    except (IndexError, ValueError):
        return None


class HostMeter:
    """The CPU time other processes use between :meth:`start` and :meth:`stop`, in CPUs' worth.

    The measuring process's own time is left out, and so is that of the child processes given to :meth:`watch`:
    while they run, from their own ``/proc/<pid>/stat``; once this process has waited for them, from its own count
    of its children's time (less what a child had used before it was watched). What remains is what the machine
    spent on everything else meanwhile.
    """

    def __init__(self) -> None:
        self._watched: dict[int, int] = {}  # pid -> its ticks when it was first watched
        self._start: tuple[int, int] | None = None
        self._own: int | None = None
        self._load: float | None = None

    def start(self, pids: Iterable[int] = ()) -> None:
        """Begin measuring; ``pids`` are the measurement's own child processes."""
        self._start = _machine_ticks()
        self._own = _process_ticks(os.getpid(), reaped=True)
        self._load = load_average()
        self._watched.clear()
        self.watch(pids)

    def watch(self, pids: Iterable[int]) -> None:
        """Count these child processes' time as the measurement's own from now on."""
        for pid in pids:
            ticks = _process_ticks(pid)
            if ticks is not None and pid not in self._watched:
                self._watched[pid] = ticks

    def _ours(self) -> int | None:
        own = _process_ticks(os.getpid(), reaped=True)
        if own is None or self._own is None:
            return None
        ours = own - self._own  # this process, and the children it has waited for since (their whole lives)
        for pid, first in self._watched.items():
            now = _process_ticks(pid)
            ours += -first if now is None else now - first  # reaped: counted above, less its time before watch()
        return ours

    def stop(self, threads: int | None = None) -> HostLoad:
        """What other processes used since :meth:`start` (the measurement goes on: :meth:`stop` again later)."""
        end = _machine_ticks()
        ours = self._ours()
        cpus = cpu_count()
        others: float | None = None
        if self._start is not None and end is not None and ours is not None and end[1] > self._start[1]:
            busy, total = end[0] - self._start[0], end[1] - self._start[1]
            others = max(0.0, (busy - ours) / total * cpus)
        return HostLoad(cpus=cpus, load_1m=self._load, others_cpus=others, threads=threads)


def sample_host(seconds: float = 0.25) -> HostLoad:
    """How busy the machine is now: what other processes use over ``seconds`` (this one sleeps meanwhile)."""
    meter = HostMeter()
    meter.start()
    time.sleep(seconds)
    load = meter.stop()
    logger.debug("host now: %s", load.describe())
    return load


def free_threads(load: HostLoad) -> int | None:
    """The thread cap of a CPU trial's timed calls: ``None`` (torch's default) on a quiet host or one whose load is
    unknown; on a busy one, the CPUs the other processes leave free, rounded, at least 1. A kernel's threads wait for
    each other at every call, and on a full machine a waiting thread loses its CPU for a whole scheduler slice:
    torch_int4's call at 1 row took 8 ms in each of 40 samples with two threads beside a busy process on 2 CPUs, and
    15-22 us with one thread (the kernel's time)."""
    if load.quiet is not False or load.others_cpus is None:
        return None
    return max(1, int(load.cpus - load.others_cpus + 0.5))
