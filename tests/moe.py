"""Tiny mixture-of-experts AWQ checkpoints in the layout published for AutoAWQ, and their float32 references.

AutoAWQ cannot quantize a MoE model on transformers 5 (its experts are 3-D parameters there, not linear layers),
so the checkpoints are packed the way AutoAWQ's quantizer packs every layer: its own ``pseudo_quantize_tensor``
(min-max, zero point) and ``WQLinear_GEMM.from_linear``/``WQLinear_GEMV.from_linear``, one expert projection at
a time, written under the per-expert names of the published checkpoints (``block_sparse_moe.experts.E.w1`` for
Mixtral, ``mlp.experts.E.gate_proj`` for Qwen3-MoE and DeepSeek-V2). The reference is the same transformers model
with every quantized weight replaced by its dequantized value, in float32, saved with ``save_pretrained``: loading
it is transformers' own code, independent of awq_autoselect.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from tests.helpers import build_tokenizer

HIDDEN = 256
MOE_CONFIGS: dict[str, dict[str, Any]] = {
    "mixtral": {
        "hidden_size": HIDDEN,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "vocab_size": 512,
        "max_position_embeddings": 512,
        "tie_word_embeddings": False,
    },
    "qwen3_moe": {
        "hidden_size": HIDDEN,
        "intermediate_size": 512,
        "moe_intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "norm_topk_prob": True,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "vocab_size": 512,
        "max_position_embeddings": 512,
        "tie_word_embeddings": False,
    },
    "deepseek_v2": {
        "hidden_size": HIDDEN,
        "intermediate_size": 512,
        "moe_intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "q_lora_rank": None,
        "kv_lora_rank": 128,
        "qk_nope_head_dim": 32,
        "qk_rope_head_dim": 32,
        "v_head_dim": 64,
        "n_routed_experts": 4,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "first_k_dense_replace": 1,
        "moe_layer_freq": 1,
        "topk_method": "greedy",
        "n_group": 1,
        "topk_group": 1,
        "routed_scaling_factor": 1.0,
        "norm_topk_prob": False,
        "vocab_size": 512,
        "max_position_embeddings": 512,
        "tie_word_embeddings": False,
    },
}

#: The checkpoint's per-expert projection names (gate, up, down) and where transformers 4 kept the MoE block.
_EXPERTS = {
    "mixtral": (("w1", "w3", "w2"), "block_sparse_moe"),
    "qwen3_moe": (("gate_proj", "up_proj", "down_proj"), "mlp"),
    "deepseek_v2": (("gate_proj", "up_proj", "down_proj"), "mlp"),
}


def _quantize(weight: torch.Tensor, group_size: int, version: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """AutoAWQ's packing of one [out, in] weight: its tensors, and the dequantized weight (float32)."""
    from awq.modules.linear import WQLinear_GEMM, WQLinear_GEMV
    from awq.quantize.quantizer import AwqQuantizer

    settings = SimpleNamespace(group_size=group_size, zero_point=True, w_bit=4)
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=torch.float16)
    dequantized, scales, zeros = AwqQuantizer.pseudo_quantize_tensor(settings, weight.to(torch.float16))
    linear.weight.data = dequantized
    module = WQLinear_GEMM if version == "gemm" else WQLinear_GEMV
    if version == "gemm":  # as AutoAWQ's quantizer hands them over (awq/quantize/quantizer.py, _apply_quant)
        scales, zeros = scales.t().contiguous(), zeros.t().contiguous()
    packed = module.from_linear(linear, 4, group_size, False, scales, zeros)
    tensors = {name: buffer.contiguous() for name, buffer in packed.named_buffers() if name != "bias"}
    return tensors, dequantized.float()


def build_moe_checkpoint(
    out: Path, model_type: str, *, version: str = "gemm", group_size: int = 64, seed: int = 0
) -> tuple[Path, Path]:
    """Write ``out/awq`` (the AWQ checkpoint, published layout) and ``out/reference``; return both paths."""
    from awq.utils.module import get_named_linears
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, **MOE_CONFIGS[model_type])
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).float()  # type: ignore[no-untyped-call]
    with torch.no_grad():
        for parameter in model.parameters():  # weights large enough that int4 error shows, small enough to be stable
            if parameter.dim() >= 2:
                parameter.normal_(0.0, 0.05)
    names, moe_block = _EXPERTS[model_type]
    tensors: dict[str, torch.Tensor] = {}
    quantized: set[str] = set()
    with torch.no_grad():
        for index, layer in enumerate(model.model.layers):
            prefix = f"model.layers.{index}"
            for name, linear in get_named_linears(layer).items():
                if name.endswith("gate") or "router" in name:
                    continue
                packed, dense = _quantize(linear.weight.data, group_size, version)
                linear.weight.data.copy_(dense)
                quantized.add(f"{prefix}.{name}.weight")
                for suffix, tensor in packed.items():
                    tensors[f"{prefix}.{name}.{suffix}"] = tensor
            experts = getattr(layer.mlp, "experts", None)
            gate_up = getattr(experts, "gate_up_proj", None)
            if gate_up is None:
                continue
            assert experts is not None
            down = experts.down_proj
            half = gate_up.shape[1] // 2
            for expert in range(gate_up.shape[0]):
                where = f"{prefix}.{moe_block}.experts.{expert}"
                pieces = {names[0]: gate_up[expert, :half], names[1]: gate_up[expert, half:], names[2]: down[expert]}
                for name, weight in pieces.items():
                    packed, dense = _quantize(weight.clone(), group_size, version)
                    weight.copy_(dense)
                    for suffix, tensor in packed.items():
                        tensors[f"{where}.{name}.{suffix}"] = tensor
            quantized.update({f"{prefix}.mlp.experts.gate_up_proj", f"{prefix}.mlp.experts.down_proj"})
    for name, tensor in model.state_dict().items():
        if name in quantized:
            continue
        stored = name.replace(".mlp.gate.", f".{moe_block}.gate.") if moe_block != "mlp" else name
        tensors[stored] = tensor.to(torch.float16).contiguous()
    awq, reference = out / "awq", out / "reference"
    awq.mkdir(parents=True)
    save_file(tensors, str(awq / "model.safetensors"), metadata={"format": "pt"})
    data = config.to_dict()
    data["torch_dtype"] = "float16"
    data["quantization_config"] = {
        "quant_method": "awq",
        "bits": 4,
        "group_size": group_size,
        "zero_point": True,
        "version": version,
        "modules_to_not_convert": ["gate"] if model_type == "mixtral" else None,
    }
    (awq / "config.json").write_text(json.dumps(data, indent=2))
    build_tokenizer(awq)
    model.save_pretrained(str(reference), safe_serialization=True)
    return awq, reference
