"""Trials on the CPU, for real: child processes running the real kernels on a real AutoAWQ checkpoint's shapes.

Kernels that misbehave are real kernels made to misbehave inside the child process only (tests/crash_site puts a
``sitecustomize`` on the child's path): a SIGSEGV, a hang, wrong numbers. The caller's process must survive each,
record the reason, and a load must go on with the next kernel. No timing is asserted, only that timings exist.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import threading
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from awq_autoselect import FallbackWarning
from awq_autoselect.catalogue import Kernel
from awq_autoselect.checkpoint import CheckpointInfo, read_checkpoint
from awq_autoselect.environment import Environment
from awq_autoselect.errors import InvalidArgumentError
from awq_autoselect.loading import load_quantized_auto
from awq_autoselect.selection import select_awq_version
from awq_autoselect.trials import (
    PROGRESS_ENV,
    DecodeMode,
    FailureCause,
    LayerShape,
    RowTiming,
    ShapeResult,
    TrialCache,
    TrialReport,
    TrialResult,
    TrialStatus,
    cached_trials,
    progress_enabled,
    run_trials,
)
from awq_autoselect.trials.cache import machine_key
from awq_autoselect.trials.child import cause_of
from awq_autoselect.trials.runner import signature_of
from awq_autoselect.workload import Workload
from tests.helpers import QuantizedFactory, run_cli

CRASH_SITE = Path(__file__).resolve().parent / "crash_site"


@pytest.fixture
def checkpoint(quantized: QuantizedFactory) -> Path:
    return quantized(version="gemm", group_size=128)


@pytest.fixture
def cache(tmp_path: Path) -> TrialCache:
    return TrialCache(tmp_path / "cache")


def _break(
    monkeypatch: pytest.MonkeyPatch, kernel: str, how: str, *, log: Path | None = None, once: Path | None = None
) -> None:
    """Make ``kernel`` (a comma-separated list) misbehave in trial children; ``log`` counts the children (see
    tests/crash_site); ``once``: only the first child misbehaves."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(CRASH_SITE), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("AWQ_TEST_BREAK_KERNEL", kernel)
    monkeypatch.setenv("AWQ_TEST_BREAK_HOW", how)
    if log is not None:
        monkeypatch.setenv("AWQ_TEST_TRIAL_LOG", str(log))
    if once is not None:
        monkeypatch.setenv("AWQ_TEST_BREAK_ONCE", str(once))


def _children(log: Path) -> Counter[str]:
    """Trial child processes started per kernel, from the crash site's log."""
    if not log.exists():
        return Counter()
    return Counter(line.split()[0] for line in set(log.read_text().splitlines()))


def test_working_kernels_are_timed_and_a_missing_extension_is_broken(checkpoint: Path, cache: TrialCache) -> None:
    info = read_checkpoint(checkpoint)
    report = run_trials(
        info, [Kernel.TORCH_INT4, Kernel.GEMM_TORCH, Kernel.GEMV], device="cpu", rows=(1, 16), cache=cache
    )
    assert [r.kernel for r in report.results] == [Kernel.TORCH_INT4, Kernel.GEMM_TORCH, Kernel.GEMV]
    for result in report.results[:2]:
        assert result.status is TrialStatus.OK, result.reason
        assert {(s.shape.in_features, s.shape.out_features) for s in result.shapes} == set(info.shapes())
        assert sum(s.shape.count for s in result.shapes) == len(info.layers)
        for shape in result.shapes:
            assert shape.max_rel_error < 0.02
            assert [t.rows for t in shape.timings] == [1, 16]
            assert all(t.eager_us > 0 and t.graph_us is None for t in shape.timings)  # no CUDA graphs on a CPU
        step = result.layers_ms(1, DecodeMode.EAGER)
        assert step is not None
        assert step > 0
        assert result.layers_ms(1, DecodeMode.GRAPH) is None
    gemv = report.results[2]
    assert gemv.status is TrialStatus.BROKEN
    assert "awq_ext" in gemv.reason  # AutoAWQ's own error at the first forward, from the child
    assert report.broken == {Kernel.GEMV: gemv.reason}


def test_the_kernels_of_a_run_are_timed_in_alternating_rounds_each_in_its_own_child(
    checkpoint: Path, cache: TrialCache, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Interleaving keeps crash isolation: one child per kernel, their rounds in alternation (A B, B A, A B, ...), and
    every timing keeps its rounds' medians; the host's load while they ran is kept with each result."""
    from awq_autoselect.trials import interleave
    from awq_autoselect.trials.interleave import ROUNDS

    monkeypatch.setattr(interleave, "CUT_FACTOR", math.inf)  # both run every round, however far apart they are here
    log, rounds = tmp_path / "trials.log", tmp_path / "rounds.log"
    _break(monkeypatch, "", "", log=log)
    monkeypatch.setenv("AWQ_TEST_ROUND_LOG", str(rounds))
    info = read_checkpoint(checkpoint)
    report = run_trials(info, [Kernel.TORCH_INT4, Kernel.GEMM_TORCH], device="cpu", rows=(1, 8), cache=cache)
    assert _children(log) == Counter({"torch_int4": 1, "gemm_torch": 1})  # still one child process per kernel
    a, b = "torch_int4", "gemm_torch"
    turns = [[a, b] if n % 2 == 0 else [b, a] for n in range(ROUNDS)]
    assert rounds.read_text().split() == [k for turn in turns for k in turn]
    for result in report.results:
        assert result.ok, result.reason
        for shape in result.shapes:
            for timing in shape.timings:
                assert len(timing.eager_rounds) == ROUNDS
                assert min(timing.eager_rounds) <= timing.eager_us <= max(timing.eager_rounds)
                assert timing.graph_rounds == ()  # no CUDA graphs on a CPU
        bounds = result.layers_bounds_ms(1, DecodeMode.EAGER)
        step = result.layers_ms(1, DecodeMode.EAGER)
        assert bounds is not None and step is not None
        assert bounds[0] <= step <= bounds[1]
        assert result.host is not None
        assert result.host.cpus >= 1
    assert report.results[0].host == report.results[1].host  # one run, one measure of the host
    stored = cache.get(machine_key("cpu"), Kernel.TORCH_INT4, signature_of(info), ())
    assert stored is not None
    assert stored.host == report.results[0].host  # the load is cached with the timings


def test_a_kernel_that_cannot_win_stops_being_timed_after_a_majority_of_the_rounds(
    checkpoint: Path, cache: TrialCache, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """gemm_torch made to sleep 50 ms in every call (right numbers, far slower than torch_int4 at every row count, even
    with torch_int4 stalled by a busy host: 8 ms per call at worst, seen here): after a majority of the rounds it
    cannot win, its trial ends there, ok and cached, and says so; torch_int4 runs every round."""
    from awq_autoselect.trials.interleave import ROUNDS, cut_after

    rounds = tmp_path / "rounds.log"
    _break(monkeypatch, "gemm_torch", "slow")
    monkeypatch.setenv("AWQ_TEST_ROUND_LOG", str(rounds))
    info = read_checkpoint(checkpoint)
    report = run_trials(info, [Kernel.TORCH_INT4, Kernel.GEMM_TORCH], device="cpu", rows=(1, 8), cache=cache)
    majority = cut_after(ROUNDS)
    assert 1 < majority < ROUNDS
    assert Counter(rounds.read_text().split()) == Counter({"torch_int4": ROUNDS, "gemm_torch": majority})
    fast, slow = report.results
    assert fast.ok and slow.ok, (fast.reason, slow.reason)
    assert f"timed in {majority} of {ROUNDS} rounds" in slow.reason
    assert "slower than torch_int4 everywhere, so it cannot win" in slow.reason
    assert all(len(t.eager_rounds) == majority for s in slow.shapes for t in s.timings)
    assert all(len(t.eager_rounds) == ROUNDS for s in fast.shapes for t in s.timings)
    assert cache.get(machine_key("cpu"), Kernel.GEMM_TORCH, signature_of(info), ()) is not None
    assert select_awq_version(info, device="cpu", measurements=report).kernel is Kernel.TORCH_INT4


def test_results_are_cached_and_reused(checkpoint: Path, cache: TrialCache) -> None:
    info = read_checkpoint(checkpoint)
    first = run_trials(info, [Kernel.TORCH_INT4], device="cpu", rows=(1,), cache=cache)
    assert first.from_cache == ()
    entries = list(cache.root.glob("*.json"))
    assert len(entries) == 1
    stored = json.loads(entries[0].read_text())
    assert stored["key"]["kernel"] == "torch_int4"
    assert stored["key"]["machine"]["torch"]
    assert stored["key"]["signature"]["shapes"] == [list(s) for s in info.shapes()]
    again = run_trials(info, [Kernel.TORCH_INT4], device="cpu", rows=(1,), cache=cache)
    assert again.from_cache == (Kernel.TORCH_INT4,)
    assert again.results == first.results
    # Another row count is measured and merged into the same entry.
    more = run_trials(info, [Kernel.TORCH_INT4], device="cpu", rows=(1, 4), cache=cache)
    assert more.from_cache == ()
    merged = cache.get(machine_key("cpu"), Kernel.TORCH_INT4, signature_of(info), ())
    assert merged is not None
    assert merged.rows_measured() == {1, 4}
    assert run_trials(info, [Kernel.TORCH_INT4], device="cpu", rows=(4,), cache=cache).from_cache == (
        Kernel.TORCH_INT4,
    )


def test_corrupt_and_stale_entries_are_ignored_with_a_log_line(
    checkpoint: Path, cache: TrialCache, caplog: pytest.LogCaptureFixture
) -> None:
    info = read_checkpoint(checkpoint)
    run_trials(info, [Kernel.TORCH_INT4], device="cpu", rows=(1,), cache=cache)
    (entry,) = cache.root.glob("*.json")
    machine, signature = machine_key("cpu"), signature_of(info)
    good = entry.read_text()
    for bad in ("{not json", json.dumps({"schema": "something/else"}), good.replace('"torch_int4"', '"gemm"', 1)):
        entry.write_text(bad)
        with caplog.at_level(logging.INFO, logger="awq_autoselect.trials.cache"):
            caplog.clear()
            assert cache.get(machine, Kernel.TORCH_INT4, signature, ()) is None
        assert "ignoring" in caplog.text
    data = json.loads(good)
    data["result"]["shapes"] = "garbage"
    entry.write_text(json.dumps(data))
    assert cache.get(machine, Kernel.TORCH_INT4, signature, ()) is None
    # A corrupt entry is a miss: the next trial measures again and replaces it.
    report = run_trials(info, [Kernel.TORCH_INT4], device="cpu", rows=(1,), cache=cache)
    assert report.from_cache == ()
    assert cache.get(machine, Kernel.TORCH_INT4, signature, ()) is not None


def test_two_processes_tuning_at_once_leave_a_valid_cache(checkpoint: Path, tmp_path: Path) -> None:
    root = tmp_path / "shared-cache"
    code = (
        "import sys; from pathlib import Path; "
        "from awq_autoselect.checkpoint import read_checkpoint; from awq_autoselect.catalogue import Kernel; "
        "from awq_autoselect.trials import run_trials, TrialCache; "
        "r = run_trials(read_checkpoint(sys.argv[1]), [Kernel.TORCH_INT4, Kernel.GEMM_TORCH], device='cpu', "
        "rows=(1, int(sys.argv[3])), cache=TrialCache(Path(sys.argv[2]))); "
        "sys.exit(0 if all(x.ok for x in r.results) else 1)"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(checkpoint), str(root), rows]) for rows in ("2", "8")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    cache = TrialCache(root)
    info = read_checkpoint(checkpoint)
    for kernel in (Kernel.TORCH_INT4, Kernel.GEMM_TORCH):
        entry = cache.get(machine_key("cpu"), kernel, signature_of(info), ())
        assert entry is not None
        assert entry.ok
        assert {1} <= entry.rows_measured()
    assert not [p for p in (root / "trials").iterdir() if p.name.startswith(".") and p.name != ".lock"]


def test_concurrent_writers_in_one_process_never_corrupt_an_entry(checkpoint: Path, cache: TrialCache) -> None:
    info = read_checkpoint(checkpoint)
    machine, signature = machine_key("cpu"), signature_of(info)
    results = [
        TrialResult(
            Kernel.GEMM_TORCH,
            TrialStatus.OK,
            "",
            "cpu",
            (ShapeResult(LayerShape(256, 256, 1), 0.0, (RowTiming(rows, 10.0 + rows, None),)),),
            1.0,
            "2026-12-01T00:00:00+00:00",
        )
        for rows in range(1, 9)
    ]
    threads = [threading.Thread(target=cache.put, args=(machine, Kernel.GEMM_TORCH, signature, r)) for r in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entry = cache.get(machine, Kernel.GEMM_TORCH, signature, ())
    assert entry is not None
    assert entry.rows_measured() == set(range(1, 9))  # the lock serialises read-merge-write


@pytest.mark.parametrize(
    ("how", "needle", "cause"),
    [
        ("segfault", "killed by SIGSEGV", FailureCause.CRASH),
        ("garbage", "wrong numbers", FailureCause.WRONG),
        ("raise", "illegal memory access", FailureCause.CRASH),
    ],
)
def test_a_kernel_that_breaks_is_isolated_and_rejected_with_the_reason(
    checkpoint: Path, cache: TrialCache, monkeypatch: pytest.MonkeyPatch, how: str, needle: str, cause: FailureCause
) -> None:
    _break(monkeypatch, "torch_int4", how)
    info = read_checkpoint(checkpoint)
    report = run_trials(info, [Kernel.TORCH_INT4, Kernel.GEMM_TORCH], device="cpu", rows=(1,), cache=cache)
    broken, fine = report.results
    assert broken.status is TrialStatus.BROKEN
    assert broken.cause is cause
    assert broken.confirmed
    assert needle in broken.reason
    assert fine.ok  # the next kernel's trial is unaffected
    selection = select_awq_version(info, device="cpu", measurements=report)
    assert selection.kernel is Kernel.GEMM_TORCH
    assert "measured broken on this machine" in selection.rejected[Kernel.TORCH_INT4][0]
    assert needle in selection.rejected[Kernel.TORCH_INT4][0]


def test_a_hanging_kernel_times_out_inconclusively_and_is_not_cached(
    checkpoint: Path, cache: TrialCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timeout says nothing about the kernel (a slow machine, a large model, a tiny timeout): it is not cached,
    and a later trial measures the kernel again."""
    _break(monkeypatch, "gemm_torch", "hang")
    info = read_checkpoint(checkpoint)
    report = run_trials(info, [Kernel.GEMM_TORCH], device="cpu", rows=(1,), cache=cache, timeout_s=20)
    (result,) = report.results
    assert result.status is TrialStatus.INCONCLUSIVE
    assert result.cause is FailureCause.TIMEOUT
    assert "did not finish within 20 s" in result.reason
    assert report.broken == {}
    assert report.inconclusive == {Kernel.GEMM_TORCH: result.reason}
    assert cache.get(machine_key("cpu"), Kernel.GEMM_TORCH, signature_of(info), ()) is None
    monkeypatch.delenv("AWQ_TEST_BREAK_KERNEL")
    again = run_trials(info, [Kernel.GEMM_TORCH], device="cpu", rows=(1,), cache=cache)
    assert again.from_cache == ()
    assert again.results[0].ok


def test_load_goes_on_with_the_next_kernel_when_one_kills_its_trial(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(tmp_path / "cache"))
    _break(monkeypatch, "torch_int4", "segfault")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)  # auto: a kernel that fails its trial is not chosen, quietly
        model, report = load_quantized_auto(checkpoint, device="cpu")
    assert report.kernel is Kernel.GEMM_TORCH
    assert not report.fell_back
    skipped = report.attempts[0]
    assert (skipped.kernel, skipped.stage, skipped.ok) == (Kernel.TORCH_INT4, "trial", False)
    assert "SIGSEGV" in skipped.message
    assert report.probe is not None
    assert report.probe.ok
    assert model is not None
    # Explicitly asked for: the fallback is announced, with the trial's reason.
    with pytest.warns(FallbackWarning, match="killed by SIGSEGV"):
        _, asked = load_quantized_auto(checkpoint, "torch_int4", device="cpu")
    assert asked.kernel is Kernel.GEMM_TORCH
    assert asked.fell_back
    # Explicitly asked for, without fallback: refused with the trial's reason, nothing loaded.
    from awq_autoselect.errors import VersionUnavailableError

    with pytest.raises(VersionUnavailableError, match="killed by SIGSEGV"):
        load_quantized_auto(checkpoint, "torch_int4", device="cpu", fallback=False)


def test_a_named_version_that_passes_its_trial_loads_quietly_whatever_comes_after_it(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A named version trials itself; the fallbacks only when it is broken (on the H200 with AutoAWQ's kernels,
    gemm_triton, asked for by name and working, loaded with a FallbackWarning naming gemv_fast's crash)."""
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(tmp_path / "cache"))
    _break(monkeypatch, "gemm_torch", "segfault")  # after torch_int4 in the chain
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        _, report = load_quantized_auto(checkpoint, "torch_int4", device="cpu")
    assert report.kernel is Kernel.TORCH_INT4
    assert not report.fell_back
    assert [(a.kernel, a.stage) for a in report.attempts] == [(Kernel.TORCH_INT4, "ok")]
    work = Workload(decode="eager")  # what the load on CPU trials with
    rows = (work.decode_rows, work.prefill_rows)
    known = cached_trials(read_checkpoint(checkpoint), [Kernel.TORCH_INT4, Kernel.GEMM_TORCH], device="cpu", rows=rows)
    assert [r.kernel for r in known.results] == [Kernel.TORCH_INT4]  # gemm_torch's trial never ran


def test_a_fallback_past_a_named_version_is_trialed_before_it_is_built(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The named kernel passes its trial, then fails in this process (here: a probe no kernel can pass); the next
    kernel is trialed before it is built, and one that kills its trial is never built here."""
    from awq_autoselect.errors import KernelFailedError

    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(tmp_path / "cache"))
    _break(monkeypatch, "gemm_torch", "segfault")
    with pytest.raises(KernelFailedError) as failed:
        load_quantized_auto(checkpoint, "torch_int4", device="cpu", probe_tolerance=1e-12)
    stages = [(a.kernel, a.stage) for a in failed.value.attempts]
    assert stages == [(Kernel.TORCH_INT4, "probe"), (Kernel.GEMM_TORCH, "trial")], stages
    assert "SIGSEGV" in failed.value.attempts[1].message


def test_auto_without_fallback_still_measures_every_candidate(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """fallback=False decides what happens when the chosen kernel fails to load, not how it is chosen: auto
    measures every viable kernel (on the H200 with AutoAWQ's kernels, trying only the first published one left
    the others unmeasured and auto took gemv at 6.34 ms/token where torch_int4 ran 5.49)."""
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(tmp_path / "cache"))
    _, report = load_quantized_auto(checkpoint, device="cpu", fallback=False)
    selection = report.selection
    assert selection is not None
    viable = [c for c in selection.candidates if c.viable]
    assert len(viable) >= 2
    assert all(c.rank_source == "measured" for c in viable), [(c.kernel, c.rank_source) for c in viable]
    assert report.kernel is viable[0].kernel


def _report(**ms: float) -> TrialReport:
    def result(kernel: str, us: float) -> TrialResult:
        shapes = tuple(
            ShapeResult(LayerShape(k, n, c), 0.001, (RowTiming(1, us, us / 2), RowTiming(128, us * 10, None)))
            for k, n, c in ((256, 256, 8), (256, 512, 4), (512, 256, 2))
        )
        return TrialResult(Kernel(kernel), TrialStatus.OK, "", "cuda:0", shapes, 1.0, "2026-12-01T00:00:00+00:00")

    return TrialReport("cuda:0", tuple(result(k, v) for k, v in ms.items()))


def test_selection_ranks_by_measurement_where_it_exists() -> None:
    env = Environment.assume(["gemv", "gemm", "torch_int4"], torch_version="2.6.0")
    published = select_awq_version({"bits": 4, "group_size": 128, "version": "gemm"}, capability="9.0", environment=env)
    assert published.chain[0] is Kernel.GEMV  # the published order
    assert all(c.rank_source == "published" for c in published.candidates)
    # Measurements need layer shapes: a checkpoint description with layers.
    info = _fake_info()
    measured = select_awq_version(
        info, capability="9.0", environment=env, measurements=_report(torch_int4=8.0, gemv=12.0)
    )
    assert measured.chain[:2] == (Kernel.TORCH_INT4, Kernel.GEMV)  # measured, fastest first
    assert measured.candidate("torch_int4").rank_source == "measured"
    assert measured.candidate("gemm").rank_source == "published"  # not measured: after the measured ones
    text = measured.explain()
    assert "measured" in text
    assert "published score" in text
    assert "ms per decode step" in text


def _fake_info() -> CheckpointInfo:
    """A CheckpointInfo with the shapes of the report above, described without files."""
    import dataclasses

    from awq_autoselect.catalogue import Layout
    from awq_autoselect.checkpoint import QuantConfig, QuantizedLayer

    layers = tuple(
        QuantizedLayer(f"model.layers.{i}.{name}", k, n, Layout.GEMM, False, k * n // 2)
        for i in range(2)
        for name, k, n in (
            ("a", 256, 256),
            ("b", 256, 256),
            ("c", 256, 256),
            ("d", 256, 256),
            ("e", 256, 512),
            ("f", 256, 512),
            ("g", 512, 256),
        )
    )
    info = CheckpointInfo(Path("/planned"), "llama", (), QuantConfig(), (), {}, layers, {})
    return dataclasses.replace(info)


def test_tune_prints_and_caches(checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(tmp_path / "cache"))
    code, out, _ = run_cli("tune", str(checkpoint), "--device", "cpu")
    assert code == 0
    assert "torch_int4" in out
    assert "gemm_torch" in out
    assert "selected:" in out
    assert "request ms" in out and "spread" in out and "margin" in out
    assert out.count("host while measuring: other processes used") == 2  # each result's load, from /proc/stat
    assert "ms to the winner (noise" in out or "tie (within noise)" in out  # the runner-up's margin, or the tie
    code, out, _ = run_cli("tune", str(checkpoint), "--device", "cpu", "--json")
    data = json.loads(out)
    assert data["schema"] == "awq-autoselect.tune/1"
    assert {r["kernel"] for r in data["results"]} == {"torch_int4", "gemm_torch"}
    first, second = data["selection"]["candidates"][:2]
    assert first["rank_source"] == "measured"
    assert first["spread_ms"] is not None and first["margin_ms"] == 0
    assert second["margin_ms"] == pytest.approx(second["measured_ms"] - first["measured_ms"])
    assert all(r["host"]["cpus"] >= 1 for r in data["results"])
    code, out, _ = run_cli("select", "--checkpoint", str(checkpoint), "--device", "cpu")
    assert "ranked by trials measured on this machine" in out  # select reads what tune cached
    assert "ms/request, spread" in out
    assert " won by " in out or "tie (within noise) for the first place" in out


def test_tune_measures_every_batch_size_it_is_given(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(tmp_path / "cache"))
    code, out, _ = run_cli("tune", str(checkpoint), "--device", "cpu", "--batch-size", "1,3", "--json")
    assert code == 0
    data = json.loads(out)
    assert [s["workload"]["batch_size"] for s in data["selections"]] == [1, 3]
    for result in data["results"]:
        if result["status"] == "ok":
            rows = {t["rows"] for shape in result["shapes"] for t in shape["timings"]}
            assert {1, 3} <= rows
    code, out, _ = run_cli("tune", str(checkpoint), "--device", "cpu", "--batch-size", "1,3")
    assert out.count("selected:") == 2
    for batch in (1, 3):  # both batch sizes are answered from the cache, as measured
        code, out, _ = run_cli(
            "select",
            "--checkpoint",
            str(checkpoint),
            "--device",
            "cpu",
            "--batch-size",
            str(batch),
            "--decode",
            "eager",
        )
        assert code == 0
        assert "ranked by trials measured on this machine" in out


def test_bench_reports_a_crashing_version_and_measures_the_others(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(tmp_path / "cache"))
    _break(monkeypatch, "gemm_torch", "segfault")
    from awq_autoselect.bench import Status, benchmark_versions

    report = benchmark_versions(
        checkpoint, ("gemm_torch", "torch_int4"), prompt_tokens=4, new_tokens=2, repeats=1, warmup=0, device="cpu"
    )
    crashed, fine = report.result("gemm_torch"), report.result("torch_int4")
    assert crashed.status is Status.FAILED
    assert crashed.reason is not None
    assert "SIGSEGV" in crashed.reason
    assert crashed.load is None  # never loaded in this process
    assert fine.status is Status.OK
    assert fine.batches[0].tpot_ms is not None


def test_a_kernel_that_cannot_store_a_zero_point_of_0_is_tried_with_zero_points_from_1() -> None:
    import torch

    from awq_autoselect.trials.child import _random_weight

    shape = LayerShape(in_features=512, out_features=256, count=1)
    drawn = _random_weight(shape, 32, True, 0, torch.device("cpu"))
    lifted = _random_weight(shape, 32, True, 0, torch.device("cpu"), lowest_zero=1)
    assert drawn.zeros is not None and lifted.zeros is not None
    assert (int(drawn.zeros.min()), int(drawn.zeros.max())) == (0, 15)
    assert (int(lifted.zeros.min()), int(lifted.zeros.max())) == (1, 15)


@pytest.mark.parametrize(("kernel", "lowest"), [(Kernel.EXLLAMA, 1), (Kernel.EXLLAMAV2, 1), (Kernel.GEMM_TORCH, 0)])
def test_a_trial_draws_the_zero_points_its_kernel_can_store(
    monkeypatch: pytest.MonkeyPatch, kernel: Kernel, lowest: int
) -> None:
    from awq_autoselect.trials import child

    drawn: list[int] = []
    original = child._random_weight

    def recording(*args: Any, lowest_zero: int = 0) -> Any:
        drawn.append(lowest_zero)
        return original(*args, lowest_zero=lowest_zero)

    monkeypatch.setattr(child, "_random_weight", recording)
    job: dict[str, object] = {
        "kernel": kernel.value,
        "device": "cpu",
        "shapes": [[256, 128, 1]],
        "group_size": 128,
        "zero_point": True,
        "rows": [1],
        "graph": False,
        "tolerance": 0.02,
    }
    child.run_job(job)  # ExLlama cannot run on a CPU: broken after drawing its weights, which is what is checked
    assert drawn and set(drawn) == {lowest}


@pytest.mark.parametrize(
    ("explicit", "variable", "expected"),
    [
        (True, "0", True),  # the caller's word wins
        (False, "1", False),
        (None, "1", True),
        (None, "off", False),
        (None, "", False),  # automatic: pytest's stderr is no terminal, and no notebook runs this
        (None, None, False),
    ],
)
def test_when_the_trials_draw_a_progress_bar(
    monkeypatch: pytest.MonkeyPatch, explicit: bool | None, variable: str | None, expected: bool
) -> None:
    if variable is None:
        monkeypatch.delenv(PROGRESS_ENV, raising=False)
    else:
        monkeypatch.setenv(PROGRESS_ENV, variable)
    assert progress_enabled(explicit) is expected


def test_a_progress_setting_that_means_nothing_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROGRESS_ENV, "sometimes")
    with pytest.raises(InvalidArgumentError, match=f"{PROGRESS_ENV}='sometimes' is not valid: expected 1, .* or 0"):
        progress_enabled()
    with pytest.raises(InvalidArgumentError, match="progress='yes'"):
        progress_enabled("yes")  # type: ignore[arg-type]


def test_trials_that_run_draw_a_bar_on_stderr_and_cached_answers_none(
    checkpoint: Path, cache: TrialCache, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    info = read_checkpoint(checkpoint)
    run_trials(info, [Kernel.GEMM_TORCH], device="cpu", rows=(1,), cache=cache, show_progress=True)
    err = capsys.readouterr().err
    assert "awq-autoselect trials on cpu" in err  # tqdm's text form, on the captured stderr
    assert "1/1" in err and "kernel" in err
    run_trials(info, [Kernel.GEMM_TORCH], device="cpu", rows=(1,), cache=cache, show_progress=True)
    assert capsys.readouterr().err == ""  # answered by the cache: nothing ran, nothing to show
    run_trials(info, [Kernel.GEMM_TORCH], device="cpu", rows=(1,), cache=cache, use_cache=False)
    assert capsys.readouterr().err == ""  # automatic, and stderr is no terminal: no bar


# --- verdicts by cause -------------------------------------------------------------------------------------------


def test_a_crash_is_confirmed_in_a_second_child_before_it_is_cached(
    checkpoint: Path, cache: TrialCache, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = tmp_path / "trials.log"
    _break(monkeypatch, "torch_int4", "segfault", log=log)
    info = read_checkpoint(checkpoint)
    report = run_trials(info, [Kernel.TORCH_INT4, Kernel.GEMM_TORCH], device="cpu", rows=(1,), cache=cache)
    crashed, fine = report.results
    assert (crashed.status, crashed.cause, crashed.confirmed) == (TrialStatus.BROKEN, FailureCause.CRASH, True)
    assert "repeated in a second trial process" in crashed.reason
    assert fine.ok
    assert _children(log) == Counter({"torch_int4": 2, "gemm_torch": 1})  # the crash ran twice, the pass once
    stored = cache.get(machine_key("cpu"), Kernel.TORCH_INT4, signature_of(info), ())
    assert stored is not None
    assert (stored.cause, stored.confirmed) == (FailureCause.CRASH, True)
    again = run_trials(info, [Kernel.TORCH_INT4, Kernel.GEMM_TORCH], device="cpu", rows=(1,), cache=cache)
    assert again.from_cache == (Kernel.TORCH_INT4, Kernel.GEMM_TORCH)
    assert _children(log) == Counter({"torch_int4": 2, "gemm_torch": 1})


def test_a_crash_that_does_not_repeat_is_avoided_for_this_call_but_not_cached(
    checkpoint: Path, cache: TrialCache, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = tmp_path / "trials.log"
    _break(monkeypatch, "torch_int4", "segfault", log=log, once=tmp_path / "crashed-once")
    info = read_checkpoint(checkpoint)
    report = run_trials(info, [Kernel.TORCH_INT4], device="cpu", rows=(1,), cache=cache)
    (result,) = report.results
    assert (result.status, result.cause, result.confirmed) == (TrialStatus.BROKEN, FailureCause.CRASH, False)
    assert "not repeated in a second trial process, which passed; not cached" in result.reason
    assert _children(log) == Counter({"torch_int4": 2})
    assert cache.get(machine_key("cpu"), Kernel.TORCH_INT4, signature_of(info), ()) is None
    assert select_awq_version(info, device="cpu", measurements=report).kernel is not Kernel.TORCH_INT4


def test_a_child_ended_from_outside_is_retried_once(
    checkpoint: Path, cache: TrialCache, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = tmp_path / "trials.log"
    _break(monkeypatch, "gemm_torch", "terminate", log=log, once=tmp_path / "terminated-once")
    info = read_checkpoint(checkpoint)
    (result,) = run_trials(info, [Kernel.GEMM_TORCH], device="cpu", rows=(1,), cache=cache).results
    assert result.ok, result.reason
    assert "retried after the first trial process was interrupted" in result.reason
    assert _children(log) == Counter({"gemm_torch": 2})
    assert cache.get(machine_key("cpu"), Kernel.GEMM_TORCH, signature_of(info), ()) is not None


def test_out_of_memory_in_every_trial_is_inconclusive_the_load_goes_on_and_a_later_load_measures(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Seen on main 54e2287: trials that ran out of memory cached both CPU kernels "broken", and every later load
    of the checkpoint failed with NoCompatibleKernelError. Here a real allocation failure in each trial."""
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(tmp_path / "cache"))
    log = tmp_path / "trials.log"
    _break(monkeypatch, "torch_int4,gemm_torch", "oom", log=log)
    info = read_checkpoint(checkpoint)
    published = select_awq_version(info, device="cpu", measurements=False)
    with pytest.warns(FallbackWarning, match="could not measure .*ranked by published scores"):
        _, report = load_quantized_auto(checkpoint, device="cpu")
    assert report.kernel is published.kernel  # the published rank, for this load
    assert not report.fell_back  # an inconclusive trial blames no kernel
    unmeasured = [a for a in report.attempts if a.stage == "unmeasured"]
    assert {a.kernel for a in unmeasured} == {Kernel.TORCH_INT4, Kernel.GEMM_TORCH}
    assert all("can't allocate memory" in a.message for a in unmeasured)
    assert report.selection is not None
    assert any("inconclusive" in note for note in report.selection.notes)
    assert _children(log) == Counter({"torch_int4": 1, "gemm_torch": 1})  # neither confirmed nor retried
    assert TrialCache().entries() == ()  # nothing cached
    monkeypatch.delenv("AWQ_TEST_BREAK_KERNEL")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        _, later = load_quantized_auto(checkpoint, device="cpu")
    assert later.selection is not None
    viable = [c for c in later.selection.candidates if c.viable]
    assert len(viable) >= 2
    assert all(c.rank_source == "measured" for c in viable)


def test_a_bad_trial_timeout_is_refused_before_any_trial_and_a_default_load_then_succeeds(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Seen on main 54e2287: AWQ_AUTOSELECT_TRIAL_TIMEOUT=-5 killed every trial at once and cached each kernel
    "broken"; every later load failed."""
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(tmp_path / "cache"))
    log = tmp_path / "trials.log"
    _break(monkeypatch, "", "", log=log)
    monkeypatch.setenv("AWQ_AUTOSELECT_TRIAL_TIMEOUT", "-5")
    with pytest.raises(InvalidArgumentError, match="AWQ_AUTOSELECT_TRIAL_TIMEOUT='-5' is not valid"):
        load_quantized_auto(checkpoint, device="cpu")
    with pytest.raises(InvalidArgumentError, match="timeout_s=-5"):
        run_trials(read_checkpoint(checkpoint), [Kernel.GEMM_TORCH], device="cpu", rows=(1,), timeout_s=-5)
    assert not log.exists()
    monkeypatch.delenv("AWQ_AUTOSELECT_TRIAL_TIMEOUT")
    _, report = load_quantized_auto(checkpoint, device="cpu")
    assert report.probe is not None
    assert report.probe.ok


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (ModuleNotFoundError("External AWQ kernels are not properly installed.No module named 'awq_ext'"), "import"),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), "crash"),
        (RuntimeError("CUDA error: device-side assert triggered"), "crash"),
        (RuntimeError("CUDA error: no kernel image is available for execution on the device"), "no_image"),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "oom"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"), "oom"),
        (MemoryError(), "oom"),
        (KeyboardInterrupt(), "interrupted"),
        (AssertionError("Please install IPEX package"), "error"),
        (TypeError("'<' not supported between instances of 'NoneType' and 'int'"), "error"),
    ],
)
def test_what_an_exception_in_a_trial_says_about_the_kernel(error: BaseException, cause: str) -> None:
    assert cause_of(error) is FailureCause(cause)


def test_only_the_kernel_s_own_failures_blame_it() -> None:
    import torch

    assert cause_of(torch.OutOfMemoryError("CUDA out of memory")) is FailureCause.OOM
    blamed = {c for c in FailureCause if c.blames_kernel}
    assert blamed == {
        FailureCause.CRASH,
        FailureCause.WRONG,
        FailureCause.IMPORT,
        FailureCause.NO_IMAGE,
        FailureCause.ERROR,
    }
    timeout = TrialResult.failed(Kernel.GEMM_TORCH, "cpu", FailureCause.TIMEOUT, "did not finish", 1.0)
    assert timeout.status is TrialStatus.INCONCLUSIVE
    assert not timeout.cacheable
    with pytest.raises(ValueError, match="inconclusive"):
        TrialResult.broken(Kernel.GEMM_TORCH, "cpu", "did not finish", 1.0, FailureCause.TIMEOUT)
    unconfirmed = TrialResult.broken(Kernel.GEMM_TORCH, "cpu", "crashed once", 1.0, FailureCause.CRASH)
    assert not unconfirmed.cacheable
    signature = signature_of(_fake_info())
    with pytest.raises(ValueError, match="never cached"):
        TrialCache(Path("/nonexistent")).put(machine_key("cpu"), Kernel.GEMM_TORCH, signature, unconfirmed)


def test_what_cannot_win_is_decided_at_every_shared_point_with_noise_on_its_side() -> None:
    from awq_autoselect.trials.interleave import CUT_FACTOR, cannot_win

    a, b, c = Kernel.TORCH_INT4, Kernel.GEMM_TRITON, Kernel.GEMM_TORCH
    fast = [{(1, "eager"): 1.0, (1, "graph"): 0.5}, {(1, "eager"): 1.2, (1, "graph"): 0.6}]
    far = [{(1, "eager"): 10.0, (1, "graph"): 5.0}]
    assert set(cannot_win({a: fast, c: far})) == {c}
    # Slower everywhere but not by the factor at one point (its best against the other's worst): it stays.
    close = [{(1, "eager"): 10.0, (1, "graph"): 0.6 * CUT_FACTOR}]
    assert cannot_win({a: fast, b: close}) == {}
    # Faster at one row count: a workload of that row count could choose it.
    split = [{(1, "eager"): 10.0, (8, "eager"): 0.1}]
    assert cannot_win({a: [{(1, "eager"): 1.0, (8, "eager"): 1.0}], b: split}) == {}
    # Only the points both measured count; with none shared, nothing is decided.
    assert set(cannot_win({a: fast, b: [{(1, "eager"): 9.0}]})) == {b}
    assert cannot_win({a: [{(1, "graph"): 1.0}], b: [{(1, "eager"): 9.0}]}) == {}
    # No rounds yet, or a round that carried no costs: nothing is decided.
    assert cannot_win({a: [], b: far}) == {}
    assert cannot_win({a: [{}], b: far}) == {}
    reason = cannot_win({a: fast, c: far})[c]
    assert "8.3x slower than torch_int4" in reason  # 10.0 / 1.2 and 5.0 / 0.6: the smaller ratio
