"""The awq-autoselect command line, run in-process through main(argv)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from awq_autoselect.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from awq_autoselect.environment import probe_environment
from awq_autoselect.hardware import detect_compute_capability
from tests.helpers import QuantizedFactory, run_cli


def test_detect_reports_what_the_library_detects() -> None:
    detection = detect_compute_capability(refresh=True)  # whatever this machine has: a GPU or none
    code, out, _ = run_cli("detect")
    assert code == EXIT_OK
    if detection.gpus:
        assert f"compute capability {detection.gpus[0].capability}" in out
    else:
        assert "no GPU" in out
    code, out, _ = run_cli("detect", "--json")
    data = json.loads(out)
    assert [gpu["name"] for gpu in data["gpus"]] == [gpu.name for gpu in detection.gpus]
    assert data["attempts"]
    assert run_cli("detect", "--require-gpu")[0] == (EXIT_OK if detection.gpus else EXIT_FAILED)


def test_env_and_catalogue() -> None:
    code, out, _ = run_cli("env", "--json")
    assert code == EXIT_OK
    env = json.loads(out)
    here = probe_environment()
    assert {name: status["state"] for name, status in env["modules"].items()} == {
        name: status.state.value for name, status in here.modules.items()
    }
    code, out, _ = run_cli("catalogue")
    assert code == EXIT_OK
    for name in (
        "gemm",
        "gemm_triton",
        "gemm_torch",
        "gemv",
        "gemv_fast",
        "marlin",
        "exllama",
        "exllamav2",
        "ipex",
        "torch_int4",
    ):
        assert name in out
    assert len(json.loads(run_cli("catalogue", "--json")[1])) == 10


def test_select_plans_for_another_machine() -> None:
    code, out, _ = run_cli("select", "--capability", "7.5", "--kernels", "gemv,gemm", "--json")
    assert code == EXIT_OK
    data = json.loads(out)
    assert data["kernel"] == "gemv"
    assert data["capabilities"] == ["7.5"]
    code, out, _ = run_cli("select", "--capability", "8.6", "--kernels", "gemv,gemm", "--batch-size", "16")
    assert code == EXIT_OK
    assert out.splitlines()[1].startswith("selected: gemm for batch")
    code, out, _ = run_cli("select", "--capability", "12.0", "--kernels", "gemv,gemm")
    assert "no kernel image" in out


def test_select_with_a_checkpoint(quantized: QuantizedFactory) -> None:
    path = quantized(version="gemv", group_size=64)
    code, out, _ = run_cli("select", "--checkpoint", str(path), "--device", "cpu")
    assert code == EXIT_OK
    assert "gemv layout" in out


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (("select", "--capability", "abc"), EXIT_USAGE, "abc"),
        (("select", "--version", "gemvv"), EXIT_USAGE, "gemvv"),
        (("select", "--checkpoint", "/nonexistent/model"), EXIT_BAD_INPUT, "does not exist"),
        (("select", "--capability", "8.6", "--kernels", "gemv", "--version", "gemv_fast"), EXIT_FAILED, "gemv_fast"),
        (("load", "/nonexistent/model"), EXIT_BAD_INPUT, "does not exist"),
        (("frobnicate",), EXIT_USAGE, ""),
    ],
)
def test_errors_map_to_exit_codes(argv: tuple[str, ...], code: int, message: str) -> None:
    got, _, err = run_cli(*argv)
    assert got == code
    assert message in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (("select", "--batch-size", "0"), "--batch-size: 0 is below 1"),
        (("select", "--prompt-tokens", "0"), "--prompt-tokens: 0 is below 1"),
        (("select", "--new-tokens", "-1"), "--new-tokens: -1 is below 0"),
        (("select", "--batch-size", "two"), "'two' is not a whole number"),
        (("select", "--capability", "8"), "--capability: compute capability '8'"),
        (("select", "--version", "gemvv"), "unknown AWQ kernel version 'gemvv'"),
        (("bench", "/x", "--repeats", "0"), "--repeats: 0 is below 1"),
        (("bench", "/x", "--new-tokens", "1"), "--new-tokens: 1 is below 2"),
        (("bench", "/x", "--warmup", "-1"), "--warmup: -1 is below 0"),
        (("bench", "/x", "--batch-size", "1,1"), "repeats a batch size"),
        (("bench", "/x", "--batch-size", "0"), "0 is below 1"),
        (("bench", "/x", "--versions", "gemv,gemv"), "names 'gemv' twice"),
        (("bench", "/x", "--peak-bandwidth", "0"), "is not positive"),
        (("bench", "/x", "--device", "gpu0"), "device 'gpu0'"),
        (("load", "/x", "--device", "cuda:x"), "device 'cuda:x'"),
        (("load", "/x", "--max-new-tokens", "0"), "--max-new-tokens: 0 is below 1"),
        (("make-synthetic", "/x", "--num-layers", "0"), "--num-layers: 0 is below 1"),
        (("make-synthetic", "/x", "--group-size", "48"), "invalid choice: 48"),
        (("convert", "/a", "/b", "--to", "gemx"), "invalid choice: 'gemx'"),
        (("convert", "/a"), "required"),
        (("cache",), "required"),
        (("cache", "purge"), "invalid choice: 'purge'"),
        (("frobnicate",), "invalid choice: 'frobnicate'"),
    ],
)
def test_every_argument_error_is_one_line_and_exit_2(argv: tuple[str, ...], needle: str) -> None:
    code, out, err = run_cli(*argv)
    assert code == EXIT_USAGE
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("error: awq-autoselect")
    assert needle in err
    assert "Traceback" not in err


def test_load_reports_the_fallback(quantized: QuantizedFactory) -> None:
    path = quantized(version="gemv", group_size=128)
    code, out, _ = run_cli(
        "load",
        str(path),
        "--version",
        "gemv",
        "--device",
        "cpu",
        "--json",
        "--generate",
        "the quick",
        "--max-new-tokens",
        "3",
    )
    assert code == EXIT_OK
    data = json.loads(out)
    assert data["requested"] == "gemv"
    assert data["kernel"] in ("torch_int4", "gemm_torch")
    assert data["attempts"][0]["kernel"] == "gemv"
    assert data["warnings"]
    assert isinstance(data["generated"], str)
    code, _, err = run_cli("load", str(path), "--version", "gemv", "--device", "cpu", "--no-fallback")
    assert code == EXIT_FAILED
    assert "gemv" in err


def test_convert_and_bad_conversion(quantized: QuantizedFactory, tmp_path: Path) -> None:
    src = quantized(version="gemm", group_size=128)
    code, out, _ = run_cli("convert", str(src), str(tmp_path / "v"), "--to", "gemv")
    assert code == EXIT_OK
    assert "gemv" in out
    assert run_cli("convert", str(src), str(tmp_path / "v"), "--to", "gemv")[0] == EXIT_BAD_INPUT  # exists
    code, _, err = run_cli("convert", str(src), str(tmp_path / "m"), "--to", "marlin")
    assert code == EXIT_BAD_INPUT
    assert "zero" in err


def test_make_synthetic_bench_and_report(tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny"
    assert run_cli("make-synthetic", str(ckpt), "--shape", "tiny", "--version", "gemv")[0] == EXIT_OK
    report = tmp_path / "bench.json"
    code, out, _ = run_cli(
        "bench",
        str(ckpt),
        "--versions",
        "gemv,torch_int4",
        "--prompt-tokens",
        "8",
        "--new-tokens",
        "3",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--device",
        "cpu",
        "--json",
        str(report),
        "--csv",
        str(tmp_path / "bench.csv"),
    )
    assert code == EXIT_OK
    assert "| gemv |" in out
    assert "unavailable" in out
    from awq_autoselect.bench import BenchmarkReport

    loaded = BenchmarkReport.read_json(report)
    assert [r.version for r in loaded.results] == ["gemv", "torch_int4"]
    code, out, _ = run_cli("report", "--checkpoint", str(ckpt))
    assert code == EXIT_OK
    assert "== selection ==" in out


def test_bench_exits_1_when_no_version_can_run(tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny"
    assert run_cli("make-synthetic", str(ckpt), "--shape", "tiny", "--version", "gemv")[0] == EXIT_OK
    report = tmp_path / "bench.json"
    # gemv_fast needs a GPU and group size 128; the dense baseline alone does not make the command a success.
    argv = ["--prompt-tokens", "8", "--new-tokens", "3", "--repeats", "1", "--warmup", "0", "--device", "cpu"]
    code, out, err = run_cli("bench", str(ckpt), "--versions", "gemv_fast", "--fp16", *argv, "--json", str(report))
    assert code == EXIT_FAILED
    assert err.startswith(f"error: {ckpt}: no version of the checkpoint could run here (gemv_fast: ")
    assert len(err.strip().splitlines()) == 1
    assert "| gemv_fast |" in out  # the table is still printed, with the reason
    from awq_autoselect.bench import BenchmarkReport, Status

    assert BenchmarkReport.read_json(report).result("gemv_fast").status is Status.UNAVAILABLE
    assert run_cli("bench", str(ckpt), "--versions", "gemv_fast,torch_int4", *argv)[0] == EXIT_OK


def test_detect_prints_a_visible_devices_warning_once() -> None:
    import os

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "GPU-00000000,7"}
    proc = subprocess.run(
        [sys.executable, "-m", "awq_autoselect", "detect"], capture_output=True, text=True, check=False, env=env
    )
    assert proc.returncode == 0
    both = proc.stdout + proc.stderr
    assert both.count("'7' follows a GPU UUID") == 1, both


@pytest.mark.parametrize(
    "command",
    ["detect", "env", "catalogue", "select", "report", "load", "convert", "tune", "cache", "bench", "make-synthetic"],
)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(command, "--help")  # argparse prints help to sys.stdout itself
    assert code == EXIT_OK, err
    assert capsys.readouterr().out.startswith(f"usage: awq-autoselect {command}")


def test_console_script_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "awq_autoselect", "--help"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0
    assert "exit codes" in proc.stdout
