"""The planner, for real: trials in child processes on a real AutoAWQ checkpoint's shapes, the real cache.

- A busy host (CPU-bound processes started here, bounded in time and killed however the test ends) does not change
  the first measurement's choice between two kernels that differ by far more than the noise.
- A tie on a busy host is marked thin in the cache; a later plan re-measures just the tied kernels, and only when
  the host is quiet. Whether the host is quiet *now* is the one thing faked (``sample_host``): a shared CI machine
  can be made busy, but never guaranteed quiet.
- Load, bench, tune and select plan through :func:`awq_autoselect.planning.plan`.

No timing is asserted beyond which kernel is chosen.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from awq_autoselect.catalogue import Kernel
from awq_autoselect.checkpoint import CheckpointInfo, read_checkpoint
from awq_autoselect.errors import InvalidArgumentError
from awq_autoselect.planning import Plan, TrialPolicy, plan
from awq_autoselect.trials import HostLoad, RowTiming, ShapeResult, TrialCache, TrialResult, TrialStatus
from awq_autoselect.trials import host as trial_host
from awq_autoselect.trials.cache import layer_shapes, machine_key, signature_of
from awq_autoselect.workload import Workload
from tests.helpers import QuantizedFactory, run_cli

CRASH_SITE = Path(__file__).resolve().parent / "crash_site"
ROOT = Path(__file__).resolve().parents[1]
CPU_KERNELS = (Kernel.TORCH_INT4, Kernel.GEMM_TORCH)
# Batch-1 decode on the CPU. Measured here (2 CPUs, torch 2.13): torch_int4 0.37-0.40 ms per decode step of the tiny
# model's 14 layers, gemm_torch 7.3-7.4 ms, with another test run beside them; so the request differs by ~19x.
WORK = Workload(prompt_tokens=16, new_tokens=64, decode="eager")
HOG_SECONDS = 180  # a hog ends itself by then, even if nothing kills it


@pytest.fixture
def checkpoint(quantized: QuantizedFactory) -> Path:
    return quantized(version="gemm", group_size=128)


@pytest.fixture
def hogs() -> Iterator[Callable[[], list[subprocess.Popen[bytes]]]]:
    """``hogs()`` starts one CPU-bound process per CPU (at least 2); each is killed when the test ends, and ends
    itself after :data:`HOG_SECONDS` whatever happens to this process."""
    started: list[subprocess.Popen[bytes]] = []
    code = f"import time\nend = time.monotonic() + {HOG_SECONDS}\nwhile time.monotonic() < end:\n    pass\n"

    def start() -> list[subprocess.Popen[bytes]]:
        for _ in range(max(2, os.cpu_count() or 1)):
            started.append(subprocess.Popen([sys.executable, "-c", code]))
        return started

    try:
        yield start
    finally:
        for process in started:
            process.kill()
        for process in started:
            process.wait(timeout=30)


def _children(log: Path) -> Counter[str]:
    """Trial child processes started per kernel (tests/crash_site's log)."""
    if not log.exists():
        return Counter()
    return Counter(line.split()[0] for line in set(log.read_text().splitlines()))


def _first_measurement(info: CheckpointInfo, cache: Path, monkeypatch: pytest.MonkeyPatch) -> Plan:
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(cache))
    return plan(info, device="cpu", workload=WORK, trials=True, only=CPU_KERNELS, measured_by="test_planning")


def test_three_first_measurements_on_a_busy_host_choose_what_a_quiet_one_chooses(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hogs: Callable[[], object]
) -> None:
    """Seen on main: with two CPU-bound processes beside the first load, 1 of 3 first loads cached gemm_torch over
    torch_int4 (decode 5.6x slower from then on). Each first measurement here has a fresh cache."""
    info = read_checkpoint(checkpoint)
    quiet = _first_measurement(info, tmp_path / "quiet", monkeypatch)
    assert quiet.selection.candidate(quiet.selection.kernel).rank_source == "measured"
    hogs()
    busy = [_first_measurement(info, tmp_path / f"busy-{n}", monkeypatch) for n in range(3)]
    assert [p.selection.kernel for p in busy] == [quiet.selection.kernel] * 3
    for measured in busy:
        assert measured.report is not None
        assert measured.report.from_cache == ()  # a first measurement each time
        for result in measured.report.results:
            assert result.ok, result.reason
            assert result.host is not None
            assert result.host.quiet is False, result.host  # the load was recorded, and it was the hogs'
            assert result.host.threads is not None  # the CPU trial's calls ran on the CPUs left free


# --- ties and thin entries -----------------------------------------------------------------------------------------


BUSY = HostLoad(cpus=2, load_1m=3.1, others_cpus=1.9, threads=1)
QUIET = HostLoad(cpus=2, load_1m=0.2, others_cpus=0.1)


def _tied(info: CheckpointInfo, kernel: Kernel) -> TrialResult:
    """A result as a run on a busy host leaves it: every shape 100 us per call, rounds from 80 to 130 us, for both
    kernels alike (so the two tie)."""
    rounds = (80.0, 95.0, 100.0, 110.0, 130.0)
    shapes = tuple(
        ShapeResult(shape, 0.001, tuple(RowTiming(rows, 100.0, None, rounds) for rows in (1, WORK.prefill_rows)))
        for shape in layer_shapes(info)
    )
    return TrialResult(
        kernel, TrialStatus.OK, "", "cpu", shapes, 1.0, "2026-12-05T00:00:00+00:00", measured_by="a busy run", host=BUSY
    )


def test_a_tie_on_a_busy_host_is_marked_thin_and_measured_again_only_when_the_host_is_quiet(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(cache_dir))
    log = tmp_path / "trials.log"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(CRASH_SITE), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("AWQ_TEST_TRIAL_LOG", str(log))
    info = read_checkpoint(checkpoint)
    cache = TrialCache()
    for kernel in CPU_KERNELS:
        cache.put(machine_key("cpu"), kernel, signature_of(info), _tied(info, kernel), info.path)

    # The host is busy now: the published rank breaks the tie, both entries are marked thin, nothing runs.
    monkeypatch.setattr(trial_host, "sample_host", lambda seconds=0.25: BUSY)
    first = plan(info, device="cpu", workload=WORK, trials=True, measured_by="test_planning")
    published = plan(info, device="cpu", workload=WORK, trials=False).selection.kernel
    assert first.selection.kernel is published
    assert set(first.selection.tie) == set(CPU_KERNELS)
    assert first.selection.tie[0] is published
    loser = next(k for k in CPU_KERNELS if k is not published)
    assert first.selection.candidate(loser).tie == (published,)
    assert any(note.startswith("tie (within noise) for the first place") for note in first.selection.notes)
    assert "tie (within noise) with" in first.selection.explain()
    assert first.remeasured == ()
    assert set(first.marked_thin) == set(CPU_KERNELS)
    assert _children(log) == Counter()
    for kernel in CPU_KERNELS:
        stored = cache.get(machine_key("cpu"), kernel, signature_of(info), ())
        assert stored is not None
        assert "tied within noise" in stored.thin
        assert "measured again by the next load on a quiet host" in stored.thin
    code, out, _ = run_cli("cache", "list", str(checkpoint))
    assert code == 0
    assert out.count("ok thin") == 2
    assert "other processes used 1.9 of 2 CPUs (busy)" in out
    code, out, _ = run_cli(
        "select",
        "--checkpoint",
        str(checkpoint),
        "--device",
        "cpu",
        "--prompt-tokens",
        "16",
        "--new-tokens",
        "64",
        "--decode",
        "eager",
    )
    assert code == 0
    assert "published rank decided" in out
    assert "thin measurement: tied within noise" in out

    # Quiet now: just the thin kernels are measured again, together; the new results replace the thin ones.
    monkeypatch.setattr(trial_host, "sample_host", lambda seconds=0.25: QUIET)
    again = plan(info, device="cpu", workload=WORK, trials=True, measured_by="test_planning")
    assert set(again.remeasured) == set(CPU_KERNELS)
    assert _children(log) == Counter({k.value: 1 for k in CPU_KERNELS})
    assert again.report is not None
    assert again.report.from_cache == ()
    crafted = _tied(info, Kernel.GEMM_TORCH)
    for kernel in CPU_KERNELS:
        stored = cache.get(machine_key("cpu"), kernel, signature_of(info), ())
        assert stored is not None
        assert stored.measured_by == "test_planning"  # measured now, by real children
        assert stored.measured_at != crafted.measured_at
        assert stored.host is not None
        assert stored.host != BUSY
    # Busy again: whatever the new measurement says, nothing is measured while the host is busy.
    monkeypatch.setattr(trial_host, "sample_host", lambda seconds=0.25: BUSY)
    plan(info, device="cpu", workload=WORK, trials=True, measured_by="test_planning")
    assert _children(log) == Counter({k.value: 1 for k in CPU_KERNELS})


def test_a_tie_measured_on_a_quiet_host_is_the_kernels_own_and_is_not_marked(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(tmp_path / "cache"))
    info = read_checkpoint(checkpoint)
    cache = TrialCache()
    for kernel in CPU_KERNELS:
        quiet = dataclasses.replace(_tied(info, kernel), host=QUIET)
        cache.put(machine_key("cpu"), kernel, signature_of(info), quiet, info.path)
    planned = plan(info, device="cpu", workload=WORK, trials=True)
    assert set(planned.selection.tie) == set(CPU_KERNELS)  # a tie all the same: the published rank decided
    assert planned.marked_thin == ()
    assert all(not e.result.thin for e in cache.entries() if e.result is not None)


# --- one planner ---------------------------------------------------------------------------------------------------


def _imports(module: str) -> set[str]:
    from tests import test_architecture

    return test_architecture._imports(test_architecture._modules()[module], module)  # run-time imports


def _package_imports(package: str) -> set[str]:
    """The run-time imports of a package's modules, all of them."""
    from tests import test_architecture

    inside = [name for name in test_architecture._modules() if name == package or name.startswith(package + ".")]
    return set().union(*(_imports(name) for name in inside))


def test_selection_runs_no_trial_and_load_bench_tune_select_plan() -> None:
    selection = _package_imports("awq_autoselect.selection")
    assert "awq_autoselect.trials.records" in selection  # the measurements come in as data
    assert not {m for m in selection if m.startswith("awq_autoselect.trials.")} - {
        "awq_autoselect.trials.records",
        "awq_autoselect.trials.cache",  # measurements=None: what the cache holds, read as data
    }
    for module in ("awq_autoselect.loading.load", "awq_autoselect.bench.benchmark", "awq_autoselect.cli.commands"):
        assert "awq_autoselect.planning" in _imports(module), module
    # Nothing but the planner calls run_trials.
    for path in sorted((ROOT / "awq_autoselect").rglob("*.py")):
        calls = [
            node
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "run_trials"
        ]
        if calls:
            assert path.name == "planning.py", path


def test_a_plan_refuses_what_it_cannot_do_before_any_trial(checkpoint: Path) -> None:
    info = read_checkpoint(checkpoint)
    with pytest.raises(InvalidArgumentError, match="trials need a device"):
        plan(info, device=None, workload=WORK, trials=True)
    with pytest.raises(InvalidArgumentError, match=r"trials=.*expected True, False, None or a TrialPolicy"):
        plan(info, device="cpu", workload=WORK, trials="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="trials need the checkpoint directory"):
        plan(info.quant, device="cpu", workload=WORK, trials=TrialPolicy.RUN)
    published = plan(info, device="cpu", workload=WORK, trials=TrialPolicy.OFF)
    assert published.report is None
    assert all(c.rank_source == "published" for c in published.selection.candidates)
