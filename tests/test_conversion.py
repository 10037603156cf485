"""convert_checkpoint(): whole checkpoints rewritten in another layout, loadable by plain AutoAWQ."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from awq_autoselect.catalogue import Layout
from awq_autoselect.checkpoint import read_checkpoint
from awq_autoselect.conversion import convert_checkpoint
from awq_autoselect.errors import ConversionError, OutputPathError
from awq_autoselect.loading import load_quantized_auto
from tests.helpers import QuantizedFactory

IDS = torch.tensor([[3, 14, 15, 92, 65, 35, 89, 79]])


@contextmanager
def plain_autoawq_on_cpu() -> Iterator[None]:
    """AutoAWQ's own loader on this CPU machine: it would force IPEX, and with triton installed its GEMM forward
    takes the Triton branch. Both are patched here, in the test only, so plain from_quantized can run."""
    import awq.models.base as awq_base
    import awq.modules.linear.gemm as awq_gemm

    saved = awq_base.get_best_device, awq_gemm.TRITON_AVAILABLE, awq_gemm.user_has_been_warned
    awq_base.get_best_device = lambda: "cuda:0"
    awq_gemm.TRITON_AVAILABLE = False
    awq_gemm.user_has_been_warned = True  # its once-per-process "naive (slow) implementation" warning
    try:
        yield
    finally:
        awq_base.get_best_device, awq_gemm.TRITON_AVAILABLE, awq_gemm.user_has_been_warned = saved


def plain_logits(path: Path) -> torch.Tensor:
    from awq_autoselect._awq import import_awq

    awq = import_awq()
    with plain_autoawq_on_cpu(), pytest.warns(UserWarning, match="Skipping fusing"):
        model = awq.AutoAWQForCausalLM.from_quantized(str(path), device_map={"": "cpu"})
    with plain_autoawq_on_cpu(), torch.no_grad():
        logits: torch.Tensor = model(IDS).logits.float()
    return logits


def test_gemv_to_gemm_loads_in_plain_autoawq_with_the_source_logits(
    quantized: QuantizedFactory, tmp_path: Path, unchanged: Callable[[Path], None]
) -> None:
    src = quantized(version="gemv", group_size=128)
    unchanged(src)
    dst = convert_checkpoint(src, tmp_path / "as-gemm", "gemm")
    info = read_checkpoint(dst)
    assert info.layout is Layout.GEMM
    assert json.loads((dst / "config.json").read_text())["quantization_config"]["version"] == "gemm"
    assert (dst / "tokenizer.json").is_file()
    source_model = load_quantized_auto(src, "gemm_torch", device="cpu", torch_dtype=torch.float16).model
    with torch.no_grad():
        expected = source_model(IDS).logits.float()
    assert torch.equal(plain_logits(dst), expected)


@pytest.mark.parametrize("group_size", [64, 128])
def test_round_trip_is_bit_exact(quantized: QuantizedFactory, tmp_path: Path, group_size: int) -> None:
    src = quantized(version="gemm", group_size=group_size)
    there = convert_checkpoint(src, tmp_path / "gemv", "gemv")
    back = convert_checkpoint(there, tmp_path / "gemm", "gemm")
    original = load_file(str(src / "model.safetensors"))
    returned = load_file(str(back / "model.safetensors"))
    assert original.keys() == returned.keys()
    for name, tensor in original.items():
        assert torch.equal(tensor, returned[name]), name
    # and the GEMV copy equals what AutoAWQ itself wrote when quantizing to GEMV
    autoawq_gemv = load_file(str(quantized(version="gemv", group_size=group_size) / "model.safetensors"))
    converted = load_file(str(there / "model.safetensors"))
    for name, tensor in autoawq_gemv.items():
        assert torch.equal(tensor, converted[name]), name


def test_sharded_output(quantized: QuantizedFactory, tmp_path: Path) -> None:
    dst = convert_checkpoint(
        quantized(version="gemm", group_size=128), tmp_path / "sharded", "gemv", max_shard_bytes=200_000
    )
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert read_checkpoint(dst).layout is Layout.GEMV


def test_refuses_existing_destination_and_the_source(quantized: QuantizedFactory, tmp_path: Path) -> None:
    src = quantized(version="gemm", group_size=128)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(OutputPathError, match="not empty"):
        convert_checkpoint(src, busy, "gemv")
    assert (busy / "keep.txt").read_text() == "mine"
    with pytest.raises(OutputPathError, match="is the source"):
        convert_checkpoint(src, src, "gemv")


def test_asymmetric_to_marlin_is_refused_and_leaves_nothing(quantized: QuantizedFactory, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="zero"):
        convert_checkpoint(quantized(version="gemm", group_size=128), tmp_path / "marlin", "marlin")
    assert not (tmp_path / "marlin").exists()
    assert list(tmp_path.iterdir()) == []  # the staging directory was removed too


def test_marlin_checkpoint_converts_to_gemm(quantized: QuantizedFactory, tmp_path: Path) -> None:
    src = quantized(version="marlin", group_size=128, zero_point=False)
    dst = convert_checkpoint(src, tmp_path / "gemm", "gemm")
    info = read_checkpoint(dst)
    assert info.layout is Layout.GEMM
    assert info.quant.zero_point
    result = load_quantized_auto(dst, "gemm_torch", device="cpu")
    assert result.report.probe is not None
    assert result.report.probe.ok


def test_a_legacy_checkpoint_converts_to_a_modern_one(quantized: QuantizedFactory, tmp_path: Path) -> None:
    """Settings only in quant_config.json (older AutoAWQ): the copy has them in config.json, and no stale legacy
    file (it would name the old version and disagree)."""
    import warnings

    from awq_autoselect.checkpoint import LEGACY_QUANT_CONFIG
    from tests.helpers import copy_checkpoint

    src = copy_checkpoint(quantized(version="gemm", group_size=64), tmp_path / "legacy")
    config = json.loads((src / "config.json").read_text())
    del config["quantization_config"]
    (src / "config.json").write_text(json.dumps(config))
    (src / LEGACY_QUANT_CONFIG).write_text('{"zero_point": true, "q_group_size": 64, "w_bit": 4, "version": "GEMM"}')
    dst = convert_checkpoint(src, tmp_path / "as-gemv", "gemv")
    assert not (dst / LEGACY_QUANT_CONFIG).exists()
    assert json.loads((dst / "config.json").read_text())["quantization_config"]["group_size"] == 64
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no disagreement to warn about
        info = read_checkpoint(dst)
    assert (info.layout, info.quant.group_size, info.quant_source) == (Layout.GEMV, 64, "config.json")
    assert (dst / "generation_config.json").is_file()  # the other files are copied
