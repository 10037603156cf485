"""Tiny real models, quantized by AutoAWQ at test time.

Nothing here is a fake: each checkpoint is a Hugging Face model built from a config with a seeded random
init, a byte-level BPE tokenizer trained offline, and AutoAWQ 0.2.9's own ``quantize()`` and
``save_quantized()``. Quantizing a 2-layer model takes under a second on the CI machine (``apply_clip=False``:
clipping search only changes the weights' values, not the code paths under test).
"""

from __future__ import annotations

import json
from pathlib import Path

CALIBRATION_TEXTS = [
    f"Sample {i}: the quick brown fox jumps over the lazy dog, then the dog sleeps while the fox "
    f"counts {i * 7 % 13} stars and writes them down in a small notebook."
    for i in range(48)
]

# Llama at a size where every projection is a multiple of 256 (so Marlin and GEMV_fast shapes work too),
# with 2 layers. in_features are 256 (q/k/v/o, gate/up) and 512 (down).
TINY_LLAMA = {
    "vocab_size": 512,
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}

TINY_QWEN2 = {**TINY_LLAMA, "num_key_value_heads": 2}


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

    params = TINY_QWEN2 if model_type == "qwen2" else TINY_LLAMA
    config = AutoConfig.for_model(model_type, **params)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(torch.float16)  # type: ignore[no-untyped-call]
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    build_tokenizer(out)
    return out


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
        n_parallel_calib_samples=8,
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
