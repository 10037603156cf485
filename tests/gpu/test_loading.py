"""load_quantized_auto() on a real CUDA GPU (run with ``pytest -m gpu``).

On the lent H100/H200 (torch 2.11 + CUDA 13) AutoAWQ's compiled kernels cannot import: the loader must say so,
fall back, and still produce a model whose probe passes and which generates text.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from awq_autoselect import FallbackWarning, Kernel, load_quantized_auto, settings
from awq_autoselect.environment import Environment, probe_environment
from awq_autoselect.loading import LoadResult
from awq_autoselect.selection import select_awq_version
from tests.helpers import QuantizedFactory

pytestmark = pytest.mark.gpu


def _record(name: str, result: LoadResult, generated: list[int]) -> None:
    """Keep the report for docs/gpu-runs.md when AWQ_AUTOSELECT_REPORT_DIR is set (awq_autoselect.settings)."""
    report_dir = settings.current().report_dir
    if report_dir is not None:
        data = result.report.to_dict()
        data.pop("selection", None)
        data["generated_ids"] = generated
        Path(report_dir, f"load-{name}.json").write_text(json.dumps(data, indent=2))


def _generate(result: LoadResult) -> list[int]:
    generate = getattr(result.model, "generate")  # noqa: B009 - AutoAWQ's wrapper is untyped
    ids = torch.tensor([[1, 17, 42, 99, 150]], device="cuda")
    with torch.no_grad():
        out = generate(input_ids=ids, max_new_tokens=8, do_sample=False)
    tokens: list[int] = out[0].tolist()
    assert len(tokens) == 13
    return tokens


@pytest.mark.parametrize("layout", ["gemm", "gemv"])
@pytest.mark.parametrize("version", ["auto", "gemv"])
def test_checkpoint_loads_and_generates_on_cuda(quantized: QuantizedFactory, layout: str, version: str) -> None:
    path = quantized(version=layout, group_size=128)
    env = probe_environment()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FallbackWarning)
        result = load_quantized_auto(path, version, device="cuda", fast_decode="graph")
    report = result.report
    assert report.kernel is not None
    assert report.probe is not None
    assert report.probe.ok, report.probe.message
    assert report.device.startswith("cuda")
    if not env.available("awq_ext"):
        # The situation on current PyTorch: GEMV cannot run, and the report says why.
        assert report.kernel is not Kernel.GEMV
        if version == "gemv":
            assert report.attempts[0].kernel is Kernel.GEMV
            assert not report.attempts[0].ok
            assert "awq_ext" in report.attempts[0].message
            assert any(issubclass(w.category, FallbackWarning) for w in caught)
    on_device = {t.device.type for t in (*result.model.parameters(), *result.model.buffers())}
    assert on_device == {"cuda"}, "every parameter and buffer (rotary inv_freq included) must be on the GPU"
    if layout == "gemv" and report.kernel is not Kernel.GEMV:
        assert any("gemv -> gemm" in c for c in report.conversions)
    _record(f"{layout}-{version}", result, _generate(result))


def test_planned_gemv_fails_for_real_and_falls_back(quantized: QuantizedFactory) -> None:
    """Plan as if AutoAWQ's kernels were installed; the real attempt must fail, be reported, and fall back."""
    env = probe_environment()
    if env.available("awq_ext"):
        pytest.skip("awq_ext imports here: GEMV would not fail")
    path = quantized(version="gemv", group_size=128)
    plan = select_awq_version(
        path, capability=torch.cuda.get_device_capability(), device="cuda", environment=Environment.assume()
    )
    assert plan.chain[0] is not Kernel.GEMM_TORCH
    with pytest.warns(FallbackWarning):
        result = load_quantized_auto(path, device="cuda", selection=plan, fast_decode="graph")
    failed = [a for a in result.report.attempts if not a.ok]
    assert failed
    assert result.report.probe is not None
    assert result.report.probe.ok
    _record("planned-all-kernels", result, _generate(result))


@pytest.mark.parametrize("kernel", ["gemm_triton", "torch_int4", "gemm_torch"])
def test_each_available_kernel_passes_the_probe(quantized: QuantizedFactory, kernel: str) -> None:
    path = quantized(version="gemm", group_size=128)
    result = load_quantized_auto(path, kernel, device="cuda", fallback=False)
    assert result.report.kernel is Kernel(kernel)
    assert result.report.probe is not None
    assert result.report.probe.ok, result.report.probe.message
    assert result.report.probe.max_rel_error < 0.02


def test_fused_layers_request_without_awq_ext_runs_unfused(quantized: QuantizedFactory) -> None:
    path = quantized(version="gemm", group_size=128)
    result = load_quantized_auto(path, "gemm_triton", device="cuda", fuse_layers=True)
    assert result.report.probe is not None
    assert result.report.probe.ok
    if not probe_environment().available("awq_ext"):
        assert not result.report.fused  # AutoAWQ skips fusing without awq_ext; the report says what happened


@pytest.mark.parametrize("fast_decode", ["compile", "graph"])
def test_the_first_generate_writes_its_compile_time_into_the_report(
    quantized: QuantizedFactory, fast_decode: str
) -> None:
    """On CUDA the first generate() compiles the step (compile) and captures its graph (both): the report made at
    load time says "not run yet", then the seconds that took."""
    path = quantized(version="gemm", group_size=128)
    result = load_quantized_auto(path, "torch_int4", device="cuda", fast_decode=fast_decode)
    report = result.report
    assert report.decode == fast_decode
    assert report.stages is not None
    assert report.stages.total <= report.seconds
    assert report.to_dict()["first_compile_seconds"] is None
    assert "first compile: at the first generate() (not run yet)" in str(report)
    _generate(result)
    seconds = report.to_dict()["first_compile_seconds"]
    assert isinstance(seconds, float)
    assert seconds > 0
    assert f"first compile: {seconds:.2f} s" in str(report)
