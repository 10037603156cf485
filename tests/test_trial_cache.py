"""The trial cache as a user sees it: verdicts that say they came from the cache, the commands that clear or refresh
them, folders that cannot be used (refused once, with a warning; the load goes on), and two processes sharing one
cold cache (the second waits for the first's trials instead of repeating them).

Real trials in real child processes throughout; tests/crash_site makes kernels misbehave there, and counts the
child processes (``AWQ_TEST_TRIAL_LOG``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from awq_autoselect.catalogue import Kernel
from awq_autoselect.checkpoint import read_checkpoint
from awq_autoselect.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from awq_autoselect.errors import NoCompatibleKernelError, TrialCacheWarning
from awq_autoselect.loading import load_quantized_auto
from awq_autoselect.trials import (
    LayerShape,
    RowTiming,
    ShapeResult,
    TrialCache,
    TrialResult,
    TrialStatus,
    run_trials,
)
from awq_autoselect.trials.cache import QuantSignature, machine_key
from awq_autoselect.trials.runner import signature_of
from tests.helpers import QuantizedFactory, run_cli

CRASH_SITE = Path(__file__).resolve().parent / "crash_site"
CPU_KERNELS = [Kernel.TORCH_INT4, Kernel.GEMM_TORCH]


@pytest.fixture
def checkpoint(quantized: QuantizedFactory) -> Path:
    return quantized(version="gemm", group_size=128)


@pytest.fixture
def cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(folder))
    return folder


def _crash_site(monkeypatch: pytest.MonkeyPatch, *, log: Path | None = None, broken: str = "", how: str = "") -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(CRASH_SITE), os.environ.get("PYTHONPATH", "")]))
    for name, value in (("AWQ_TEST_TRIAL_LOG", log), ("AWQ_TEST_BREAK_KERNEL", broken), ("AWQ_TEST_BREAK_HOW", how)):
        if value:
            monkeypatch.setenv(name, str(value))
        else:
            monkeypatch.delenv(name, raising=False)


def _children(log: Path) -> Counter[str]:
    """Trial child processes started per kernel, from the crash site's log."""
    if not log.exists():
        return Counter()
    return Counter(line.split()[0] for line in set(log.read_text().splitlines()))


# --- verdicts from the cache say so, and the commands that clear or refresh them work ---------------------------


def test_a_cached_broken_verdict_says_so_and_the_cache_commands_clear_it(
    checkpoint: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _crash_site(monkeypatch, broken="torch_int4,gemm_torch", how="segfault")
    with pytest.raises(NoCompatibleKernelError) as fresh:
        load_quantized_auto(checkpoint, device="cpu")
    assert "killed by SIGSEGV" in str(fresh.value)
    assert "repeated in a second trial process" in str(fresh.value)
    assert "cached" not in str(fresh.value)  # measured just now
    # Every later load reads the verdict from the cache, and says so: when, by what, and how to measure again.
    code, _, err = run_cli("load", str(checkpoint), "--device", "cpu")
    assert code == EXIT_FAILED
    assert "(cached 20" in err
    assert "by load_quantized_auto" in err
    assert f"awq-autoselect tune {checkpoint} --refresh" in err
    assert f"awq-autoselect cache clear {checkpoint}" in err
    code, _, err = run_cli("select", "--checkpoint", str(checkpoint), "--device", "cpu")
    assert code == EXIT_FAILED  # select reads the cache too: no kernel left, each verdict dated
    assert err.count("(cached 20") == 2
    code, out, _ = run_cli("cache", "list", str(checkpoint))
    assert code == EXIT_OK
    assert out.count("broken (crash)") == 2
    assert "by load_quantized_auto" in out
    assert str(checkpoint) in out
    # The kernels work again (a rebuilt extension, a driver update): clearing the cache lets a load measure them.
    _crash_site(monkeypatch)
    code, out, _ = run_cli("cache", "clear", str(checkpoint))
    assert code == EXIT_OK
    assert "removed 2 trial cache entries" in out
    assert "(0 entries)" in run_cli("cache", "list", str(checkpoint))[1]
    code, out, err = run_cli("load", str(checkpoint), "--device", "cpu")
    assert code == EXIT_OK, err
    assert "probe:      ok" in out


def test_tune_reads_the_cache_and_refresh_measures_again(
    checkpoint: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = tmp_path / "trials.log"
    _crash_site(monkeypatch, log=log)
    code, out, _ = run_cli("tune", str(checkpoint), "--device", "cpu")
    assert code == EXIT_OK
    assert "(cached" not in out
    first = _children(log)
    assert set(first) == {"torch_int4", "gemm_torch"}
    code, out, _ = run_cli("tune", str(checkpoint), "--device", "cpu")
    assert code == EXIT_OK
    assert out.count("(cached 20") == 2  # one line per kernel, each naming the refresh commands
    assert "by awq-autoselect tune" in out
    assert _children(log) == first  # nothing ran again
    code, out, _ = run_cli("tune", str(checkpoint), "--device", "cpu", "--refresh")
    assert code == EXIT_OK
    assert "(cached" not in out
    assert _children(log) == first + first  # every kernel measured again
    data = json.loads(run_cli("cache", "list", "--json")[1])
    assert data["schema"] == "awq-autoselect.cache/1"
    assert {e["kernel"] for e in data["entries"]} == {"torch_int4", "gemm_torch"}
    assert all(e["result"]["measured_by"] == "awq-autoselect tune" for e in data["entries"])


def test_tune_timeouts_are_not_cached_and_a_later_load_succeeds(
    checkpoint: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen on main 54e2287: `tune PATH --timeout 0.001` cached every kernel "broken"; a later plain load exited 1."""
    code, out, _ = run_cli("tune", str(checkpoint), "--device", "cpu", "--timeout", "0.001")
    assert code == EXIT_FAILED  # nothing could be measured
    assert "inconclusive" in out
    assert "did not finish within 0.001 s" in out
    assert "not cached" in out
    assert "(0 entries)" in run_cli("cache", "list")[1]
    code, out, err = run_cli("load", str(checkpoint), "--device", "cpu")
    assert code == EXIT_OK, err
    assert "probe:      ok" in out


def test_cache_clear_of_one_checkpoint_leaves_the_others(
    checkpoint: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = read_checkpoint(checkpoint)
    cache = TrialCache()
    run_trials(info, [Kernel.TORCH_INT4], device="cpu", rows=(1,), cache=cache)
    other = QuantSignature(bits=4, group_size=64, zero_point=True, shapes=((4096, 4096),))
    timed = ShapeResult(LayerShape(4096, 4096, 1), 0.001, (RowTiming(1, 10.0, None),))
    result = TrialResult(Kernel.GEMM_TORCH, TrialStatus.OK, "", "cpu", (timed,), 1.0, "2026-12-05T00:00:00+00:00")
    cache.put(machine_key("cpu"), Kernel.GEMM_TORCH, other, result, "/models/other")
    code, out, _ = run_cli("cache", "list")
    assert code == EXIT_OK
    assert "(2 entries)" in out
    assert "2026-12-05" in out
    assert "/models/other" in out
    code, out, _ = run_cli("cache", "clear", str(checkpoint))
    assert code == EXIT_OK
    assert "removed 1 trial cache entry" in out
    assert [e.signature for e in cache.entries()] == [other]
    code, out, _ = run_cli("cache", "clear")
    assert code == EXIT_OK
    assert "removed 1 trial cache entry" in out
    assert cache.entries() == ()
    assert run_cli("cache", "clear", "/no/such/model")[0] == EXIT_BAD_INPUT  # a bad checkpoint: nothing removed


# --- folders that cannot be used: refused once, with a warning naming the variable; the load goes on -------------


def _copy(checkpoint: Path, where: Path) -> Path:
    shutil.copytree(checkpoint, where)
    return where


def test_a_cache_folder_inside_the_checkpoint_is_refused_and_the_model_is_not_touched(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unchanged: Callable[[Path], None]
) -> None:
    model = _copy(checkpoint, tmp_path / "model")
    unchanged(model)
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(model / "cache"))
    with pytest.warns(TrialCacheWarning, match="AWQ_AUTOSELECT_CACHE_DIR") as caught:
        _, report = load_quantized_auto(model, device="cpu")
    assert len([w for w in caught if issubclass(w.category, TrialCacheWarning)]) == 1  # once per process and folder
    assert "inside the checkpoint being loaded" in str(caught[0].message)
    assert report.probe is not None
    assert report.probe.ok
    assert not (model / "cache").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrialCacheWarning)  # refused again, but not warned again
        load_quantized_auto(model, device="cpu")
    assert not (model / "cache").exists()


def test_a_cache_folder_inside_any_checkpoint_is_refused(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    elsewhere = _copy(checkpoint, tmp_path / "another-model")
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(elsewhere / "deeper" / "cache"))
    info = read_checkpoint(checkpoint)
    with pytest.warns(TrialCacheWarning, match="looks like a model checkpoint"):
        report = run_trials(info, [Kernel.GEMM_TORCH], device="cpu", rows=(1,))
    assert report.results[0].ok
    assert not (elsewhere / "deeper").exists()


@pytest.mark.parametrize("layout", ["file", "under-a-file"])
def test_a_file_where_the_cache_folder_should_be_is_refused(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, layout: str
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("the user's file\n")
    folder = blocker if layout == "file" else blocker / "cache"
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(folder))
    with pytest.warns(TrialCacheWarning, match="is a file, not a folder.*set AWQ_AUTOSELECT_CACHE_DIR"):
        _, report = load_quantized_auto(checkpoint, device="cpu")
    assert report.probe is not None
    assert report.probe.ok
    assert blocker.read_text() == "the user's file\n"
    # The CLI says it in one warning line (another folder: this process warned about the first one already).
    other = tmp_path / "another-file"
    other.write_text("")
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(other if layout == "file" else other / "cache"))
    code, out, err = run_cli("select", "--checkpoint", str(checkpoint), "--device", "cpu")
    assert code == EXIT_OK
    assert "selected:" in out
    assert err.count("\n") == 1, err
    assert err.startswith("warning: the trial cache folder")
    assert "AWQ_AUTOSELECT_CACHE_DIR" in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_folder_is_refused(checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "read-only"
    (folder / "trials").mkdir(parents=True)
    (folder / "trials").chmod(0o500)
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(folder))
    try:
        with pytest.warns(TrialCacheWarning, match="cannot be written"):
            report = run_trials(read_checkpoint(checkpoint), [Kernel.GEMM_TORCH], device="cpu", rows=(1,))
        assert report.results[0].ok
    finally:
        (folder / "trials").chmod(0o700)


# --- two processes, one cold cache --------------------------------------------------------------------------------

_TUNE = (
    "import sys, json; from pathlib import Path; "
    "from awq_autoselect.checkpoint import read_checkpoint; from awq_autoselect.catalogue import Kernel; "
    "from awq_autoselect.trials import run_trials, TrialCache; "
    "r = run_trials(read_checkpoint(sys.argv[1]), [Kernel.TORCH_INT4, Kernel.GEMM_TORCH], device='cpu', "
    "rows=(1, 4), cache=TrialCache(Path(sys.argv[2]))); "
    "print(json.dumps([k.value for k in r.from_cache])); sys.exit(0 if all(x.ok for x in r.results) else 1)"
)


def test_two_processes_on_one_cold_cache_run_each_trial_once(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Seen on main 54e2287: both ran every trial (21 s each where one alone took 12 s). The second now waits for
    the first's trial of a kernel and reads its result."""
    log = tmp_path / "trials.log"
    _crash_site(monkeypatch, log=log)
    root = tmp_path / "shared-cache"
    procs = [
        subprocess.Popen([sys.executable, "-c", _TUNE, str(checkpoint), str(root)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert _children(log) == Counter({"torch_int4": 1, "gemm_torch": 1})  # each kernel measured by one process
    cached = [json.loads(out) for out in outputs]
    assert sorted(cached[0] + cached[1]) == ["gemm_torch", "torch_int4"]  # the other process read each from cache
    assert not [p for p in (root / "trials").iterdir() if p.name.startswith(".") and p.name != ".lock"]


def test_the_wait_for_another_process_is_bounded(
    checkpoint: Path, cache: TrialCache, caplog: pytest.LogCaptureFixture
) -> None:
    """A process that holds an entry's lock and never finishes (here: this test, holding it) delays the trial by
    the bounded wait only; then the trial runs here."""
    info = read_checkpoint(checkpoint)
    with cache.claim(machine_key("cpu"), Kernel.GEMM_TORCH, signature_of(info), wait_s=0) as held:
        assert held
        with caplog.at_level(logging.WARNING, logger="awq_autoselect.trials.cache"):
            report = run_trials(info, [Kernel.GEMM_TORCH], device="cpu", rows=(1,), cache=cache, wait_s=0.5)
    assert "running it here" in caplog.text
    assert report.from_cache == ()
    assert report.results[0].ok


@pytest.fixture
def cache(tmp_path: Path) -> TrialCache:
    return TrialCache(tmp_path / "cache")
