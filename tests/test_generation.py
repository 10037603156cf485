"""loading/generation.py: the loaded model's generation config is the checkpoint's, as from_pretrained builds it.

Real AutoAWQ checkpoints (quantized at test time; AutoAWQ's save_quantized writes a generation_config.json with
``do_sample: true``), copied and edited, loaded on the CPU; the end-of-sequence test stops at a token the tiny model
really produces, found by generating first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from awq_autoselect._awq import hf_model_of
from awq_autoselect.cli import EXIT_BAD_INPUT, EXIT_OK
from awq_autoselect.errors import CheckpointWarning, CorruptCheckpointError
from awq_autoselect.loading import LoadResult, load_dense_baseline, load_quantized_auto
from tests.helpers import QuantizedFactory, copy_checkpoint, edit_config, run_cli

IDS = torch.tensor([[1, 17, 42, 99, 150, 301, 7]])
NEW = 12


def _load(path: Path) -> LoadResult:
    # gemm_torch in float32: the tokens are exact, and nothing here is about the kernel
    return load_quantized_auto(path, "gemm_torch", device="cpu", trials=False)


def _write(path: Path, data: object) -> None:
    (path / "generation_config.json").write_text(json.dumps(data), encoding="utf-8")


def _config(result: LoadResult) -> Any:
    return hf_model_of(result.model).generation_config


@pytest.fixture(scope="module")
def greedy(quantized: QuantizedFactory) -> list[int]:
    """The tokens the tiny model generates greedily after IDS when nothing stops it."""
    model: Any = _load(quantized(version="gemm", group_size=128)).model
    out = model.generate(input_ids=IDS, max_new_tokens=NEW, do_sample=False, eos_token_id=None)
    return [int(t) for t in out[0, IDS.shape[1] :]]


def _stop(tokens: list[int]) -> tuple[int, int]:
    """A token the model produces (not the checkpoint's own end-of-sequence id, 2) first at index k >= 2: (it, k)."""
    for k, token in enumerate(tokens):
        if k >= 2 and token != 2 and token not in tokens[:k]:
            return token, k
    raise AssertionError(f"no token to stop at in {tokens}: pick another prompt")


def test_autoawq_checkpoints_sample_by_default_as_from_pretrained_does(quantized: QuantizedFactory) -> None:
    from transformers import GenerationConfig

    path = quantized(version="gemm", group_size=128)
    result = _load(path)
    assert result.report.generation_config_source == "generation_config.json"
    assert _config(result).to_dict() == GenerationConfig.from_pretrained(str(path)).to_dict()
    assert _config(result).do_sample is True  # AutoAWQ's save_quantized writes it; from_config dropped it


def test_every_setting_of_generation_config_json_reaches_the_model_and_the_report(
    quantized: QuantizedFactory, tmp_path: Path, unchanged: Callable[[Path], None]
) -> None:
    path = copy_checkpoint(quantized(version="gemm", group_size=128), tmp_path / "ckpt")
    settings: dict[str, object] = {
        "bos_token_id": 1,
        "eos_token_id": [2, 210],
        "pad_token_id": 0,
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 20,
        "repetition_penalty": 1.15,
        "max_new_tokens": 33,
    }
    _write(path, settings)
    unchanged(path)
    for result in (_load(path), load_dense_baseline(path, device="cpu")):
        config = _config(result)
        assert {key: getattr(config, key) for key in settings} == settings
        assert result.report.generation_config_source == "generation_config.json"
        assert result.report.to_dict()["generation_config_source"] == "generation_config.json"
        assert "generation: settings from generation_config.json" in str(result.report)


def test_an_eos_list_in_generation_config_json_stops_at_any_of_its_ids(
    quantized: QuantizedFactory, tmp_path: Path, greedy: list[int]
) -> None:
    stop, k = _stop(greedy)
    path = copy_checkpoint(quantized(version="gemm", group_size=128), tmp_path / "ckpt")
    _write(path, {"bos_token_id": 1, "eos_token_id": [2, stop], "do_sample": False, "max_new_tokens": NEW})
    model: Any = _load(path).model
    out = model.generate(input_ids=IDS)  # the checkpoint's settings alone: greedy, NEW tokens, stop at 2 or `stop`
    assert out[0, IDS.shape[1] :].tolist() == greedy[: k + 1]
    fast: Any = hf_model_of(model).generate
    assert fast.last_path == "fast"
    assert torch.equal(out, fast.original(IDS))  # transformers' own generate stops there too
    # The fast path in a batch: the sequence that ended is padded (pad = the first eos id), the other goes on.
    batch = torch.cat([IDS, torch.tensor([[5, 6, 7, 8, 9, 10, 11]])])
    both = model.generate(input_ids=batch)
    assert fast.last_path == "fast"
    assert torch.equal(both, fast.original(batch, pad_token_id=2))


def test_without_generation_config_json_config_json_gives_it_as_from_pretrained_does(
    quantized: QuantizedFactory, tmp_path: Path, greedy: list[int]
) -> None:
    stop, k = _stop(greedy)
    path = copy_checkpoint(quantized(version="gemm", group_size=128), tmp_path / "ckpt")
    (path / "generation_config.json").unlink()
    # max_length in config.json is a legacy generation setting: transformers 5 drops it from the model config, so a
    # generation config derived from the model (AutoAWQ's from_config) lost it; from_pretrained reads the file.
    edit_config(path, eos_token_id=[2, stop], max_length=IDS.shape[1] + NEW)
    result = _load(path)
    assert result.report.generation_config_source == "config.json"
    config = _config(result)
    assert (config.eos_token_id, config.max_length, bool(config.do_sample)) == ([2, stop], IDS.shape[1] + NEW, False)
    model: Any = result.model
    assert model.generate(input_ids=IDS)[0, IDS.shape[1] :].tolist() == greedy[: k + 1]


@pytest.mark.parametrize("content", [b'{"eos_token_id": [2, 210', b"\xff\xfe\x00{}"], ids=["not-json", "not-utf8"])
def test_an_unreadable_generation_config_json_falls_back_to_config_json_with_a_warning(
    quantized: QuantizedFactory, tmp_path: Path, content: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers' from_pretrained falls back to config.json silently here; the loader says so."""
    path = copy_checkpoint(quantized(version="gemm", group_size=128), tmp_path / "ckpt")
    (path / "generation_config.json").write_bytes(content)
    with pytest.warns(CheckpointWarning, match=rf"{path / 'generation_config.json'} cannot be read .*config\.json"):
        result = _load(path)
    assert result.report.generation_config_source == "config.json"
    assert (_config(result).eos_token_id, bool(_config(result).do_sample)) == (2, False)  # config.json's
    monkeypatch.setenv("AWQ_AUTOSELECT_TRIALS", "0")
    code, out, _ = run_cli("load", str(path), "--version", "gemm_torch", "--device", "cpu", "--json")
    assert code == EXIT_OK
    data = json.loads(out)
    assert data["generation_config_source"] == "config.json"
    assert any("generation_config.json cannot be read" in w for w in data["warnings"])


def test_the_cli_shows_where_the_generation_config_came_from(
    quantized: QuantizedFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWQ_AUTOSELECT_TRIALS", "0")
    path = quantized(version="gemm", group_size=128)
    code, out, _ = run_cli("load", str(path), "--version", "gemm_torch", "--device", "cpu", "--json")
    assert code == EXIT_OK
    assert json.loads(out)["generation_config_source"] == "generation_config.json"
    code, out, _ = run_cli("load", str(path), "--version", "gemm_torch", "--device", "cpu")
    assert code == EXIT_OK
    assert "generation: settings from generation_config.json" in out


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ([2, 210], "not a generation config transformers accepts"),
        ({"max_new_tokens": -5}, "max_new_tokens"),
        ({"eos_token_id": "x"}, r"eos_token_id='x' \(str\) is not a token id"),
        ({"eos_token_id": [2, "</s>"]}, r"eos_token_id=\[2, '</s>'\] \(list\)"),
        ({"pad_token_id": 1.5}, r"pad_token_id=1.5 \(float\) is not a token id"),
    ],
    ids=["json-list", "negative-max-new-tokens", "eos-string", "eos-list-with-string", "pad-float"],
)
def test_a_generation_config_json_transformers_refuses_is_a_corrupt_checkpoint(
    quantized: QuantizedFactory,
    tmp_path: Path,
    unchanged: Callable[[Path], None],
    content: object,
    match: str,
) -> None:
    path = copy_checkpoint(quantized(version="gemm", group_size=128), tmp_path / "ckpt")
    _write(path, content)
    unchanged(path)
    file = path / "generation_config.json"
    with pytest.raises(CorruptCheckpointError, match=match) as caught:
        _load(path)
    assert str(caught.value).startswith(str(file))
    with pytest.raises(CorruptCheckpointError, match=match):
        load_dense_baseline(path, device="cpu")
    code, out, err = run_cli("load", str(path), "--device", "cpu")
    assert (code, out) == (EXIT_BAD_INPUT, "")
    assert err.startswith(f"error: {file}")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
