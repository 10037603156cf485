"""checkpoint.py: a checkpoint directory is validated from config.json and the safetensors headers alone.

Every bad input is a typed error naming the file and the fix, from read_checkpoint() and from the loader that
starts with it, before anything is loaded; the directory is never changed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from awq_autoselect.catalogue import Layout
from awq_autoselect.checkpoint import AUTOAWQ_MODEL_TYPES, QuantConfig, read_checkpoint, read_safetensors_header
from awq_autoselect.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    NotAwqCheckpointError,
    UnsupportedCheckpointError,
)
from awq_autoselect.loading import load_quantized_auto
from tests.helpers import QuantizedFactory, copy_checkpoint, edit_config, run_cli


def test_a_real_checkpoint_is_described(quantized: QuantizedFactory, unchanged: Callable[[Path], None]) -> None:
    path = quantized(version="gemv", group_size=64)
    unchanged(path)
    info = read_checkpoint(path)
    assert info.layout is Layout.GEMV
    assert info.quant == QuantConfig(group_size=64, layout=Layout.GEMV)
    assert info.model_type == "llama"
    assert len(info.layers) == 2 * 7
    assert info.shapes() == ((256, 256), (256, 512), (512, 256))
    assert info.quantized_bytes < info.total_bytes
    header = read_safetensors_header(info.weight_files[0])
    assert f"{info.layers[0].prefix}.qweight" in header


def test_model_types_match_autoawq() -> None:
    from awq_autoselect._awq import import_awq

    import_awq()
    from awq.models.auto import AWQ_CAUSAL_LM_MODEL_MAP

    assert set(AWQ_CAUSAL_LM_MODEL_MAP) == AUTOAWQ_MODEL_TYPES


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(CheckpointNotFoundError, match="does not exist") as info:
        read_checkpoint(missing)
    with pytest.raises(CheckpointNotFoundError):
        load_quantized_auto(missing, device="cpu")
    assert str(missing) in str(info.value)
    assert issubclass(CheckpointNotFoundError, FileNotFoundError)


def test_directory_without_config(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointNotFoundError, match=r"config\.json"):
        load_quantized_auto(tmp_path, device="cpu")


def test_model_that_is_not_awq(tiny_model_dir: Path, unchanged: Callable[[Path], None]) -> None:
    unchanged(tiny_model_dir)
    with pytest.raises(NotAwqCheckpointError, match="quantization_config"):
        load_quantized_auto(tiny_model_dir, device="cpu")


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"qc_bits": 8}, UnsupportedCheckpointError, "bits=8"),
        ({"qc_group_size": 100}, UnsupportedCheckpointError, "group_size=100"),
        ({"qc_quant_method": "gptq"}, NotAwqCheckpointError, "gptq"),
        ({"qc_version": "exl3"}, UnsupportedCheckpointError, "exl3"),
        ({"qc_version": "gemv"}, CorruptCheckpointError, "GEMM layout"),
        ({"model_type": "not_a_model"}, UnsupportedCheckpointError, "not_a_model"),
    ],
)
def test_bad_quant_configs(
    quantized: QuantizedFactory,
    tmp_path: Path,
    unchanged: Callable[[Path], None],
    changes: dict[str, object],
    error: type[Exception],
    match: str,
) -> None:
    path = copy_checkpoint(quantized(version="gemm", group_size=128), tmp_path / "ckpt")
    edit_config(path, **changes)
    unchanged(path)
    with pytest.raises(error, match=match):
        read_checkpoint(path)
    with pytest.raises(error, match=match):
        load_quantized_auto(path, device="cpu")


def test_truncated_weights(quantized: QuantizedFactory, tmp_path: Path, unchanged: Callable[[Path], None]) -> None:
    path = copy_checkpoint(quantized(version="gemm", group_size=128), tmp_path / "ckpt")
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    unchanged(path)
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        load_quantized_auto(path, device="cpu")


@pytest.mark.parametrize(
    ("tensor", "value"), [("scales", float("nan")), ("scales", float("inf")), ("norm", float("nan"))]
)
def test_non_finite_values_are_a_corrupt_checkpoint(
    quantized: QuantizedFactory, tmp_path: Path, unchanged: Callable[[Path], None], tensor: str, value: float
) -> None:
    from safetensors.torch import load_file, save_file

    path = copy_checkpoint(quantized(version="gemm", group_size=64), tmp_path / "ckpt")
    tensors = load_file(str(path / "model.safetensors"))
    name = "model.layers.1.mlp.down_proj.scales" if tensor == "scales" else "model.layers.0.input_layernorm.weight"
    tensors[name].view(-1)[3] = value
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    unchanged(path)
    words = rf"{path}: tensor {name} \(in model\.safetensors\) holds 1 NaN or inf value\(s\)"
    with pytest.raises(CorruptCheckpointError, match=words):
        load_quantized_auto(path, device="cpu")
    code, _, err = run_cli("load", str(path), "--device", "cpu")
    assert code == 3
    assert f"tensor {name} (in model.safetensors) holds 1 NaN or inf value(s)" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli("convert", str(path), str(tmp_path / "out"), "--to", "gemv")
    assert code == 3
    assert f"tensor {name}" in err
    assert not (tmp_path / "out").exists()


def test_a_damaged_gemm_layer_is_named_with_its_folder_and_both_layouts(
    quantized: QuantizedFactory, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    path = copy_checkpoint(quantized(version="gemm", group_size=64), tmp_path / "ckpt")
    tensors = load_file(str(path / "model.safetensors"))
    name = "model.layers.0.self_attn.o_proj"
    tensors[f"{name}.scales"] = torch.cat([tensors[f"{name}.scales"]] * 2)  # twice the groups
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CorruptCheckpointError) as caught:
        read_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path / 'model.safetensors'}: layer {name}: qweight")
    assert "fit neither the GEMM layout" in message
    assert "nor the GEMV layout" in message
    assert "config.json says 'gemm'" in message
    assert "gemv layer" not in message


def test_corrupt_header(quantized: QuantizedFactory, tmp_path: Path) -> None:
    path = copy_checkpoint(quantized(version="gemm", group_size=128), tmp_path / "ckpt")
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:16] = b"\xff\xfe{{{{{{"
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError):
        load_quantized_auto(path, device="cpu")


def test_pickle_only_checkpoint(quantized: QuantizedFactory, tmp_path: Path) -> None:
    path = copy_checkpoint(quantized(version="gemm", group_size=128), tmp_path / "ckpt")
    (path / "model.safetensors").rename(path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_quantized_auto(path, device="cpu")
