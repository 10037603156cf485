"""checkpoint.py: a checkpoint directory is validated from config.json and the safetensors headers alone.

Every bad input is a typed error naming the file and the fix, from read_checkpoint() and from the loader that
starts with it, before anything is loaded; the directory is never changed.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from awq_autoselect.catalogue import Layout
from awq_autoselect.checkpoint import (
    AUTOAWQ_MODEL_TYPES,
    LEGACY_QUANT_CONFIG,
    QuantConfig,
    check_fits_context,
    context_length,
    read_checkpoint,
    read_safetensors_header,
)
from awq_autoselect.cli import EXIT_USAGE
from awq_autoselect.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointWarning,
    CorruptCheckpointError,
    InvalidArgumentError,
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


# --- zero points of 0 (what ExLlama cannot store) ----------------------------------------------------------------


def _zeros_by_unpacking(path: Path) -> tuple[int, int]:
    """Zero points equal to 0 and in all, read by formats.unpack (torch) from the loaded tensors: an independent
    decoder of each layout, against count_zero_point_zeros's numpy nibbles."""
    import torch
    from safetensors.torch import load_file

    from awq_autoselect.formats import unpack

    info = read_checkpoint(path)
    held: dict[str, torch.Tensor] = {}
    for file in info.weight_files:
        held.update(load_file(str(file)))
    zeros = total = 0
    for layer in info.layers:
        parts = {part: held[f"{layer.prefix}.{part}"] for part in ("qweight", "qzeros", "scales")}
        weight = unpack(
            layer.layout,
            parts,
            in_features=layer.in_features,
            out_features=layer.out_features,
            group_size=info.quant.group_size,
        )
        assert weight.zeros is not None
        zeros += int((weight.zeros == 0).sum())
        total += weight.zeros.numel()
    return zeros, total


@pytest.mark.parametrize(("version", "group_size"), [("gemm", 32), ("gemv", 32), ("gemv_fast", 128)])
def test_zero_points_of_zero_are_counted_as_the_layout_stores_them(
    quantized: QuantizedFactory, tmp_path: Path, unchanged: Callable[[Path], None], version: str, group_size: int
) -> None:
    from awq_autoselect.checkpoint import count_zero_point_zeros
    from tests.helpers import zero_one_zero_point

    original = quantized(version=version, group_size=group_size)
    unchanged(original)  # the count reads the checkpoint, never writes it
    found = count_zero_point_zeros(read_checkpoint(original))
    assert (found.zeros, found.total) == _zeros_by_unpacking(original)
    # padding is not counted: GEMV's 4 words per row hold 32 nibbles for 8 or 16 groups, GEMV_fast pads to 8 rows
    assert found.total == sum(
        layer.out_features * layer.in_features // group_size for layer in read_checkpoint(original).layers
    )
    edited = copy_checkpoint(original, tmp_path / "edited")
    layer = zero_one_zero_point(edited)
    after = count_zero_point_zeros(read_checkpoint(edited))
    assert (after.zeros, after.total) == _zeros_by_unpacking(edited)
    assert after.zeros == found.zeros + 1
    assert after.first == (layer if found.first is None else min(layer, found.first))
    assert f"{after.zeros} of {after.total} zero points are 0 (first in " in str(after)


def test_a_random_weight_checkpoint_has_zero_points_of_zero(tmp_path: Path) -> None:
    from awq_autoselect.checkpoint import count_zero_point_zeros
    from awq_autoselect.testing.synthetic import make_synthetic_checkpoint

    path = make_synthetic_checkpoint(tmp_path / "synthetic", shape="tiny", num_layers=1)
    found = count_zero_point_zeros(read_checkpoint(path))
    assert (found.zeros, found.total) == _zeros_by_unpacking(path)
    assert found.total // 32 < found.zeros < found.total // 8  # uniform nibbles: about 1 in 16


def test_a_zero_term_under_a_zero_scale_is_no_zero_point_in_gemv_fast(
    quantized: QuantizedFactory, tmp_path: Path
) -> None:
    """GEMV_fast stores -scale * zero: under a scale of 0 the term is 0 whatever the zero point (formats reads 8)."""
    from safetensors.torch import load_file, save_file

    from awq_autoselect.checkpoint import count_zero_point_zeros

    edited = copy_checkpoint(quantized(version="gemv_fast", group_size=128), tmp_path / "edited")
    (file,) = sorted(edited.glob("*.safetensors"))
    held = load_file(str(file))
    prefix = min(name[: -len(".qzeros")] for name in held if name.endswith(".qzeros"))
    held[f"{prefix}.qzeros"][0, 0] = 0.0
    held[f"{prefix}.scales"][0, 0] = 0.0
    save_file(held, str(file), metadata={"format": "pt"})
    found = count_zero_point_zeros(read_checkpoint(edited))
    assert (found.zeros, found.total) == _zeros_by_unpacking(edited)
    assert found.zeros == 0


def test_damaged_zero_points_are_a_checkpoint_error(quantized: QuantizedFactory, tmp_path: Path) -> None:
    from awq_autoselect.checkpoint import count_zero_point_zeros

    path = copy_checkpoint(quantized(version="gemm", group_size=128), tmp_path / "cut")
    info = read_checkpoint(path)
    (file,) = info.weight_files
    with open(file, "r+b") as fh:  # cut the file after reading its header: the qzeros are gone
        fh.truncate(min(t.offset for t in info.tensors.values()))
    with pytest.raises(CorruptCheckpointError, match="qzeros"):
        count_zero_point_zeros(info)


# --- legacy quant_config.json (older AutoAWQ releases) and the types of the settings ----------------------------


def _legacy(src: Path, dst: Path, **changes: object) -> Path:
    """A copy of ``src`` in AutoAWQ's older form: config.json without quantization_config, the settings in
    quant_config.json under AutoAWQ's legacy keys (``changes`` replace or add keys there)."""
    path = copy_checkpoint(src, dst)
    config = json.loads((path / "config.json").read_text())
    qc = config.pop("quantization_config")
    (path / "config.json").write_text(json.dumps(config))
    legacy = {"zero_point": qc["zero_point"], "q_group_size": qc["group_size"], "w_bit": qc["bits"]}
    legacy["version"] = str(qc["version"]).upper()
    (path / LEGACY_QUANT_CONFIG).write_text(json.dumps({**legacy, **changes}))
    return path


def _same_logits(a: Path, b: Path) -> bool:
    """Whether two checkpoints, loaded with gemm_torch on the CPU (probe passed), give bit-identical logits."""
    import torch

    logits = []
    for path in (a, b):
        result = load_quantized_auto(path, "gemm_torch", device="cpu", trials=False)
        assert result.report.probe is not None and result.report.probe.ok
        with torch.no_grad():
            logits.append(result.model(torch.tensor([[1, 17, 42, 99, 150, 301, 7]])).logits)
    return torch.equal(*logits)


def test_a_legacy_checkpoint_loads_with_the_logits_of_its_modern_form(
    quantized: QuantizedFactory, tmp_path: Path, unchanged: Callable[[Path], None]
) -> None:
    """Group size 64: AutoAWQ 0.2.9 itself never reads quant_config.json and builds such a checkpoint with its
    default of 128 (a shape error at load); the settings must come from the file."""
    modern = quantized(version="gemm", group_size=64)
    legacy = _legacy(modern, tmp_path / "legacy")
    unchanged(legacy)
    info = read_checkpoint(legacy)
    assert info.quant == read_checkpoint(modern).quant == QuantConfig(group_size=64)
    assert (info.quant_source, read_checkpoint(modern).quant_source) == ("quant_config.json", "config.json")
    assert _same_logits(legacy, modern)
    gemv = read_checkpoint(_legacy(quantized(version="gemv", group_size=64), tmp_path / "legacy-gemv"))
    assert gemv.quant == QuantConfig(group_size=64, layout=Layout.GEMV)


def test_when_both_files_disagree_config_json_wins_with_a_warning_naming_both_values(
    quantized: QuantizedFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modern = quantized(version="gemm", group_size=64)
    path = copy_checkpoint(modern, tmp_path / "both")
    (path / LEGACY_QUANT_CONFIG).write_text(
        json.dumps({"zero_point": True, "q_group_size": 128, "w_bit": 4, "version": "GEMV"})
    )
    with pytest.warns(CheckpointWarning) as caught:
        info = read_checkpoint(path)
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(f"{path}: config.json's quantization_config and the legacy quant_config.json disagree")
    assert "config.json has group_size=64, quant_config.json has q_group_size=128" in message
    assert "config.json has version='gemm', quant_config.json has version='GEMV'" in message
    assert "zero_point" not in message  # only what differs
    assert "using config.json's quantization_config (gemm, group_size 64)" in message
    assert (info.quant, info.quant_source) == (read_checkpoint(modern).quant, "config.json")
    with pytest.warns(CheckpointWarning, match="q_group_size=128"):
        assert _same_logits(path, modern)
    monkeypatch.setenv("AWQ_AUTOSELECT_TRIALS", "0")
    code, out, _ = run_cli("load", str(path), "--version", "gemm_torch", "--device", "cpu", "--json")
    assert code == 0
    assert any("q_group_size=128" in w for w in json.loads(out)["warnings"])


def test_a_legacy_file_that_agrees_is_silent_and_one_that_cannot_be_read_beside_config_json_is_named(
    quantized: QuantizedFactory, tmp_path: Path
) -> None:
    modern = quantized(version="gemm", group_size=64)
    path = copy_checkpoint(modern, tmp_path / "both")
    (path / LEGACY_QUANT_CONFIG).write_text(
        json.dumps({"zero_point": True, "q_group_size": 64, "w_bit": 4, "version": "GEMM"})
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_checkpoint(path).quant == read_checkpoint(modern).quant
    (path / LEGACY_QUANT_CONFIG).write_text("{not json")
    with pytest.warns(CheckpointWarning, match=r"the legacy quant_config\.json beside config\.json cannot be read"):
        assert read_checkpoint(path).quant == read_checkpoint(modern).quant


@pytest.mark.parametrize(
    ("legacy", "changes"),
    [(False, {"qc_bits": "4"}), (False, {"qc_bits": "4", "qc_group_size": " 64 "}), (True, {"w_bit": "4"})],
    ids=["bits", "bits-and-group-size", "legacy-w_bit"],
)
def test_numbers_written_as_strings_are_read(
    quantized: QuantizedFactory, tmp_path: Path, legacy: bool, changes: dict[str, object]
) -> None:
    modern = quantized(version="gemm", group_size=64)
    if legacy:
        path = _legacy(modern, tmp_path / "ckpt", **changes)
    else:
        path = copy_checkpoint(modern, tmp_path / "ckpt")
        edit_config(path, **changes)
    assert read_checkpoint(path).quant == QuantConfig(group_size=64)
    if changes == {"qc_bits": "4"}:  # and such a checkpoint loads (one load is enough: the settings are equal)
        assert _same_logits(path, modern)


@pytest.mark.parametrize(
    ("legacy", "key", "value"),
    [(False, "bits", "four"), (False, "bits", 4.5), (False, "group_size", "128a"), (True, "w_bit", "four")],
    ids=["bits-four", "bits-4.5", "group-size-text", "legacy-w_bit-four"],
)
def test_a_setting_of_the_wrong_type_names_the_key_the_value_and_its_type(
    quantized: QuantizedFactory, tmp_path: Path, legacy: bool, key: str, value: object
) -> None:
    modern = quantized(version="gemm", group_size=128)
    if legacy:
        path = _legacy(modern, tmp_path / "ckpt", **{key: value})
    else:
        path = copy_checkpoint(modern, tmp_path / "ckpt")
        edit_config(path, **{f"qc_{key}": value})
    words = f"{key}={value!r} ({type(value).__name__}) is not a whole number"
    file = path / (LEGACY_QUANT_CONFIG if legacy else "config.json")
    with pytest.raises(UnsupportedCheckpointError, match=re.escape(words)) as caught:
        read_checkpoint(path)
    assert str(caught.value).startswith(str(file))
    with pytest.raises(UnsupportedCheckpointError, match=re.escape(words)):
        load_quantized_auto(path, device="cpu")
    code, out, err = run_cli("load", str(path), "--device", "cpu")
    assert (code, out) == (3, "")
    assert words in err
    assert len(err.strip().splitlines()) == 1


def test_a_legacy_file_that_is_not_json_is_a_corrupt_checkpoint(quantized: QuantizedFactory, tmp_path: Path) -> None:
    path = _legacy(quantized(version="gemm", group_size=128), tmp_path / "ckpt")
    (path / LEGACY_QUANT_CONFIG).write_text('{"w_bit": 4,')
    with pytest.raises(CorruptCheckpointError, match=rf"{path / LEGACY_QUANT_CONFIG}: not valid JSON"):
        read_checkpoint(path)
    code, _, err = run_cli("select", "--checkpoint", str(path), "--capability", "8.6", "--kernels", "gemm")
    assert code == 3
    assert len(err.strip().splitlines()) == 1


def test_an_empty_path_is_an_argument_error_not_the_current_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).parent)  # a folder that is no checkpoint: "" must not mean it
    for empty in ("", "  "):  # (Path("") is Path("."): the current directory, asked for)
        with pytest.raises(InvalidArgumentError, match="is empty"):
            read_checkpoint(empty)
    code, out, err = run_cli("select", "--checkpoint", "")
    assert (code, out) == (EXIT_USAGE, "")
    assert err.startswith("error: checkpoint path '' is empty") and err.count("\n") == 1


_LLAMA = {"max_position_embeddings": 4096}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (_LLAMA, 4096),
        ({"n_positions": 1024}, 1024),  # GPT-2 style
        ({"max_seq_len": 2048}, 2048),  # MPT
        ({"text_config": _LLAMA}, 4096),  # a multimodal model's language part
        ({}, None),  # ALiBi (BLOOM): no length
        ({"max_position_embeddings": 0}, None),
        ({"max_position_embeddings": True}, None),
        # Qwen2.5's long-context recipe: YaRN added to config.json, max_position_embeddings left at 32768
        (
            {
                "max_position_embeddings": 32768,
                "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
            },
            131072,
        ),
        # DeepSeek-V2: max_position_embeddings is already the stretched length
        (
            {
                "max_position_embeddings": 163840,
                "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096},
            },
            163840,
        ),
        ({"max_position_embeddings": 4096, "rope_scaling": {"rope_type": "linear", "factor": 2.0}}, 8192),
        # transformers 5 writes rope_parameters; Llama 3.1's llama3 scaling is in max_position_embeddings already
        (
            {
                "max_position_embeddings": 131072,
                "rope_parameters": {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192},
            },
            131072,
        ),
        ({"max_position_embeddings": 4096, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}, 4096),
    ],
)
def test_context_length_reads_the_config(config: dict[str, object], expected: int | None) -> None:
    assert context_length(config) == expected


def test_a_request_longer_than_the_context_names_both_numbers(quantized: QuantizedFactory) -> None:
    info = read_checkpoint(quantized(version="gemm", group_size=128))
    assert info.context_length == 512  # the tiny test model's max_position_embeddings
    check_fits_context(info, 500, 12)  # exactly the context
    with pytest.raises(InvalidArgumentError) as caught:
        check_fits_context(info, 500, 13, prompt_name="the prompt", new_name="--max-new-tokens")
    message = str(caught.value)
    assert "the prompt (500 tokens) plus --max-new-tokens (13) is 513 tokens" in message
    assert "context of 512 tokens" in message and "at most 12 new tokens" in message
    with pytest.raises(InvalidArgumentError, match="shorten the prompt below 512 tokens"):
        check_fits_context(info, 600, 1)
