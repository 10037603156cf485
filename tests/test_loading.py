"""load_quantized_auto() on CPU with real AutoAWQ checkpoints: conversions, probe, fallback, bad input."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from awq_autoselect import FallbackWarning, Kernel
from awq_autoselect.catalogue import Layout
from awq_autoselect.errors import (
    CorruptCheckpointError,
    InvalidArgumentError,
    KernelFailedError,
    UnknownVersionError,
    VersionUnavailableError,
)
from awq_autoselect.loading import Attempt, LoadResult, load_dense_baseline, load_quantized_auto
from tests.helpers import QuantizedFactory, copy_checkpoint

IDS = torch.tensor([[1, 17, 42, 99, 150, 301, 7, 255, 12, 64]])


def logits(result: LoadResult) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = result.model(IDS).logits.float()
    return out


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.fixture(scope="module")
def dense_reference(quantized: QuantizedFactory) -> Callable[[str, int], torch.Tensor]:
    cache: dict[tuple[str, int], torch.Tensor] = {}

    def get(version: str, group_size: int) -> torch.Tensor:
        key = (version, group_size)
        if key not in cache:
            result = load_dense_baseline(quantized(version=version, group_size=group_size), device="cpu")
            cache[key] = logits(result)
        return cache[key]

    return get


@pytest.mark.parametrize("group_size", [64, 128])
@pytest.mark.parametrize("version", ["gemm", "gemv"])
def test_auto_load_on_cpu_matches_dequantized_reference(
    quantized: QuantizedFactory, dense_reference: Callable[[str, int], torch.Tensor], version: str, group_size: int
) -> None:
    path = quantized(version=version, group_size=group_size)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)  # auto on CPU picks a viable kernel directly
        result = load_quantized_auto(path, device="cpu")
    report = result.report
    assert report.kernel in (Kernel.GEMM_TORCH, Kernel.TORCH_INT4)
    assert report.checkpoint_layout is Layout(version)
    assert report.probe is not None and report.probe.ok, report.probe
    assert report.probe.checks, "the probe compared no layer"
    assert report.attempts[-1].ok
    if version == "gemv":
        assert any("gemv -> gemm" in c for c in report.conversions)
    tolerance = 2e-3 if report.kernel is Kernel.GEMM_TORCH else 3e-2
    assert rel(logits(result), dense_reference(version, group_size)) < tolerance


def test_gemv_and_gemm_checkpoints_give_identical_logits_through_conversion(quantized: QuantizedFactory) -> None:
    # AutoAWQ quantizes to the same integers whatever the version; only the packing differs. The GEMV -> GEMM
    # conversion is exact, so the two checkpoints must produce bit-identical logits on the same kernel.
    a = load_quantized_auto(quantized(version="gemm", group_size=64), "gemm_torch", device="cpu")
    with pytest.warns(FallbackWarning):
        pass_through = load_quantized_auto(quantized(version="gemv", group_size=64), "gemv", device="cpu")
    b = load_quantized_auto(quantized(version="gemv", group_size=64), "gemm_torch", device="cpu")
    assert torch.equal(logits(a), logits(b))
    assert pass_through.report.kernel is not Kernel.GEMV


def test_gemv_request_on_cpu_falls_back_with_warning_and_report(quantized: QuantizedFactory) -> None:
    path = quantized(version="gemv", group_size=128)
    with pytest.warns(FallbackWarning, match="gemv"):
        result = load_quantized_auto(path, version="gemv", device="cpu")
    report = result.report
    assert report.requested == "gemv"
    assert report.fell_back
    first = report.attempts[0]
    assert first.kernel is Kernel.GEMV and not first.ok and first.stage == "skipped"
    assert "cuda" in first.message.lower()  # GEMV needs a CUDA device (and awq_ext)
    assert report.kernel in (Kernel.GEMM_TORCH, Kernel.TORCH_INT4)
    assert any("gemv -> gemm" in c for c in report.conversions)
    text = str(report)
    assert "gemv" in text
    assert "not tried" in text
    json.dumps(report.to_dict())  # JSON-ready


def test_runtime_failures_fall_back_through_a_planned_chain(quantized: QuantizedFactory) -> None:
    """Plan for an Ampere GPU with AutoAWQ's compiled kernels, then load on this CPU for real.

    AutoAWQ's WQLinear_GEMV loads and then raises ModuleNotFoundError at the first forward (no awq_ext);
    WQLinear_GEMM takes its Triton branch on CPU tensors and raises. Both are real failures of real AutoAWQ code.
    """
    from awq_autoselect.environment import Environment
    from awq_autoselect.selection import select_awq_version

    path = quantized(version="gemv", group_size=128)
    # torch 2.5 has no int4 CPU ops, so the planned chain is GEMV, GEMM, then the torch path.
    planned_env = Environment.assume(["gemv", "gemm"], torch_version="2.5.1")
    plan = select_awq_version(path, capability="8.6", device="cuda", environment=planned_env)
    assert plan.chain == (Kernel.GEMV, Kernel.GEMM, Kernel.GEMM_TORCH)
    with pytest.warns(FallbackWarning, match="gemv"):
        result = load_quantized_auto(path, device="cpu", selection=plan)
    gemv, gemm, torch_path = result.report.attempts
    assert (gemv.kernel, gemv.ok, gemv.stage, gemv.error_type) == (Kernel.GEMV, False, "probe", "ModuleNotFoundError")
    assert "awq_ext" in gemv.message
    assert (gemm.kernel, gemm.ok, gemm.stage) == (Kernel.GEMM, False, "probe")
    assert (torch_path.kernel, torch_path.ok) == (Kernel.GEMM_TORCH, True)
    assert result.report.kernel is Kernel.GEMM_TORCH
    assert result.report.probe is not None and result.report.probe.ok


def test_probe_catches_a_kernel_that_returns_garbage(
    quantized: QuantizedFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # AutoAWQ's GEMV returns an uninitialised torch::empty for group sizes it has no kernel for; awq_ext cannot
    # run here, so reproduce exactly that behaviour in the torch path and check that the probe rejects it.
    from awq_autoselect.kernels import gemm as _modules

    def garbage_forward(self: _modules.TorchGEMMLinear, x: torch.Tensor) -> torch.Tensor:
        out_features: int = self.out_features
        return torch.empty((*x.shape[:-1], out_features), dtype=x.dtype).fill_(3.0e4)

    monkeypatch.setattr(_modules.TorchGEMMLinear, "forward", garbage_forward)
    path = quantized(version="gemm", group_size=128)
    with pytest.raises(KernelFailedError) as info:
        load_quantized_auto(path, "gemm_torch", device="cpu", fallback=False)
    attempt = info.value.attempts[-1]
    assert isinstance(attempt, Attempt)
    assert attempt.stage == "probe" and "reference" in attempt.message


def test_fallback_false_raises_for_unavailable_version(quantized: QuantizedFactory) -> None:
    path = quantized(version="gemm", group_size=128)
    with pytest.raises(VersionUnavailableError) as info:
        load_quantized_auto(path, "gemv", device="cpu", fallback=False)
    assert info.value.version == "gemv"
    assert "gemv" in str(info.value) and info.value.reasons


def test_unknown_version_name(quantized: QuantizedFactory) -> None:
    with pytest.raises(UnknownVersionError, match="gemvv"):
        load_quantized_auto(quantized(version="gemm", group_size=128), "gemvv", device="cpu")


def test_dense_baseline_has_no_quantized_layers(quantized: QuantizedFactory) -> None:
    result = load_dense_baseline(quantized(version="gemm", group_size=128), device="cpu")
    assert not any(hasattr(m, "qweight") for m in result.model.modules())
    assert result.report.kernel is None


# ---------------------------------------------------------------------------------------------------------
# bad input: typed errors, nothing loaded, nothing on disk changed


def test_missing_tensor_is_reported_not_half_loaded(quantized: QuantizedFactory, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = copy_checkpoint(quantized(version="gemm", group_size=128), tmp_path / "ckpt")
    tensors = load_file(str(path / "model.safetensors"))
    del tensors["model.norm.weight"]
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CorruptCheckpointError, match=r"model\.norm\.weight"):
        load_quantized_auto(path, device="cpu")


def test_successful_loads_do_not_touch_the_checkpoint(
    quantized: QuantizedFactory, unchanged: Callable[[Path], None]
) -> None:
    path = quantized(version="gemv", group_size=64)
    unchanged(path)
    with pytest.warns(FallbackWarning):
        load_quantized_auto(path, "gemv", device="cpu")


def test_a_selection_planned_without_the_directory_is_held_to_the_zero_point_rule(
    quantized: QuantizedFactory, tmp_path: Path
) -> None:
    """A Selection planned from the quantization config alone cannot count zero points; the loader, which has
    the directory, does, and skips ExLlama for a checkpoint with a zero point of 0 instead of building it."""
    from awq_autoselect.checkpoint import read_checkpoint
    from awq_autoselect.environment import Environment
    from awq_autoselect.selection import select_awq_version
    from tests.helpers import zero_one_zero_point

    path = copy_checkpoint(quantized(version="gemm", group_size=128), tmp_path / "edited")
    zero_one_zero_point(path)
    planned_env = Environment.assume(["exllama"], torch_version="2.5.1")
    plan = select_awq_version(read_checkpoint(path).quant, capability="8.6", device="cuda", environment=planned_env)
    assert plan.chain == (Kernel.EXLLAMA, Kernel.GEMM_TORCH)
    with pytest.warns(FallbackWarning, match="exllama"):
        result = load_quantized_auto(path, device="cpu", selection=plan)
    skipped, used = result.report.attempts
    assert (skipped.kernel, skipped.ok, skipped.stage) == (Kernel.EXLLAMA, False, "skipped")
    assert "zero - 1" in skipped.message and "in this checkpoint 1 of " in skipped.message
    assert (used.kernel, used.ok, result.report.kernel) == (Kernel.GEMM_TORCH, True, Kernel.GEMM_TORCH)


# ---------------------------------------------------------------------------------------------------------
# arguments: checked before any work (an empty trial cache folder stays empty), and the stage times


_BAD_ARGUMENTS: list[tuple[dict[str, object], str]] = [
    ({"torch_dtype": "float16"}, "torch_dtype='float16': expected a torch.dtype, not a string: pass torch.float16"),
    ({"dtype": "auto"}, "dtype='auto': expected a torch.dtype, not a string: leave it out"),
    ({"dtype": torch.int8}, "dtype=torch.int8: expected the floating-point dtype"),
    ({"torch_dtype": torch.float8_e4m3fn}, "torch_dtype=torch.float8_e4m3fn: expected the floating-point dtype"),
    ({"dtype": torch.float16, "torch_dtype": torch.bfloat16}, "dtype=torch.float16 and torch_dtype=torch.bfloat16"),
    ({"probe_tolerance": float("nan")}, "probe_tolerance=nan: expected a relative error >= 0"),
    ({"probe_tolerance": -0.01}, "probe_tolerance=-0.01"),
    ({"max_seq_len": 0}, "max_seq_len=0: expected a number of tokens >= 1"),
    ({"max_seq_len": 2.5}, "max_seq_len=2.5"),
    ({"fast_decode": "fast"}, "fast_decode='fast': expected 'compile', 'graph', 'eager'"),
    ({"fast_decode": 1}, "fast_decode=1"),
    ({"progress": "yes"}, "progress='yes'"),
    ({"device": "mps"}, "device 'mps': torch"),  # a Linux torch has no MPS
]


@pytest.mark.parametrize(("kwargs", "needle"), _BAD_ARGUMENTS)
def test_bad_arguments_are_refused_before_any_trial(
    quantized: QuantizedFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kwargs: dict[str, object],
    needle: str,
) -> None:
    if kwargs.get("device") == "mps" and torch.backends.mps.is_available():
        pytest.skip("this torch can use MPS: 'mps' is a good device here")
    path = quantized(version="gemm", group_size=128)
    cache = tmp_path / "cache"
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(cache))  # the control below shows trials fill it
    with pytest.raises(InvalidArgumentError) as caught:
        load_quantized_auto(path, **kwargs)  # type: ignore[arg-type]
    assert needle in str(caught.value)
    assert not cache.exists(), "a trial ran before the argument was checked"


def test_an_empty_path_is_not_the_current_directory() -> None:
    with pytest.raises(InvalidArgumentError, match="checkpoint path '' is empty"):
        load_quantized_auto("", device="cpu")


def test_the_report_times_every_stage_and_the_trials_draw_a_bar(
    quantized: QuantizedFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The control of the test above: a good load's trials fill the cache folder it watches. The report holds
    the seconds of each stage, which do not overlap; dtype= is transformers 5's name, torch_dtype its alias."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(cache))
    path = quantized(version="gemv", group_size=128)  # converted to the GEMM family's layout at load
    _, report = load_quantized_auto(path, device="cpu", dtype=torch.float32, torch_dtype=torch.float32, progress=True)
    assert any(cache.iterdir())
    assert "awq-autoselect trials on cpu" in capsys.readouterr().err
    assert report.dtype == "float32"
    stages = report.stages
    assert stages is not None
    seconds = stages.to_dict()
    assert list(seconds) == ["resolve", "trials", "load", "conversion", "probe"]
    assert all(value > 0 for value in seconds.values()), seconds  # each stage did real work here
    assert stages.total <= report.seconds
    assert report.to_dict()["stages"] == seconds
    text = str(report)
    assert f"stages:     resolve {stages.resolve:.2f} s, trials {stages.trials:.2f} s" in text
    assert "first compile: none (eager decode steps)" in text  # the CPU default decodes eagerly
    _, again = load_quantized_auto(path, device="cpu", dtype=torch.float32, progress=True)
    assert again.stages is not None and again.stages.total <= again.seconds
    assert "awq-autoselect trials" not in capsys.readouterr().err  # the cache answered: no trial ran, no bar
