"""Trials and the measured choice on a real GPU (``pytest -m gpu``), with or without AutoAWQ's compiled kernels.

Whatever this machine has: every viable kernel is tried in a child process; the ones that work are timed (eager
and in a CUDA graph), the ones that crash or compute wrong numbers are broken with the reason, and this process
keeps working. Where AutoAWQ's kernels import (compiled from source on the lent H200), GEMV_fast at a 7B shape
is such a crash, and an in-process load of it without fallback ends as CudaContextPoisonedError / exit 4.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from awq_autoselect import Kernel, load_quantized_auto
from awq_autoselect.catalogue import CATALOGUE
from awq_autoselect.checkpoint import read_checkpoint
from awq_autoselect.environment import probe_environment
from awq_autoselect.selection import select_awq_version
from awq_autoselect.testing import make_synthetic_checkpoint
from awq_autoselect.trials import DecodeMode, TrialCache, run_trials
from tests.helpers import QuantizedFactory

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def one_7b_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Llama-2-7B's layer shapes (one decoder layer), in AutoAWQ's format."""
    return make_synthetic_checkpoint(
        tmp_path_factory.mktemp("l7b") / "ckpt", shape="llama-2-7b", num_layers=1, device="cuda"
    )


def _viable(path: Path) -> tuple[Kernel, ...]:
    return select_awq_version(path, device="cuda", measurements=False, strict=False).chain


def test_every_viable_kernel_is_tried_in_its_own_process(one_7b_layer: Path) -> None:
    info = read_checkpoint(one_7b_layer)
    kernels = _viable(one_7b_layer)
    # The session's cache (a fresh folder per test process, conftest): the next test's load finds these results.
    report = run_trials(info, kernels, device="cuda:0", rows=(1, 8, 128), cache=TrialCache())
    assert [r.kernel for r in report.results] == list(kernels)
    torch_int4 = report.result(Kernel.TORCH_INT4)
    assert torch_int4 is not None
    assert torch_int4.ok, torch_int4.reason
    for shape in torch_int4.shapes:
        for timing in shape.timings:
            assert timing.eager_us > 0
            assert timing.graph_us is not None  # tinygemm is capturable
            assert timing.graph_us > 0
    assert torch_int4.layers_ms(1, DecodeMode.GRAPH) is not None
    for result in report.results:
        assert result.ok or result.reason, result.kernel
    # this process is untouched by whatever the children did
    assert float((torch.ones(2, device="cuda") * 2).sum()) == 4.0
    if probe_environment().available("awq_v2_ext"):
        gemv_fast = report.result(Kernel.GEMV_FAST)
        assert gemv_fast is not None
        assert not gemv_fast.ok  # an illegal memory access at every 7B shape on the H200 (docs/gpu-runs.md)


def test_auto_loads_the_fastest_kernel_that_passed(one_7b_layer: Path) -> None:
    model: Any
    model, report = load_quantized_auto(one_7b_layer, device="cuda", fast_decode="graph")
    assert report.kernel is not None
    assert report.probe is not None
    assert report.probe.ok
    selection = report.selection
    assert selection is not None
    measured = [c for c in selection.candidates if c.viable and c.measured_ms is not None]
    assert measured
    assert report.kernel is measured[0].kernel  # fastest measured first
    best = measured[0].measured_ms
    assert best is not None
    assert all(best <= c.measured_ms for c in measured if c.measured_ms is not None)
    ids = torch.tensor([[1, 5, 9]], device="cuda")
    assert model.generate(input_ids=ids, max_new_tokens=4).shape == (1, 7)


def test_an_in_process_crash_without_fallback_is_exit_4(one_7b_layer: Path) -> None:
    if not probe_environment().available("awq_v2_ext"):
        pytest.skip("awq_v2_ext does not import here: GEMV_fast cannot run, so it cannot crash")
    env = {**os.environ, "AWQ_AUTOSELECT_TRIALS": "0"}  # in this process, on purpose
    done = subprocess.run(
        [sys.executable, "-m", "awq_autoselect", "load", str(one_7b_layer), "--version", "gemv_fast", "--no-fallback"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ")
    assert "CUDA context" in done.stderr


def test_a_tiny_checkpoint_tunes_and_selects(quantized: QuantizedFactory, tmp_path: Path) -> None:
    path = quantized(version="gemm", group_size=128)
    report = run_trials(read_checkpoint(path), _viable(path), device="cuda:0", rows=(1,), cache=TrialCache(tmp_path))
    selection = select_awq_version(path, device="cuda", measurements=report)
    ok = [r.kernel for r in report.results if r.ok]
    assert selection.kernel in ok
    assert selection.candidate(selection.kernel).rank_source == "measured"
    assert all(k in CATALOGUE for k in ok)
