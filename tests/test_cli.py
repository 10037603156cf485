"""The awq-autoselect command line, run in-process through main(argv)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from awq_autoselect.catalogue import Kernel
from awq_autoselect.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
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
    listed = json.loads(run_cli("catalogue", "--json")[1])
    assert [entry["kernel"] for entry in listed] == [k.value for k in Kernel]
    assert [entry["kernel"] for entry in listed if entry["experimental"]] == ["gemv_triton"]


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
    assert list(data["stages"]) == ["resolve", "trials", "load", "conversion", "probe"]
    assert data["first_compile_seconds"] is None  # a CPU decodes eagerly: nothing compiles
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


# --- early failure: arguments and destinations checked before the work, Ctrl-C at any time -----------------


def test_load_arguments_are_checked_before_anything_loads(
    quantized: QuantizedFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(cache))  # a load's first step would be its trials
    path = str(quantized(version="gemm", group_size=128))
    cases = [
        (("load", ""), "checkpoint path '' is empty"),
        (("load", path, "--device", "mps"), "device 'mps': torch"),  # a Linux torch has no MPS
        # the tiny model's context is 512 tokens; the prompt is 2 or 3 of them
        (("load", path, "--generate", "the quick", "--max-new-tokens", "100000"), "plus --max-new-tokens (100000)"),
    ]
    errors = []
    for argv, needle in cases:
        code, out, err = run_cli(*argv)
        assert (code, out) == (EXIT_USAGE, ""), err
        assert err.count("\n") == 1, err
        assert err.startswith("error: ") and needle in err and "Traceback" not in err
        errors.append(err)
    assert "more than the model's context of 512 tokens" in errors[-1]
    assert not cache.exists(), "a trial ran before the arguments were checked"


def _tiny_bench(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    ckpt = tmp_path / "tiny"
    assert run_cli("make-synthetic", str(ckpt), "--shape", "tiny")[0] == EXIT_OK
    argv = ("bench", str(ckpt), "--versions", "torch_int4", "--device", "cpu", "--repeats", "1", "--warmup", "0")
    return ckpt, (*argv, "--prompt-tokens", "4", "--new-tokens", "2")


def test_bench_checks_its_outputs_and_lengths_before_measuring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt, bench = _tiny_bench(tmp_path)
    cache = tmp_path / "cache"
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(cache))  # bench's first step would be its trials
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # not installed (it is not, on CI): import fails
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where a folder would be")
    cases = [
        (("--json", str(blocker / "b.json")), EXIT_BAD_INPUT, "notes.txt' is a file, not a folder"),
        (("--markdown", str(ckpt / "b.md")), EXIT_BAD_INPUT, "lies inside the source"),
        (("--plot", str(tmp_path / "tpot.png")), EXIT_USAGE, "needs matplotlib"),
        (("--json", str(tmp_path / "b.out"), "--csv", str(tmp_path / "b.out")), EXIT_USAGE, "--json and --csv both"),
        (("--prompt-tokens", "500", "--new-tokens", "13"), EXIT_USAGE, "is 513 tokens, more than the model's context"),
    ]
    for extra, expected, needle in cases:
        code, out, err = run_cli(*bench, *extra)
        assert (code, out) == (expected, ""), err
        assert err.count("\n") == 1, err
        assert needle in err
    assert not cache.exists(), "the benchmark started before its outputs were checked"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "tiny"]  # the checks made nothing


def test_bench_prints_the_table_when_a_file_cannot_be_written_after_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder of --json is replaced by a file while the benchmark runs (checked before, gone after): the table
    is printed all the same, the other file is written, and the error is one line."""
    import awq_autoselect.bench as bench_api

    _, bench = _tiny_bench(tmp_path)
    reports = tmp_path / "reports"
    reports.mkdir()
    real = bench_api.benchmark_versions

    def run_then_lose_the_folder(*args: Any, **kwargs: Any) -> Any:
        report = real(*args, **kwargs)
        reports.rmdir()
        reports.write_text("the folder became a file during the run")
        return report

    monkeypatch.setattr(bench_api, "benchmark_versions", run_then_lose_the_folder)
    code, out, err = run_cli(*bench, "--json", str(reports / "b.json"), "--csv", str(tmp_path / "b.csv"))
    assert code == EXIT_BAD_INPUT
    assert "| torch_int4 |" in out
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: --json {str(reports / 'b.json')!r} cannot be written")
    assert "the table above has the results" in err
    assert (tmp_path / "b.csv").read_text().startswith("version,")


_SLOW_IMPORT = '''
"""Makes one import hang (the module named by AWQ_TEST_SLOW_IMPORT), after touching AWQ_TEST_SLOW_MARK."""
import os
import sys
import time


class _Slow:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ.get("AWQ_TEST_SLOW_IMPORT"):
            open(os.environ["AWQ_TEST_SLOW_MARK"], "w").close()
            time.sleep(120)
        return None


sys.meta_path.insert(0, _Slow())
'''


@pytest.mark.parametrize(
    ("entry", "module"),
    [
        ((sys.executable, "-m", "awq_autoselect"), "torch"),  # load imports torch and AutoAWQ: seconds
        # the console script: `from awq_autoselect.cli import entrypoint; sys.exit(entrypoint())`
        (
            (sys.executable, "-c", "import sys; from awq_autoselect.cli import entrypoint; sys.exit(entrypoint())"),
            "torch",
        ),
        ((sys.executable, "-m", "awq_autoselect"), "awq_autoselect.cli.parser"),  # the command line's own import
    ],
)
def test_ctrl_c_while_the_command_imports_is_one_line_and_exit_130(
    tmp_path: Path, entry: tuple[str, ...], module: str
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SLOW_IMPORT)
    mark = tmp_path / "importing"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "AWQ_TEST_SLOW_IMPORT": module,
        "AWQ_TEST_SLOW_MARK": str(mark),
    }
    proc = subprocess.Popen(
        [*entry, "load", str(tmp_path / "missing")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        deadline = time.monotonic() + 120
        while not mark.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"{module} was never imported"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (proc.returncode, out, err) == (EXIT_INTERRUPTED, "", "error: interrupted\n")
