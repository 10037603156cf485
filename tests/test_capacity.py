"""Workloads the model cannot hold are refused before any trial, with the numbers; a later default load is fine.

Seen on main 54e2287: ``Workload(batch_size=10**9)`` ran the trials, both CPU kernels ran out of memory, both were
cached "broken", and every later default load of that checkpoint failed with NoCompatibleKernelError.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from awq_autoselect.capacity import available_memory, check_workload, kv_cache_bytes
from awq_autoselect.catalogue import Kernel
from awq_autoselect.checkpoint import read_checkpoint
from awq_autoselect.cli import EXIT_OK, EXIT_USAGE
from awq_autoselect.errors import InvalidArgumentError
from awq_autoselect.loading import load_quantized_auto
from awq_autoselect.workload import Workload
from tests.helpers import TINY_LLAMA, QuantizedFactory, run_cli

CRASH_SITE = Path(__file__).resolve().parent / "crash_site"


@pytest.fixture
def checkpoint(quantized: QuantizedFactory) -> Path:
    return quantized(version="gemm", group_size=128)


def _count_trials(monkeypatch: pytest.MonkeyPatch, log: Path) -> None:
    """Every trial child process this test starts appends a line to ``log`` (tests/crash_site)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(CRASH_SITE), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("AWQ_TEST_TRIAL_LOG", str(log))


def test_the_tiny_model_s_context_and_kv_cache(checkpoint: Path) -> None:
    info = read_checkpoint(checkpoint)
    assert info.context_length == TINY_LLAMA["max_position_embeddings"]
    per_token = 2 * TINY_LLAMA["num_key_value_heads"] * (TINY_LLAMA["hidden_size"] // TINY_LLAMA["num_attention_heads"])
    assert kv_cache_bytes(info, 3, 100) == TINY_LLAMA["num_hidden_layers"] * per_token * 2 * 3 * 100
    memory = available_memory("cpu")
    assert memory is not None
    assert memory[0] > 0
    assert memory[1] == "available RAM"
    check_workload(info, Workload(batch_size=4, prompt_tokens=256, new_tokens=256), "cpu")  # fits: no error


def test_a_batch_beyond_memory_is_refused_before_any_trial_and_a_default_load_then_succeeds(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(tmp_path / "cache"))
    log = tmp_path / "trials.log"
    _count_trials(monkeypatch, log)
    with pytest.raises(InvalidArgumentError) as refused:
        load_quantized_auto(checkpoint, device="cpu", workload=Workload(batch_size=10**9, decode="eager"))
    message = str(refused.value)
    assert "batch_size=1000000000" in message
    assert "GiB" in message
    assert "available RAM" in message
    assert not log.exists()  # no trial ran
    assert not (tmp_path / "cache" / "trials").exists()  # nothing cached
    _, report = load_quantized_auto(checkpoint, device="cpu")
    assert report.kernel in (Kernel.TORCH_INT4, Kernel.GEMM_TORCH)
    assert report.probe is not None
    assert report.probe.ok
    assert not [a for a in report.attempts if a.stage == "trial"]


def test_tokens_beyond_the_context_are_refused_with_the_numbers(checkpoint: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"500 \+ 100 = 600 tokens .* context of 512 tokens"):
        load_quantized_auto(checkpoint, device="cpu", workload=Workload(prompt_tokens=500, new_tokens=100))


def test_tune_refuses_an_impossible_batch_with_exit_2(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWQ_AUTOSELECT_CACHE_DIR", str(tmp_path / "cache"))
    log = tmp_path / "trials.log"
    _count_trials(monkeypatch, log)
    code, out, err = run_cli("tune", str(checkpoint), "--device", "cpu", "--batch-size", "1,1000000000")
    assert code == EXIT_USAGE
    assert out == ""
    assert err.count("\n") == 1, err
    assert "batch_size=1000000000" in err
    assert not log.exists()
    code, _, _ = run_cli("load", str(checkpoint), "--device", "cpu")
    assert code == EXIT_OK
