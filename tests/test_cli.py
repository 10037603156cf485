"""The awq-autoselect command line, run in-process through main(argv)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from awq_autoselect.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from tests.conftest import QuantizedFactory


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_detect_on_a_machine_without_gpu() -> None:
    code, out, _ = run("detect")
    assert code == EXIT_OK
    assert "no GPU" in out
    code, out, _ = run("detect", "--json")
    data = json.loads(out)
    assert data["gpus"] == []
    assert data["attempts"]
    assert run("detect", "--require-gpu")[0] == EXIT_FAILED


def test_env_and_catalogue() -> None:
    code, out, _ = run("env", "--json")
    assert code == EXIT_OK
    env = json.loads(out)
    assert env["modules"]["awq_ext"]["state"] != "ok"
    code, out, _ = run("catalogue")
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
    assert len(json.loads(run("catalogue", "--json")[1])) == 10


def test_select_plans_for_another_machine() -> None:
    code, out, _ = run("select", "--capability", "7.5", "--kernels", "gemv,gemm", "--json")
    assert code == EXIT_OK
    data = json.loads(out)
    assert data["kernel"] == "gemv"
    assert data["capabilities"] == ["7.5"]
    code, out, _ = run("select", "--capability", "8.6", "--kernels", "gemv,gemm", "--batch-size", "16")
    assert code == EXIT_OK
    assert out.splitlines()[1].startswith("selected: gemm for batch")
    code, out, _ = run("select", "--capability", "12.0", "--kernels", "gemv,gemm")
    assert "no kernel image" in out


def test_select_with_a_checkpoint(quantized: QuantizedFactory) -> None:
    path = quantized(version="gemv", group_size=64)
    code, out, _ = run("select", "--checkpoint", str(path), "--device", "cpu")
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
    got, _, err = run(*argv)
    assert got == code
    assert message in err


def test_load_reports_the_fallback(quantized: QuantizedFactory) -> None:
    path = quantized(version="gemv", group_size=128)
    code, out, _ = run(
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
    code, _, err = run("load", str(path), "--version", "gemv", "--device", "cpu", "--no-fallback")
    assert code == EXIT_FAILED
    assert "gemv" in err


def test_convert_and_bad_conversion(quantized: QuantizedFactory, tmp_path: Path) -> None:
    src = quantized(version="gemm", group_size=128)
    code, out, _ = run("convert", str(src), str(tmp_path / "v"), "--to", "gemv")
    assert code == EXIT_OK
    assert "gemv" in out
    assert run("convert", str(src), str(tmp_path / "v"), "--to", "gemv")[0] == EXIT_BAD_INPUT  # exists
    code, _, err = run("convert", str(src), str(tmp_path / "m"), "--to", "marlin")
    assert code == EXIT_BAD_INPUT
    assert "zero" in err


def test_make_synthetic_bench_and_report(tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny"
    assert run("make-synthetic", str(ckpt), "--shape", "tiny", "--version", "gemv")[0] == EXIT_OK
    report = tmp_path / "bench.json"
    code, out, _ = run(
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
    code, out, _ = run("report", "--checkpoint", str(ckpt))
    assert code == EXIT_OK
    assert "== selection ==" in out


def test_console_script_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "awq_autoselect", "--help"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0
    assert "exit codes" in proc.stdout
