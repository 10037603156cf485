"""Helpers every test file shares: tiny real models quantized by AutoAWQ, tree hashing, the CLI runner, and
tensor helpers for the kernel tests. Nothing here is a fake: see the functions' docstrings."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from awq_autoselect import formats
from awq_autoselect.cli import main
from awq_autoselect.kernels.torch_int4 import BF16_UNIT_ROUNDOFF, weight_error_bound

if TYPE_CHECKING:
    from transformers import PreTrainedModel

QuantizedFactory = Callable[..., Path]
U = BF16_UNIT_ROUNDOFF

CALIBRATION_TEXTS = [
    f"Sample {i}: the quick brown fox jumps over the lazy dog, then the dog sleeps while the fox "
    f"counts {i * 7 % 13} stars and writes them down in a small notebook."
    for i in range(48)
]

# Llama at a size where every projection is a multiple of 256 (so Marlin and GEMV_fast shapes work too),
# with 2 layers. in_features are 256 (q/k/v/o, gate/up) and 512 (down).
TINY_LLAMA: dict[str, Any] = {
    "vocab_size": 512,
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}

TINY_QWEN2: dict[str, Any] = {**TINY_LLAMA, "num_key_value_heads": 2}

#: The dense architectures tested end to end (quantized by AutoAWQ at test time), with their tiny shapes.
TINY_DENSE: dict[str, dict[str, Any]] = {
    "llama": TINY_LLAMA,
    "mistral": {**TINY_LLAMA, "num_key_value_heads": 2, "sliding_window": None},
    "qwen2": TINY_QWEN2,
    "qwen3": {**TINY_QWEN2, "head_dim": 64},
    "gemma2": {**TINY_QWEN2, "head_dim": 64, "query_pre_attn_scalar": 64, "sliding_window": 128},
    "phi3": {**TINY_LLAMA, "pad_token_id": 3, "bos_token_id": 1, "eos_token_id": 2},
}


def build_tokenizer(out: Path) -> None:
    """Train a 512-token byte-level BPE on the calibration texts and save it beside the model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CALIBRATION_TEXTS, trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.save_pretrained(str(out))


def build_tiny_model(out: Path, model_type: str = "llama", seed: int = 0) -> Path:
    """Write a tiny fp16 model (config.json, model.safetensors, tokenizer) to ``out``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    params = TINY_DENSE[model_type]
    config = AutoConfig.for_model(model_type, **params)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(torch.float16)  # type: ignore[no-untyped-call]
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    build_tokenizer(out)
    return out


def _model_type(src: Path) -> str:
    # Gemma2 on transformers 5: AutoAWQ's calibration in chunks hands each chunk the whole batch's attention mask
    # (a size mismatch), so its calibration runs unchunked.
    with open(src / "config.json", encoding="utf-8") as fh:
        return str(json.load(fh)["model_type"])


def quantize(src: Path, out: Path, *, version: str, group_size: int, zero_point: bool = True) -> Path:
    """Quantize ``src`` with AutoAWQ (CPU) and save it to ``out`` with its tokenizer."""
    from transformers import AutoTokenizer

    from awq_autoselect._awq import import_awq

    auto_awq = import_awq().AutoAWQForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(src))
    model = auto_awq.from_pretrained(str(src), device_map={"": "cpu"})
    model.quantize(
        tokenizer,
        quant_config={"zero_point": zero_point, "q_group_size": group_size, "w_bit": 4, "version": version.upper()},
        calib_data=CALIBRATION_TEXTS,
        max_calib_samples=32,
        max_calib_seq_len=64,
        n_parallel_calib_samples=None if _model_type(src) == "gemma2" else 8,
        apply_clip=False,
    )
    model.save_quantized(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def read_quant_config(path: Path) -> dict[str, object]:
    with open(path / "config.json", encoding="utf-8") as fh:
        config = json.load(fh)
    qc = config["quantization_config"]
    assert isinstance(qc, dict)
    return qc


def hash_tree(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (relative path -> digest), plus each file's mtime_ns."""
    result: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            result[str(path.relative_to(root))] = f"{digest}:{path.stat().st_mtime_ns}"
    return result


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``awq-autoselect ARGV`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def random_weight(
    out_features: int,
    in_features: int,
    group_size: int,
    *,
    seed: int = 0,
    bias: bool = False,
    symmetric: bool = False,
    device: str = "cpu",
) -> formats.UnpackedWeight:
    """Random 4-bit weights, zero points and fp16 scales of AWQ's typical magnitude (1e-3 .. 3e-2)."""
    gen = torch.Generator().manual_seed(seed)
    groups = in_features // group_size
    q = torch.randint(0, 16, (out_features, in_features), generator=gen, dtype=torch.uint8)
    z = None if symmetric else torch.randint(0, 16, (out_features, groups), generator=gen, dtype=torch.uint8)
    s = (torch.rand((out_features, groups), generator=gen) * 0.03 + 1e-3).half()
    b = (torch.randn(out_features, generator=gen) * 0.1).half() if bias else None
    return formats.UnpackedWeight(
        q.to(device), None if z is None else z.to(device), s.to(device), group_size, None if b is None else b.to(device)
    )


def output_bound(
    x: torch.Tensor, weight: formats.UnpackedWeight, reference: torch.Tensor, *, dense_on_cuda: bool = False
) -> torch.Tensor:
    """Bound on |forward(x) - x @ W.T| (docs/torch-int4.md): weight error, fp32 accumulation, bf16 output."""
    xf = x.float()
    w_bound = weight_error_bound(weight.intweight, weight.zeros, weight.scales, weight.group_size)
    w_abs = formats.dequantize(weight).abs() + w_bound
    k = weight.in_features
    accumulation = 2 * k * 2.0**-24 + (U if dense_on_cuda else 0.0)  # cuBLAS may reduce split-K partials in bf16
    magnitude = xf.abs() @ w_abs.t()
    return xf.abs() @ w_bound.t() + accumulation * magnitude + U * reference.abs() * (1 + U) + 1e-6


def identity_rows(columns: torch.Tensor, in_features: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Inputs that read columns of the weight: row i is the unit vector e_{columns[i]}."""
    x = torch.zeros((columns.numel(), in_features), dtype=dtype, device=columns.device)
    x[torch.arange(columns.numel(), device=columns.device), columns] = 1
    return x


def _unquantized_model(checkpoint: Path) -> tuple[PreTrainedModel, int]:
    """The checkpoint's transformers model built from its config without the quantization config; its group size."""
    from transformers import AutoConfig, AutoModelForCausalLM

    quant = read_quant_config(checkpoint)
    group_size = int(quant.get("group_size", quant.get("q_group_size", 128)))  # type: ignore[call-overload]
    config = AutoConfig.from_pretrained(str(checkpoint))
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model: PreTrainedModel = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    return model, group_size


def build_gemm_model(checkpoint: Path, *, device: str = "cpu", dtype: torch.dtype = torch.float16) -> PreTrainedModel:
    """The checkpoint's transformers model with AutoAWQ ``WQLinear_GEMM`` layers holding its packed tensors.

    What AutoAWQ's ``from_quantized`` builds, without its device dispatch (which insists on IPEX on a CPU).
    """
    from awq.modules.linear.gemm import WQLinear_GEMM
    from safetensors.torch import load_file

    model, group_size = _unquantized_model(checkpoint)
    rotary = {name: buf for name, buf in model.named_buffers() if name.endswith("inv_freq")}
    cast(torch.nn.Module, model).to(dtype)
    for name, buf in rotary.items():  # as from_pretrained leaves them: float32
        parent_name, _, attr = name.rpartition(".")
        model.get_submodule(parent_name)._buffers[attr] = buf
    state = load_file(str(checkpoint / "model.safetensors"))
    for key in [k for k in state if k.endswith(".qweight")]:
        prefix = key.removesuffix(".qweight")
        parent_name, _, child_name = prefix.rpartition(".")
        parent = model.get_submodule(parent_name)
        linear = getattr(parent, child_name)
        assert isinstance(linear, torch.nn.Linear)
        layer = WQLinear_GEMM(
            4, group_size, linear.in_features, linear.out_features, f"{prefix}.bias" in state, torch.device("cpu")
        )
        setattr(parent, child_name, layer)
    model.load_state_dict(state, strict=True)
    cast(torch.nn.Module, model).to(device).eval()
    return model


def awq_dequantized_model(checkpoint: Path) -> PreTrainedModel:
    """A float32 transformers model of a GEMM checkpoint, each quantized weight dequantized by AutoAWQ's own
    ``dequantize_gemm`` (awq/utils/packing_utils.py): an independent reference for awq_autoselect's loads."""
    from awq.utils.packing_utils import dequantize_gemm
    from safetensors.torch import load_file

    model, group_size = _unquantized_model(checkpoint)
    cast(torch.nn.Module, model).to(torch.float32)
    stored = load_file(str(checkpoint / "model.safetensors"))
    state: dict[str, torch.Tensor] = {}
    for name, tensor in stored.items():
        prefix, _, suffix = name.rpartition(".")
        if suffix == "qweight":
            weight = dequantize_gemm(tensor, stored[f"{prefix}.qzeros"], stored[f"{prefix}.scales"], 4, group_size)
            state[f"{prefix}.weight"] = weight.t().float()
        elif suffix not in ("qzeros", "scales"):
            state[name] = tensor.float()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert all("inv_freq" in m or m == "lm_head.weight" for m in missing), missing
    if "lm_head.weight" in missing:
        model.tie_weights()
    cast(torch.nn.Module, model).eval()
    return model


def hf_greedy(model: torch.nn.Module, ids: torch.Tensor, new: int) -> torch.Tensor:
    """transformers' own greedy generation of exactly ``new`` tokens."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        out: torch.Tensor = cast(Any, model).generate(
            ids, max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0
        )
    return out


def ops_called(fn: object) -> set[str]:
    """Names of the aten ops a call runs, as the profiler records them."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()  # type: ignore[operator]
    return {event.key for event in prof.key_averages()}


class UnknownStaticCache:
    """A StaticCache whose constructor no released transformers has (what a future release might bring)."""

    def __init__(self, config: object, *, capacity: int) -> None:
        raise AssertionError("the decoder must not call a constructor it does not know")


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def zero_one_zero_point(checkpoint: Path) -> str:
    """Set the first zero point of the checkpoint's first quantized layer (by module path) to 0, in place, as its
    layout stores it (a GEMM or GEMV nibble, GEMV_fast's ``-scale * zero`` term). Returns the layer's path. For a
    copy the test made (see :func:`copy_checkpoint`)."""
    from safetensors.torch import load_file, save_file

    files = sorted(checkpoint.glob("*.safetensors"))
    tensors = {file: load_file(str(file)) for file in files}
    prefix = min(name[: -len(".qzeros")] for names in tensors.values() for name in names if name.endswith(".qzeros"))
    for file, held in tensors.items():
        if f"{prefix}.qzeros" in held:
            qzeros = held[f"{prefix}.qzeros"]
            if qzeros.dtype == torch.float16:
                qzeros[0, 0] = 0.0
            else:
                qzeros[0, 0] = qzeros[0, 0] & ~0xF  # the first nibble: group 0 (GEMV) or output 0's order slot (GEMM)
            save_file(held, str(file), metadata={"format": "pt"})
    return prefix


def edit_config(path: Path, **changes: object) -> None:
    config = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        if key.startswith("qc_"):
            config["quantization_config"][key[3:]] = value
        else:
            config[key] = value
    (path / "config.json").write_text(json.dumps(config))


class CollectingStreamer:
    """A transformers-style streamer that keeps what it is handed: the prompt first, then every token (values
    flattened, and the shape each came in)."""

    def __init__(self) -> None:
        self.values: list[list[int]] = []
        self.shapes: list[tuple[int, ...]] = []
        self.ended = False

    def put(self, value: torch.Tensor) -> None:
        self.values.append(value.flatten().tolist())
        self.shapes.append(tuple(value.shape))

    def end(self) -> None:
        self.ended = True
