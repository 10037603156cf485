"""How busy the host is, read from the real ``/proc``: CPU-bound processes started here are seen as other processes'
load, the measuring process's own work is not, and a busy host caps the CPU trials' threads."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from awq_autoselect.trials import HostLoad
from awq_autoselect.trials.host import HostMeter, cpu_count, free_threads, sample_host

pytestmark = pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc/stat (Linux)")

_HOG = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end:\n    pass\n"


@pytest.fixture
def hogs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """One CPU-bound process per CPU, killed when the test ends (each ends itself after 60 s anyway)."""
    started = [subprocess.Popen([sys.executable, "-c", _HOG]) for _ in range(cpu_count())]
    try:
        time.sleep(0.3)  # running, not starting
        yield started
    finally:
        for process in started:
            process.kill()
        for process in started:
            process.wait(timeout=30)


def test_processes_beside_the_measurement_are_the_host_s_load(hogs: list[subprocess.Popen[bytes]]) -> None:
    load = sample_host(0.5)
    assert load.cpus == cpu_count()
    assert load.others_cpus is not None
    assert load.others_cpus > load.cpus / 2  # a hog per CPU: at least half of them busy with something else
    assert load.quiet is False
    assert free_threads(load) is not None
    assert 1 <= (free_threads(load) or 0) < max(2, load.cpus)


def test_the_measured_processes_own_work_is_not_counted(tmp_path: Path) -> None:
    """A child that the meter watches burns a CPU for a second; what the meter reports for everyone else does not
    include it (here it ends and is reaped before the meter stops). The same child unwatched is another's load."""
    meter = HostMeter()
    child = subprocess.Popen([sys.executable, "-c", _HOG.replace("60", "1.0")])
    meter.start([child.pid])
    child.wait(timeout=30)
    with_child = meter.stop()
    assert with_child.others_cpus is not None
    unwatched = HostMeter()
    unwatched.start()
    other = subprocess.Popen([sys.executable, "-c", _HOG.replace("60", "1.0")])
    os.waitid(os.P_PID, other.pid, os.WEXITED | os.WNOWAIT)  # ended, not yet reaped: not ours to count
    without = unwatched.stop()
    other.wait(timeout=30)
    assert without.others_cpus is not None
    # The same second of one CPU's work: counted as another process's only when it was not ours.
    assert without.others_cpus - with_child.others_cpus > 0.3


@pytest.mark.parametrize(
    ("load", "quiet", "threads"),
    [
        (HostLoad(cpus=2, load_1m=0.1, others_cpus=0.2), True, None),
        (HostLoad(cpus=2, load_1m=3.0, others_cpus=1.0), False, 1),  # half the CPUs taken is busy
        (HostLoad(cpus=16, load_1m=9.0, others_cpus=9.4), False, 7),
        (HostLoad(cpus=4, load_1m=5.0, others_cpus=None), False, None),  # the load average alone: no cap
        (HostLoad(cpus=4, load_1m=1.0, others_cpus=None), True, None),
        (HostLoad(cpus=4, load_1m=None, others_cpus=None), None, None),  # unknown: never quiet, never capped
    ],
)
def test_quiet_and_the_thread_cap(load: HostLoad, quiet: bool | None, threads: int | None) -> None:
    assert load.quiet is quiet
    assert free_threads(load) == threads
    assert ("quiet" if quiet else "busy" if quiet is False else "load unknown") in load.describe()


def test_the_load_average_is_recorded_where_the_platform_has_one() -> None:
    load = HostMeter()
    load.start()
    recorded = load.stop(threads=3)
    assert recorded.threads == 3
    assert (recorded.load_1m is None) is (not hasattr(os, "getloadavg"))
