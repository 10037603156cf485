"""Writing commands never delete or replace anything awq_autoselect did not write itself.

Every case hashes the trees involved before and after (``unchanged``), runs the real command line, and checks the
exit code and the one-line message. The checkpoints are real AutoAWQ checkpoints (tiny models quantized at test
time) or synthetic ones in AutoAWQ's format.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from awq_autoselect._writing import MARKER_NAME, check_file_destination, read_marker, staged_directory, write_file
from awq_autoselect.cli import EXIT_BAD_INPUT, EXIT_OK
from awq_autoselect.errors import OutputPathError
from tests.helpers import QuantizedFactory, hash_tree, run_cli

Unchanged = Callable[[Path], None]


def refused(argv: tuple[str, ...], needle: str) -> None:
    code, _, err = run_cli(*argv)
    assert code == EXIT_BAD_INPUT, err
    assert needle in err
    assert err.count("\n") == 1, err  # one line, no traceback


@pytest.fixture
def models(tmp_path: Path, quantized: QuantizedFactory) -> Path:
    """A folder of the user's: two real checkpoints and a note."""
    root = tmp_path / "models"
    root.mkdir()
    shutil.copytree(quantized(version="gemm", group_size=128), root / "llama-awq")
    shutil.copytree(quantized(version="gemv", group_size=128), root / "other-awq")
    (root / "notes.txt").write_text("mine\n")
    return root


def test_convert_into_a_folder_that_contains_the_source_is_refused(
    models: Path, unchanged: Unchanged, monkeypatch: pytest.MonkeyPatch
) -> None:
    unchanged(models)
    monkeypatch.chdir(models)
    refused(("convert", "llama-awq", ".", "--to", "gemv", "--overwrite"), "contains the source")
    refused(("convert", str(models / "llama-awq"), str(models), "--to", "gemv", "--overwrite"), "contains the source")


def test_convert_onto_or_inside_the_source_is_refused(models: Path, unchanged: Unchanged) -> None:
    unchanged(models)
    src = models / "llama-awq"
    refused(("convert", str(src), str(src), "--to", "gemv", "--overwrite"), "is the source")
    refused(("convert", str(src), str(src / "converted"), "--to", "gemv"), "lies inside the source")


def test_links_are_resolved_before_the_check(models: Path, tmp_path: Path, unchanged: Unchanged) -> None:
    link = tmp_path / "link-to-models"
    link.symlink_to(models, target_is_directory=True)
    unchanged(models)
    refused(("convert", str(models / "llama-awq"), str(link), "--to", "gemv", "--overwrite"), "contains the source")
    refused(("convert", str(link / "llama-awq"), str(models / "llama-awq"), "--to", "gemv"), "is the source")


def test_a_non_empty_folder_that_is_not_ours_is_never_overwritten(
    models: Path, tmp_path: Path, unchanged: Unchanged
) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work\n")
    unchanged(models)
    unchanged(target)
    refused(("convert", str(models / "llama-awq"), str(target), "--to", "gemv", "--overwrite"), "not written by")
    refused(("make-synthetic", str(target), "--shape", "tiny", "--overwrite"), "not written by")


def test_report_demo_refuses_a_real_checkpoint(models: Path, unchanged: Unchanged) -> None:
    unchanged(models)
    refused(("report", "--demo", str(models / "llama-awq")), "not written by")


def test_overwrite_replaces_only_our_own_output(models: Path, tmp_path: Path, unchanged: Unchanged) -> None:
    src = models / "llama-awq"
    out = tmp_path / "converted"
    assert run_cli("convert", str(src), str(out), "--to", "gemv")[0] == EXIT_OK
    marker = read_marker(out)
    assert marker is not None
    assert "model.safetensors" in marker["entries"]  # type: ignore[operator]
    refused(("convert", str(src), str(out), "--to", "gemm"), "--overwrite")  # ours, but not asked to replace
    assert run_cli("convert", str(src), str(out), "--to", "gemm", "--overwrite")[0] == EXIT_OK
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["version"] == "gemm"
    # A file of the user's inside our output: replacing the folder would delete it, so it is refused.
    (out / "my-eval-results.json").write_text("{}")
    unchanged(out)
    refused(("convert", str(src), str(out), "--to", "gemv", "--overwrite"), "my-eval-results.json")
    assert not [p for p in tmp_path.iterdir() if "awq-autoselect-" in p.name]  # no staging or retired folders


def test_outputs_get_the_permissions_of_the_umask(models: Path, tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        out = tmp_path / "perm"
        assert run_cli("convert", str(models / "llama-awq"), str(out), "--to", "gemv")[0] == EXIT_OK
    finally:
        os.umask(previous)
    assert out.stat().st_mode & 0o777 == 0o755
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert (out / MARKER_NAME).stat().st_mode & 0o777 == 0o644


def test_an_unwritable_destination_is_one_line_exit_3(models: Path, unchanged: Unchanged) -> None:
    unchanged(models)
    # /proc refuses new directories even for root (chmod-based read-only folders do not stop root).
    refused(("convert", str(models / "llama-awq"), "/proc/awq-autoselect-test/out", "--to", "gemv"), "cannot be")
    refused(("make-synthetic", "/proc/awq-autoselect-test/out", "--shape", "tiny"), "cannot be")


def _bench(path: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(
        "bench",
        str(path),
        "--versions",
        "torch_int4",
        "--prompt-tokens",
        "4",
        "--new-tokens",
        "2",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--device",
        "cpu",
        *extra,
    )


def test_bench_report_files_replace_only_our_reports(tmp_path: Path, unchanged: Unchanged) -> None:
    ckpt = tmp_path / "tiny"
    assert run_cli("make-synthetic", str(ckpt), "--shape", "tiny")[0] == EXIT_OK
    reports = tmp_path / "reports"
    reports.mkdir()
    targets = {"--json": reports / "b.json", "--csv": reports / "b.csv", "--markdown": reports / "b.md"}
    args = [item for flag, path in targets.items() for item in (flag, str(path))]
    assert _bench(ckpt, *args)[0] == EXIT_OK
    first = {flag: path.stat().st_ino for flag, path in targets.items()}
    assert _bench(ckpt, *args)[0] == EXIT_OK  # our own reports may be replaced (atomically: a new inode)
    assert all(path.stat().st_ino != first[flag] for flag, path in targets.items())
    assert json.loads(targets["--json"].read_text())["schema"].startswith("awq-autoselect.bench/")
    foreign = reports / "notes.md"
    foreign.write_text("# my notes\n")
    unchanged(reports)
    unchanged(ckpt)
    for flag in ("--json", "--csv", "--markdown"):
        refused(("bench", str(ckpt), "--device", "cpu", flag, str(foreign)), "not a file awq-autoselect wrote")
    refused(("bench", str(ckpt), "--device", "cpu", "--json", str(ckpt / "bench.json")), "lies inside the source")


def test_staging_is_removed_when_the_block_fails(tmp_path: Path) -> None:
    out = tmp_path / "out"

    class BoomError(Exception):
        pass

    def build() -> None:
        with staged_directory(out, kind="test") as staging:
            (staging / "half.bin").write_bytes(b"x")
            raise BoomError

    with pytest.raises(BoomError):
        build()
    assert list(tmp_path.iterdir()) == []


def test_write_file_refuses_files_that_are_not_ours(tmp_path: Path) -> None:
    target = tmp_path / "r.txt"
    target.write_text("user data")
    with pytest.raises(OutputPathError, match="not a file awq-autoselect wrote"):
        write_file(target, "ours", owned=lambda p: False)
    assert target.read_text() == "user data"
    write_file(target, "ours", owned=lambda p: True)
    assert target.read_text() == "ours"


def _medium_checkpoint(tmp_path: Path) -> Path:
    """A synthetic checkpoint large enough that converting it takes a noticeable time."""
    from awq_autoselect.testing.synthetic import ModelShape, make_synthetic_checkpoint

    shape = ModelShape(
        name="medium",
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=8,
        vocab_size=4096,
        max_position_embeddings=512,
    )
    return make_synthetic_checkpoint(tmp_path / "medium", shape=shape)


def _convert_in_child(src: Path, dst: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "awq_autoselect", "convert", str(src), str(dst), "--to", "gemv"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for_staging(parent: Path, name: str, proc: subprocess.Popen[bytes]) -> Path:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [p for p in parent.iterdir() if p.name.startswith(f".{name}.awq-autoselect-staging-")]
        if found:
            return found[0]
        assert proc.poll() is None, "the convert finished before it could be interrupted"
        time.sleep(0.005)
    raise AssertionError("no staging folder appeared")


@pytest.mark.slow
def test_an_interrupted_convert_leaves_nothing_behind(tmp_path: Path) -> None:
    src = _medium_checkpoint(tmp_path)
    before = hash_tree(src)
    # SIGTERM: the command unwinds and removes its staging folder itself.
    proc = _convert_in_child(src, tmp_path / "out")
    _wait_for_staging(tmp_path, "out", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == ["medium"]
    # SIGKILL: nothing can run on the way out; the next write to the same destination removes the folder.
    proc = _convert_in_child(src, tmp_path / "out")
    staging = _wait_for_staging(tmp_path, "out", proc)
    proc.kill()
    proc.wait(timeout=60)
    assert staging.exists()
    assert run_cli("convert", str(src), str(tmp_path / "out"), "--to", "gemv")[0] == EXIT_OK
    assert sorted(p.name for p in tmp_path.iterdir()) == ["medium", "out"]
    assert hash_tree(src) == before


def test_a_file_destination_that_cannot_be_written_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where a folder would be")
    for target in (blocker / "bench.json", blocker / "deeper" / "bench.json"):
        with pytest.raises(OutputPathError, match=r"cannot be written: .*notes\.txt' is a file, not a folder"):
            check_file_destination(target, owned=lambda p: False, what="--json")
    check_file_destination(tmp_path / "new" / "folders" / "b.json", owned=lambda p: False, what="--json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # the check makes nothing
    if os.geteuid() != 0:  # root writes into read-only folders (no file system refuses it here)
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputPathError, match="may not write in"):
            check_file_destination(locked / "b.json", owned=lambda p: False, what="--json")
