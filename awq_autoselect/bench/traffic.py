"""What one decode step must read from memory, and the card's peak bandwidth: the denominators of the
bandwidth columns (docs/benchmarks.md explains the model)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from awq_autoselect.checkpoint import CheckpointInfo

__all__ = ["KNOWN_BANDWIDTH_GBPS", "datasheet_bandwidth_gbps", "kv_bytes_per_token", "weight_bytes_per_token"]

# Peak DRAM bandwidth in GB/s (10^9 B/s) from the vendors' datasheets, matched against the lower-cased
# ``torch.cuda.get_device_name()``. First match wins, so specific patterns come before general ones
# ("gh200" before "h200", "a100 ... 80gb ... pcie" before "a100 ... 80gb" before "a100").
KNOWN_BANDWIDTH_GBPS: tuple[tuple[str, float], ...] = (
    (r"\bgh200\b.*\b144g", 4900.0),  # GH200 with 144 GB HBM3e
    (r"\bgh200\b", 4000.0),  # GH200 with 96 GB HBM3
    (r"\bh200\b", 4800.0),  # H200 SXM and NVL
    (r"\bh100\b.*\bnvl\b", 3900.0),
    (r"\bh100\b.*\bpcie\b", 2000.0),
    (r"\bh100\b", 3350.0),  # H100 SXM5 ("NVIDIA H100 80GB HBM3")
    (r"\bb200\b", 8000.0),
    (r"\ba100\b.*80\s?gb.*\bpcie\b|\ba100\b.*\bpcie\b.*80\s?gb", 1935.0),
    (r"\ba100\b.*80\s?gb", 2039.0),
    (r"\ba100\b", 1555.0),  # A100 40 GB, SXM4 and PCIe
    (r"\ba30\b", 933.0),
    (r"\ba40\b", 696.0),
    (r"\ba10g?\b", 600.0),
    (r"\bl40s?\b", 864.0),
    (r"\bl4\b", 300.0),
    (r"\bt4\b", 320.0),
    (r"\bv100\b", 900.0),
    (r"\brtx 5090\b", 1792.0),
    (r"\brtx 4090\b", 1008.0),
    (r"\brtx 4080\b", 717.0),
    (r"\brtx 3090 ti\b", 1008.0),
    (r"\brtx 3090\b", 936.0),
    (r"\brtx 6000 ada\b", 960.0),
    (r"\brtx a6000\b", 768.0),
)

# Bytes per element of the KV cache assumed for the KV-read estimate (fp16/bf16 caches).
_KV_ITEMSIZE = 2
# Suffixes of input-embedding tables across the architectures AutoAWQ supports.
_EMBEDDING_SUFFIXES = (
    "embed_tokens.weight",
    "wte.weight",
    "word_embeddings.weight",
    "embed_in.weight",
    "tok_embeddings.weight",
)
_OUTPUT_SUFFIXES = ("lm_head.weight", "embed_out.weight", "output.weight")
_QUANT_SUFFIXES = ("qweight", "qzeros", "scales", "bias")


def _is_quantized_tensor(name: str, prefixes: frozenset[str]) -> bool:
    prefix, _, suffix = name.rpartition(".")
    return suffix in _QUANT_SUFFIXES and prefix in prefixes


def weight_bytes_per_token(info: CheckpointInfo, batch_size: int, dense_itemsize: int, *, dense: bool) -> int:
    """Bytes of weights one decode step reads at least once, whatever the kernel.

    Quantized layers count as stored in the checkpoint (packed int4 + zeros + scales (+ bias)), the same for
    every version; with ``dense`` (the fp16 baseline) as ``in * out`` dense weights of ``dense_itemsize``
    instead. Every other tensor (norms, lm_head, biases) counts at ``dense_itemsize`` per element, except the
    input embedding table, of which only the ``batch_size`` gathered rows are read; a model without a separate
    output projection (tied embeddings) reads the whole table as its lm_head, so then it counts in full.
    """
    prefixes = frozenset(layer.prefix for layer in info.layers)
    if dense:
        total = sum(
            (layer.in_features * layer.out_features + (layer.out_features if layer.has_bias else 0)) * dense_itemsize
            for layer in info.layers
        )
    else:
        total = info.quantized_bytes
    tied = not any(name.endswith(_OUTPUT_SUFFIXES) for name in info.tensors)
    for name, meta in info.tensors.items():
        if _is_quantized_tensor(name, prefixes):
            continue
        elements = math.prod(meta.shape)
        if name.endswith(_EMBEDDING_SUFFIXES) and not tied and len(meta.shape) == 2:
            total += batch_size * meta.shape[1] * dense_itemsize
        else:
            total += elements * dense_itemsize
    return total


def kv_bytes_per_token(
    config: Mapping[str, object], prompt_tokens: int, new_tokens: int, batch_size: int
) -> int | None:
    """Mean bytes of KV cache one decode step reads (a 2-byte cache of every past position), or None."""
    text = config.get("text_config")
    cfg: Mapping[str, object] = text if isinstance(text, dict) else config
    layers, heads, hidden = cfg.get("num_hidden_layers"), cfg.get("num_attention_heads"), cfg.get("hidden_size")
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim")
    if not all(isinstance(v, int) and v > 0 for v in (layers, heads, hidden, kv_heads)):
        return None
    assert isinstance(layers, int)
    assert isinstance(heads, int)
    assert isinstance(hidden, int)
    assert isinstance(kv_heads, int)
    if not (isinstance(head_dim, int) and head_dim > 0):
        head_dim = hidden // heads
    steps = new_tokens - 1
    # decode step i (0-based) attends over prompt + 1 + i positions (the prompt, earlier tokens, itself)
    mean_context = prompt_tokens + 1 + (steps - 1) / 2
    per_position = 2 * layers * kv_heads * head_dim * _KV_ITEMSIZE  # K and V
    return round(per_position * mean_context * batch_size)


def datasheet_bandwidth_gbps(gpu_name: str) -> tuple[float, str] | None:
    """The datasheet peak memory bandwidth (GB/s) of a GPU by its name, and the table pattern that matched.

    >>> datasheet_bandwidth_gbps("NVIDIA H100 80GB HBM3")
    (3350.0, '\\\\bh100\\\\b')
    """
    lowered = gpu_name.lower()
    for pattern, gbps in KNOWN_BANDWIDTH_GBPS:
        if re.search(pattern, lowered):
            return gbps, pattern
    return None
