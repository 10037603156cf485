"""Whether a workload can run at all: the model's context, and the device's memory, checked before any trial.

A workload the model cannot hold (``Workload(batch_size=10**9)``) used to reach the trials, which then ran out of
memory in every kernel's child process. :func:`check_workload` refuses it first, with the numbers, as an
:class:`~awq_autoselect.errors.InvalidArgumentError`. The estimate is a lower bound (the checkpoint's weights plus
the KV cache of the whole workload at 2 bytes an element; activations not counted), so a workload it refuses cannot
fit, and one it passes may still run out of memory later.

Imports nothing heavy: a GPU's memory comes from detection (NVML; no CUDA context), the host's from the kernel.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from .checkpoint import CheckpointInfo
from .errors import InvalidArgumentError
from .workload import Workload

__all__ = ["available_memory", "check_workload", "kv_cache_bytes"]

logger = logging.getLogger(__name__)

_GIB = 1024**3
_KV_ITEMSIZE = 2  # fp16/bf16 caches: the smallest a loaded model uses (a lower bound on a float32 CPU model's)


def _text_config(config: Mapping[str, object]) -> Mapping[str, object]:
    inner = config.get("text_config")
    return inner if isinstance(inner, Mapping) else config


def _int(config: Mapping[str, object], *names: str) -> int | None:
    for name in names:
        value = config.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def kv_cache_bytes(info: CheckpointInfo, batch_size: int, tokens: int) -> int | None:
    """A lower bound on the KV cache of ``batch_size`` sequences of ``tokens`` tokens, or ``None`` when the config
    does not say enough (layers, heads)."""
    config = _text_config(info.config)
    layers = _int(config, "num_hidden_layers", "n_layer", "num_layers")
    if layers is None:
        return None
    lora, rope = _int(config, "kv_lora_rank"), _int(config, "qk_rope_head_dim")
    if lora is not None:  # multi-head latent attention: at least the compressed latent and the rotary key per token
        per_token_layer = lora + (rope or 0)
    else:
        heads = _int(config, "num_attention_heads", "n_head")
        hidden = _int(config, "hidden_size", "n_embd")
        kv_heads = _int(config, "num_key_value_heads") or heads
        head_dim = _int(config, "head_dim") or (hidden // heads if hidden and heads else None)
        if kv_heads is None or head_dim is None:
            return None
        per_token_layer = 2 * kv_heads * head_dim
    window = _int(config, "sliding_window")
    held = min(tokens, window) if window is not None else tokens  # sliding layers keep at most the window
    return layers * per_token_layer * _KV_ITEMSIZE * batch_size * held


def _host_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def available_memory(device: str) -> tuple[int, str] | None:
    """Bytes a workload on ``device`` (``"cpu"``, ``"cuda:N"``) can use at most, and where the number comes from:
    the host's available RAM, or the GPU's total memory (NVML). ``None`` when unknown."""
    kind, _, index_text = device.partition(":")
    if kind == "cpu":
        free = _host_available()
        return None if free is None else (free, "available RAM")
    if kind == "cuda":
        from .hardware import detect_compute_capability

        gpus = detect_compute_capability().gpus
        index = int(index_text) if index_text.isdigit() else 0
        if index < len(gpus) and gpus[index].total_memory:
            gpu = gpus[index]
            return int(gpu.total_memory or 0), f"the total memory of cuda:{index} ({gpu.name})"
    return None


def check_workload(info: CheckpointInfo, work: Workload, device: str) -> None:
    """Refuse a workload the model cannot hold on ``device``: longer than its context, or a KV cache that with the
    weights needs more memory than the device has.

    Raises:
        InvalidArgumentError: the workload cannot fit; the message names the numbers and what to change.
    """
    tokens = work.prompt_tokens + work.new_tokens
    context = info.context_length  # the one rule (checkpoint.context_length): RoPE scalings included
    if context is not None and tokens > context:
        raise InvalidArgumentError(
            f"workload prompt_tokens + new_tokens = {work.prompt_tokens} + {work.new_tokens} = {tokens} tokens per "
            f"sequence, beyond {info.path.name}'s context of {context} tokens (max_position_embeddings in its "
            "config.json): shorten the prompt or the output"
        )
    kv = kv_cache_bytes(info, work.batch_size, tokens)
    memory = available_memory(device)
    if kv is None or memory is None:
        logger.debug("workload memory not checked for %s on %s (kv=%s, memory=%s)", info.path, device, kv, memory)
        return
    weights = info.total_bytes
    limit, where = memory
    if weights + kv > limit:
        raise InvalidArgumentError(
            f"workload batch_size={work.batch_size} x {tokens} tokens needs at least {kv / _GIB:.3g} GiB of KV cache "
            f"for {info.path.name} (plus {weights / _GIB:.3g} GiB of weights), beyond {limit / _GIB:.3g} GiB, "
            f"{where} on {device}: lower batch_size, prompt_tokens or new_tokens"
        )
