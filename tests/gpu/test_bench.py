"""benchmark_versions() on the lent GPU: kernel time, memory and bandwidth are measured there. No timing limits.

Run with ``pytest -m gpu``. Versions that need AutoAWQ's compiled kernels may be unavailable on the GPU image
(research/h200-measurements.md); the tests use the Triton GEMM kernel and the dense baseline, which run there,
and check that whatever is unavailable comes with a reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from awq_autoselect.bench import (
    BenchmarkMode,
    BenchmarkReport,
    RunKind,
    Status,
    benchmark_versions,
    read_csv,
    validate_report_dict,
)
from awq_autoselect.bench.metadata import measure_copy_gbps
from awq_autoselect.bench.timing import BenchDevice
from tests.helpers import QuantizedFactory

pytestmark = pytest.mark.gpu

PROMPT, NEW, REPEATS = 16, 8, 2


@pytest.fixture(scope="module")
def checkpoint(quantized: QuantizedFactory) -> Path:
    if not torch.cuda.is_available():
        pytest.fail("the gpu tests need CUDA: run them on the lent GPU (pytest -m gpu)")
    return quantized(version="gemm", group_size=64)


@pytest.fixture(scope="module", params=[False, True], ids=["eager", "cuda_graph"])
def report(request: pytest.FixtureRequest, checkpoint: Path) -> BenchmarkReport:
    return benchmark_versions(
        checkpoint,
        ("gemm_triton", "gemm_torch", "gemv"),
        prompt_tokens=PROMPT,
        new_tokens=NEW,
        batch_sizes=(1, 2),
        repeats=REPEATS,
        warmup=1,
        include_fp16=True,
        cuda_graph=request.param,
        progress=False,
    )


def test_gpu_numbers_are_measured(report: BenchmarkReport) -> None:
    meta = report.metadata
    assert meta.device.startswith("cuda")
    assert meta.gpu_name
    assert meta.gpu_capability
    assert meta.cuda_version
    assert meta.peak_bandwidth_gbps is not None
    assert meta.peak_bandwidth_gbps > 0
    assert meta.peak_bandwidth_source is not None
    assert report.mode is BenchmarkMode.INTERLEAVED
    ok = [r for r in report.results if r.status is Status.OK]
    assert {r.version for r in ok} >= {"gemm_triton", "fp16"}, [(r.version, r.reason) for r in report.results]
    for result in ok:
        assert result.weights_bytes is not None
        assert result.weights_bytes > 0
        for batch in result.batches:
            assert batch.status is Status.OK, batch.reason
            assert batch.tpot_ms is not None
            assert batch.kernel_ms_per_token is not None, batch.kernel_time_note
            assert batch.kernel_ms_per_token > 0
            assert batch.kernel_ms_per_token <= batch.tpot_ms.median  # GPU busy time fits in the wall time
            assert batch.top_kernels
            assert sum(k.ms_per_token for k in batch.top_kernels) <= batch.kernel_ms_per_token * (1 + 1e-9)
            assert batch.peak_memory_bytes is not None
            assert batch.peak_memory_bytes > 0
            assert batch.peak_run_delta_bytes is not None
            assert batch.peak_memory_bytes >= result.weights_bytes
            assert batch.bandwidth_fraction is not None
            assert 0 < batch.bandwidth_fraction < 1.5
            assert batch.achieved_bandwidth_gbps is not None
            assert batch.achieved_bandwidth_gbps > 0


def test_unavailable_versions_say_why(report: BenchmarkReport) -> None:
    for result in report.results:
        if result.status is not Status.OK:
            assert result.reason, result.version


def test_one_profiled_run_per_version_and_batch_size(report: BenchmarkReport) -> None:
    ok = [r.version for r in report.results if r.status is Status.OK]
    profiled = [(ref.version, ref.batch_size) for ref in report.run_order if ref.kind is RunKind.PROFILE]
    assert sorted(profiled) == sorted((v, b) for v in ok for b in (1, 2))
    # the profiled runs come after every timed run of their batch size
    for ref in report.run_order:
        if ref.kind is RunKind.PROFILE:
            timed = [
                r.order for r in report.run_order if r.batch_size == ref.batch_size and r.kind is not RunKind.PROFILE
            ]
            assert ref.order > max(timed)


def test_cuda_graph_state_is_recorded(report: BenchmarkReport) -> None:
    for result in report.results:
        for batch in result.batches:
            if "graph" in report.settings.decode:
                assert batch.graph_enabled is not None
                assert batch.graph_enabled or batch.graph_fallback_reason
                assert batch.state_bytes is not None
            else:
                assert batch.graph_enabled is None


def test_exports_round_trip(report: BenchmarkReport, tmp_path: Path) -> None:
    assert validate_report_dict(report.to_dict()) == []
    assert BenchmarkReport.from_json(report.to_json()) == report
    assert read_csv(report.write_csv(tmp_path / "bench.csv")) == report.rows()
    text = report.to_markdown()
    for version in report.settings.versions:
        assert f"| {version} |" in text


def test_measured_copy_bandwidth_is_a_plausible_fallback(report: BenchmarkReport) -> None:
    """The fallback for GPUs missing from the datasheet table: a device-to-device copy, below the datasheet peak."""
    measured = measure_copy_gbps(BenchDevice(torch.device(report.metadata.device)))
    assert measured is not None
    assert measured > 0
    if report.metadata.peak_bandwidth_source and report.metadata.peak_bandwidth_source.startswith("datasheet"):
        assert report.metadata.peak_bandwidth_gbps is not None
        assert measured < 1.2 * report.metadata.peak_bandwidth_gbps
