"""make_synthetic_checkpoint(): real AutoAWQ format, loaded by AutoAWQ itself, packed as AutoAWQ packs.

The references are AutoAWQ's own code: ``from_quantized`` loads the files, ``unpack_awq``/``dequantize_gemm``
read them, and ``WQLinear_GEMM.from_linear``/``WQLinear_GEMV.from_linear`` (AutoAWQ's packers) must reproduce
the synthetic bytes exactly from the weights they encode. On this CPU machine AutoAWQ's ``from_quantized``
forces the IPEX kernel, which does not import with current torch; the tests patch ``get_best_device`` to load
the real modules, and switch the GEMM module's Triton path off because it needs CUDA (test-only workarounds;
awq_autoselect's own loader needs neither). GEMV modules cannot run a forward without ``awq_ext``, so GEMV is
checked by loading, by AutoAWQ's packer and by dequantized equality with the GEMM checkpoint of the same seed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file

from awq_autoselect import formats
from awq_autoselect.catalogue import Layout
from awq_autoselect.checkpoint import read_checkpoint
from awq_autoselect.errors import InvalidArgumentError, OutputPathError, UnknownVersionError, UnsupportedCheckpointError
from awq_autoselect.testing.synthetic import (
    SHAPES,
    ModelShape,
    _write_tokenizer,
    make_synthetic_checkpoint,
)
from tests.helpers import QuantizedFactory, read_quant_config

TINY_SHAPES = {(256, 128), (256, 256), (256, 512), (512, 256)}  # (in, out): k/v, q/o, gate/up, down
IDS = torch.tensor([[1, 17, 42, 99, 150, 301, 7, 255, 12, 64]])

Factory = Callable[..., Path]

# AutoAWQ's notice at the first GEMM forward without awq_ext ("Using naive (slow) implementation."): expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Using naive:UserWarning")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Factory:
    """``synthetic(version=..., seed=..., ...)`` -> a tiny checkpoint, made once per module. Do not modify."""
    cache: dict[tuple[tuple[str, object], ...], Path] = {}

    def make(**kwargs: object) -> Path:
        args = {"shape": "tiny", "version": "gemm", "seed": 0, **kwargs}
        key = tuple(sorted(args.items()))
        if key not in cache:
            out = tmp_path_factory.mktemp("synthetic")
            cache[key] = make_synthetic_checkpoint(out, **args)  # type: ignore[arg-type]
        return cache[key]

    return make


@pytest.fixture
def autoawq_cpu(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], Any]:
    """``load(path)`` -> AutoAWQ's own ``from_quantized`` model on CPU (see the module docstring)."""
    import awq.modules.linear.gemm as awq_gemm
    from awq import AutoAWQForCausalLM

    monkeypatch.setattr(awq_gemm, "TRITON_AVAILABLE", False)

    def load(path: Path) -> Any:
        with mock.patch("awq.models.base.get_best_device", return_value="cuda:0"):
            return AutoAWQForCausalLM.from_quantized(str(path), fuse_layers=False)

    return load


def layer_tensors(path: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


def file_digests(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir()) if p.is_file()}


def awq_unpack(t: dict[str, torch.Tensor], prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """AutoAWQ's own reading of a GEMM layer: integer weights [K, N] and zero points [K/g, N], natural order."""
    from awq.utils.packing_utils import reverse_awq_order, unpack_awq

    iweight, izeros = unpack_awq(t[f"{prefix}.qweight"], t[f"{prefix}.qzeros"], 4)
    iweight, izeros = reverse_awq_order(iweight, izeros, 4)
    return torch.bitwise_and(iweight, 15), torch.bitwise_and(izeros, 15)


# --- shapes ---------------------------------------------------------------------------------------------------


FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "rope_theta",
)


@pytest.mark.parametrize(
    ("name", "dims"),
    [
        ("llama-2-7b", (4096, 11008, 32, 32, 32, 32000, 10000.0)),
        ("llama-3-8b", (4096, 14336, 32, 32, 8, 128256, 500000.0)),
        ("tiny", (256, 512, 2, 4, 2, 512, 10000.0)),
    ],
)
def test_shapes_have_the_real_models_dimensions(name: str, dims: tuple[float, ...]) -> None:
    shape = SHAPES[name]
    assert {field: getattr(shape, field) for field in FIELDS} == dict(zip(FIELDS, dims, strict=True))
    assert shape.with_layers(1).num_hidden_layers == 1
    assert shape.with_layers(1).hidden_size == shape.hidden_size


# --- the files ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["gemm", "gemv"])
def test_read_checkpoint_accepts_it(synthetic: Factory, version: str) -> None:
    info = read_checkpoint(synthetic(version=version))
    assert info.layout is Layout(version)
    assert info.model_type == "llama"
    assert info.architectures == ("LlamaForCausalLM",)
    assert info.quant.group_size == 128
    assert info.quant.zero_point
    assert len(info.layers) == 2 * 7
    assert set(info.shapes()) == TINY_SHAPES
    assert [f.name for f in info.weight_files] == ["model.safetensors"]


@pytest.mark.parametrize("version", ["gemm", "gemv"])
def test_config_has_the_form_autoawq_writes(synthetic: Factory, quantized: QuantizedFactory, version: str) -> None:
    ours = synthetic(version=version)
    real = quantized(version=version)  # quantized and saved by AutoAWQ itself
    assert read_quant_config(ours) == read_quant_config(real)
    our_config = json.loads((ours / "config.json").read_text())
    real_config = json.loads((real / "config.json").read_text())
    assert set(our_config) == set(real_config)
    assert our_config["dtype" if "dtype" in real_config else "torch_dtype"] == "float16"
    generation = json.loads((ours / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (1, 2)


def test_group_size_is_written_and_used(synthetic: Factory) -> None:
    path = synthetic(group_size=64)
    assert read_quant_config(path)["group_size"] == 64
    tensors = layer_tensors(path)
    assert tuple(tensors["model.layers.0.mlp.down_proj.scales"].shape) == (512 // 64, 256)


def test_random_values_cover_every_nibble_and_scales_are_realistic(synthetic: Factory) -> None:
    tensors = layer_tensors(synthetic())
    for name, in_features, _ in SHAPES["tiny"].linear_shapes():
        prefix = f"model.layers.1.{name}"
        iweight, izeros = awq_unpack(tensors, prefix)
        assert set(torch.unique(iweight).tolist()) == set(range(16)), prefix
        assert abs(float(iweight.float().mean()) - 7.5) < 0.2, prefix
        assert int(izeros.min()) >= 0
        assert int(izeros.max()) <= 15
        scales = tensors[f"{prefix}.scales"].float()
        base = 1 / (4 * math.sqrt(in_features))
        assert 0.74 * base <= float(scales.min()), prefix
        assert float(scales.max()) <= 1.26 * base, prefix
    norms = [t for n, t in tensors.items() if n.endswith("norm.weight")]
    assert len(norms) == 2 * 2 + 1
    assert all(bool((t == 1).all()) for t in norms)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert tensors[name].dtype == torch.float16
        assert tuple(tensors[name].shape) == (512, 256)


# --- AutoAWQ loads it and packs it the same way ---------------------------------------------------------------


def test_autoawq_loads_gemm_and_runs_a_finite_forward_and_generate(
    synthetic: Factory, autoawq_cpu: Callable[[Path], Any]
) -> None:
    from awq.modules.linear.gemm import WQLinear_GEMM
    from transformers import AutoTokenizer

    path = synthetic()
    model = autoawq_cpu(path)
    tensors = layer_tensors(path)
    linears = {n: m for n, m in model.model.named_modules() if isinstance(m, WQLinear_GEMM)}
    assert len(linears) == 14
    for name, module in linears.items():
        for buffer in ("qweight", "qzeros", "scales"):
            assert torch.equal(getattr(module, buffer), tensors[f"{name}.{buffer}"]), (name, buffer)
    with torch.no_grad():
        logits = model(IDS).logits
    assert logits.shape == (1, IDS.shape[1], 512)
    assert bool(torch.isfinite(logits).all())
    assert 0.1 < float(logits.float().std()) < 10
    out = model.generate(input_ids=IDS, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    new = out[0, IDS.shape[1] :].tolist()
    assert len(new) == 4
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    assert isinstance(tokenizer.decode(new), str)


def test_autoawq_loads_gemv_with_the_right_buffers(synthetic: Factory, autoawq_cpu: Callable[[Path], Any]) -> None:
    from awq.modules.linear.gemv import WQLinear_GEMV

    path = synthetic(version="gemv")
    model = autoawq_cpu(path)
    tensors = layer_tensors(path)
    linears = {n: m for n, m in model.model.named_modules() if isinstance(m, WQLinear_GEMV)}
    assert len(linears) == 14
    for name, module in linears.items():
        for buffer in ("qweight", "qzeros", "scales"):
            assert torch.equal(getattr(module, buffer), tensors[f"{name}.{buffer}"]), (name, buffer)


@pytest.mark.parametrize("group", [32, 64, 128])
def test_autoawq_packers_reproduce_the_synthetic_bytes(synthetic: Factory, group: int) -> None:
    """Dequantize the GEMM checkpoint with AutoAWQ, re-quantize with AutoAWQ's from_linear in both layouts."""
    from awq.modules.linear.gemm import WQLinear_GEMM
    from awq.modules.linear.gemv import WQLinear_GEMV
    from awq.utils.packing_utils import dequantize_gemm

    gemm = layer_tensors(synthetic(group_size=group))
    gemv = layer_tensors(synthetic(version="gemv", group_size=group))
    for name, in_features, out_features in SHAPES["tiny"].linear_shapes():
        prefix = f"model.layers.0.{name}"
        q, z = awq_unpack(gemm, prefix)
        scales = gemm[f"{prefix}.scales"]
        weight = dequantize_gemm(gemm[f"{prefix}.qweight"], gemm[f"{prefix}.qzeros"], scales, 4, group)
        exact = (q - z.repeat_interleave(group, 0)).float() * scales.float().repeat_interleave(group, 0)
        assert torch.equal(weight, exact.half())
        linear = torch.nn.Linear(in_features, out_features, bias=False)
        linear.weight.data = exact.t().contiguous()
        with mock.patch("awq.modules.linear.gemm.get_best_device", return_value="cpu"):
            ref_gemm = WQLinear_GEMM.from_linear(linear, 4, group, scales=scales, zeros=z)
        ref_gemv = WQLinear_GEMV.from_linear(linear, 4, group, scales=scales.t().contiguous(), zeros=z.t().contiguous())
        for ref, ours in ((ref_gemm, gemm), (ref_gemv, gemv)):
            for buffer in ("qweight", "qzeros", "scales"):
                assert torch.equal(getattr(ref, buffer), ours[f"{prefix}.{buffer}"]), (type(ref).__name__, buffer)


def test_gemv_and_gemm_of_one_seed_dequantize_identically(synthetic: Factory) -> None:
    from awq.utils.packing_utils import dequantize_gemm

    gemm, gemv = layer_tensors(synthetic()), layer_tensors(synthetic(version="gemv"))
    for layer in range(2):
        for name, in_features, out_features in SHAPES["tiny"].linear_shapes():
            prefix = f"model.layers.{layer}.{name}"
            reference = dequantize_gemm(
                gemm[f"{prefix}.qweight"], gemm[f"{prefix}.qzeros"], gemm[f"{prefix}.scales"], 4, 128
            )
            unpacked = formats.unpack(
                "gemv",
                {k: gemv[f"{prefix}.{k}"] for k in ("qweight", "qzeros", "scales")},
                in_features=in_features,
                out_features=out_features,
                group_size=128,
            )
            assert torch.equal(formats.dequantize(unpacked, torch.float16), reference.t()), prefix


def test_awq_autoselect_loader_runs_both_layouts_to_the_same_logits(synthetic: Factory) -> None:
    from awq_autoselect.loading import load_quantized_auto

    logits = []
    for version in ("gemm", "gemv"):
        result = load_quantized_auto(synthetic(version=version), device="cpu")
        with torch.no_grad():
            logits.append(result.model(IDS).logits.float())
    assert bool(torch.isfinite(logits[0]).all())
    assert torch.allclose(logits[0], logits[1], rtol=0, atol=1e-2)


# --- tokenizer ------------------------------------------------------------------------------------------------


def test_tokenizer_loads_and_decodes_every_id(synthetic: Factory) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(synthetic()))
    assert len(tokenizer) == 512
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (1, 2)
    texts: list[str] = tokenizer.batch_decode([[i] for i in range(512)])
    assert len(texts) == 512
    assert all(texts[3:])  # every id but the specials decodes to some text
    text = "The kernel reads packed weights, 4096 of them!"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert max(ids) < 512
    assert len(ids) < len(text) / 2
    assert tokenizer.decode(ids) == text


def test_tokenizer_pads_to_a_llama_3_vocabulary(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    _write_tokenizer(tmp_path, 128256, 8192)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(tokenizer) == 128256
    assert tokenizer.decode([128255]) == "<extra_128255>"
    assert (tmp_path / "tokenizer.json").stat().st_size < 8_000_000


# --- determinism, sharding, overwrite -------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_another_seed_other_weights(synthetic: Factory, tmp_path: Path) -> None:
    first = synthetic()
    again = make_synthetic_checkpoint(tmp_path / "again", shape="tiny", seed=0)
    assert file_digests(first) == file_digests(again)
    other = file_digests(make_synthetic_checkpoint(tmp_path / "other", shape="tiny", seed=1))
    assert other["model.safetensors"] != file_digests(first)["model.safetensors"]
    assert other["config.json"] == file_digests(first)["config.json"]


def test_sharded_checkpoint_holds_the_same_tensors_and_loads_in_autoawq(
    synthetic: Factory, tmp_path: Path, autoawq_cpu: Callable[[Path], Any]
) -> None:
    path = make_synthetic_checkpoint(tmp_path / "sharded", shape="tiny", max_shard_size=300_000)
    files = sorted(p.name for p in path.glob("*.safetensors"))
    assert len(files) > 2
    assert files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    index = json.loads((path / "model.safetensors.index.json").read_text())
    tensors = layer_tensors(path)
    assert set(index["weight_map"]) == set(tensors)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())
    whole = layer_tensors(synthetic())
    assert tensors.keys() == whole.keys()
    assert all(torch.equal(tensors[k], whole[k]) for k in tensors)
    info = read_checkpoint(path)
    assert len(info.weight_files) == len(files)
    assert len(info.layers) == 14
    with torch.no_grad():
        sharded_logits = autoawq_cpu(path)(IDS).logits
        whole_logits = autoawq_cpu(synthetic())(IDS).logits
    assert torch.equal(sharded_logits, whole_logits)


def test_refuses_a_non_empty_directory_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "model-00001-of-00009.safetensors").write_bytes(b"stale")
    for overwrite in (False, True):
        with pytest.raises(OutputPathError, match="not written by awq-autoselect"):
            make_synthetic_checkpoint(out, shape="tiny", overwrite=overwrite)
        assert sorted(p.name for p in out.iterdir()) == ["model-00001-of-00009.safetensors", "notes.txt"]
        assert (out / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_its_own_checkpoint_only(tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    make_synthetic_checkpoint(out, shape="tiny", version="gemv")
    with pytest.raises(OutputPathError, match="overwrite"):
        make_synthetic_checkpoint(out, shape="tiny")
    make_synthetic_checkpoint(out, shape="tiny", overwrite=True)
    assert read_checkpoint(out).layout is Layout.GEMM
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputPathError, match=r"notes\.txt"):
        make_synthetic_checkpoint(out, shape="tiny", overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"


def test_refuses_a_file_and_accepts_an_empty_directory(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(OutputPathError, match="is a file"):
        make_synthetic_checkpoint(file, shape="tiny", overwrite=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert make_synthetic_checkpoint(empty, shape="tiny") == empty


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"shape": "llama-70b"}, InvalidArgumentError, "llama-70b.*tiny, llama-2-7b, llama-3-8b"),
        ({"version": "awq-fast"}, UnknownVersionError, "awq-fast"),
        ({"version": "marlin"}, UnsupportedCheckpointError, "gemm or gemv"),
        ({"group_size": 48}, UnsupportedCheckpointError, "group_size=48"),
        ({"group_size": -1, "version": "gemv"}, UnsupportedCheckpointError, "gemv"),
        ({"num_layers": 0}, InvalidArgumentError, "num_layers=0"),
        ({"max_shard_size": 0}, InvalidArgumentError, "max_shard_size"),
        ({"device": "warp-drive"}, InvalidArgumentError, "warp-drive"),
        (
            {"shape": ModelShape("odd", 384, 512, 1, 4, 4, 512, 512), "group_size": 256},
            UnsupportedCheckpointError,
            "group_size=256",
        ),
        ({"shape": ModelShape("small-vocab", 256, 512, 1, 4, 4, 300, 512)}, InvalidArgumentError, "vocab_size 300"),
        ({"shape": ModelShape("bad-heads", 256, 512, 1, 4, 3, 512, 512)}, InvalidArgumentError, "KV groups"),
    ],
)
def test_bad_arguments_are_rejected_before_writing(
    tmp_path: Path, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    args: dict[str, object] = {"shape": "tiny", **kwargs}
    with pytest.raises(error, match=match):
        make_synthetic_checkpoint(tmp_path / "out", **args)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when CUDA is missing")
def test_cuda_device_without_cuda_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="CUDA is not available"):
        make_synthetic_checkpoint(tmp_path / "out", shape="tiny", device="cuda")


def test_group_size_minus_one_gemm_is_per_channel(tmp_path: Path) -> None:
    path = make_synthetic_checkpoint(tmp_path / "g-1", shape="tiny", group_size=-1)
    info = read_checkpoint(path)
    assert info.quant.group_size == -1
    assert tuple(layer_tensors(path)["model.layers.0.mlp.down_proj.scales"].shape) == (1, 256)


# --- 7B width -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_one_layer_at_llama_2_7b_width_loads_and_runs(tmp_path: Path, autoawq_cpu: Callable[[Path], Any]) -> None:
    path = make_synthetic_checkpoint(tmp_path / "7b-1", shape="llama-2-7b", num_layers=1)
    info = read_checkpoint(path)
    assert set(info.shapes()) == {(4096, 4096), (4096, 11008), (11008, 4096)}
    assert info.config["num_hidden_layers"] == 1
    assert info.config["vocab_size"] == 32000
    model = autoawq_cpu(path)
    with torch.no_grad():
        logits = model(IDS[:, :4]).logits
    assert logits.shape == (1, 4, 32000)
    assert bool(torch.isfinite(logits).all())


# --- GPU: the real 7B shapes ----------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("shape", ["llama-2-7b", "llama-3-8b"])
def test_full_size_checkpoint_made_on_cuda_loads_and_runs_finite(tmp_path: Path, shape: str) -> None:
    import shutil
    import time

    from awq import AutoAWQForCausalLM

    start = time.perf_counter()
    path = make_synthetic_checkpoint(tmp_path / shape, shape=shape, device="cuda")
    seconds = time.perf_counter() - start
    try:
        info = read_checkpoint(path)
        assert len(info.layers) == 32 * 7
        assert len(info.weight_files) >= 2  # ~3.9-5.7 GB in 2 GB shards
        model = AutoAWQForCausalLM.from_quantized(str(path), fuse_layers=False)
        ids = IDS.to("cuda")
        with torch.no_grad():
            logits = model(ids).logits
        assert bool(torch.isfinite(logits).all()), f"{shape}: non-finite logits through 32 random layers"
        out = model.generate(input_ids=ids, max_new_tokens=8, min_new_tokens=8, do_sample=False)
        assert out.shape[1] == ids.shape[1] + 8
        print(f"{shape}: made on cuda in {seconds:.1f} s, {info.total_bytes / 1e9:.2f} GB")
    finally:
        shutil.rmtree(path)  # 4-6 GB; pytest would keep it for three sessions
