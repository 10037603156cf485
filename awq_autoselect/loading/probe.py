"""The numeric probe run after a load: a prefill-sized and a one-token forward, with a few quantized layers
compared against weights dequantized in float32 straight from the checkpoint."""

from __future__ import annotations

import math
from collections.abc import Callable, Container
from typing import TYPE_CHECKING

from awq_autoselect._awq import hf_model_of
from awq_autoselect.checkpoint import CheckpointInfo, QuantizedLayer
from awq_autoselect.conversion import QUANTIZED_SUFFIXES

from .names import model_name
from .records import LayerCheck, ProbeResult

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_PROBE_TOLERANCE", "ProbeMismatchError", "run_probe"]

# Relative Frobenius error ||out - ref|| / ||ref|| allowed per probed layer. fp16 kernels land near 1e-3 and
# bf16 torch_int4 near 5e-3 (docs/torch-int4.md); garbage (uninitialised output, wrong layout) is O(1) or NaN.
DEFAULT_PROBE_TOLERANCE = 0.02
_PROBE_PROMPT_TOKENS = 16
_PROBE_LAYERS = 3


class ProbeMismatchError(RuntimeError):
    """The model loaded but a probed layer's output does not match its reference."""


def _reference_weight(
    info: CheckpointInfo, layer: QuantizedLayer, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    from safetensors import safe_open

    from awq_autoselect import formats

    tensors: dict[str, torch.Tensor] = {}
    for suffix in QUANTIZED_SUFFIXES:
        meta = info.tensors.get(f"{layer.prefix}.{suffix}")
        if meta is not None:
            with safe_open(str(meta.file), framework="pt", device="cpu") as handle:
                tensors[suffix] = handle.get_tensor(meta.name)
    unpacked = formats.unpack(
        layer.layout,
        tensors,
        in_features=layer.in_features,
        out_features=layer.out_features,
        group_size=info.quant.group_size,
    )
    weight = formats.dequantize(unpacked).to(device)
    bias = tensors.get("bias")
    return weight, (bias.to(device=device, dtype=weight.dtype) if bias is not None else None)


def _probe_layers(info: CheckpointInfo, modules: Container[str]) -> list[tuple[str, QuantizedLayer]]:
    """The layers to probe, each with its module's name in the model: the first, the last and the widest."""
    named = [(model_name(layer.prefix, info.model_type, modules), layer) for layer in info.layers]
    present = [(name, layer) for name, layer in named if name in modules]
    if not present:
        return []
    picks = {present[0][1].prefix: present[0], present[-1][1].prefix: present[-1]}
    widest = max(present, key=lambda pair: pair[1].in_features)
    picks.setdefault(widest[1].prefix, widest)
    return list(picks.values())[:_PROBE_LAYERS]


def run_probe(
    awq_model: torch.nn.Module, info: CheckpointInfo, device: torch.device, tolerance: float, seed: int = 0
) -> ProbeResult:
    """Run a prefill-sized and a one-token forward; compare probed layers with the float32 reference."""
    import torch

    hf_model = hf_model_of(awq_model)
    assert isinstance(hf_model, torch.nn.Module)
    modules = dict(hf_model.named_modules())
    probed = _probe_layers(info, modules)
    layers = [layer for _, layer in probed]
    captured: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {layer.prefix: [] for layer in layers}

    def make_hook(name: str) -> Callable[[torch.nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            captured[name].append((inputs[0].detach(), output.detach()))

        return hook

    handles = [modules[name].register_forward_hook(make_hook(layer.prefix)) for name, layer in probed]
    vocab = int(getattr(hf_model.config, "vocab_size", 0) or 0) or 32
    generator = torch.Generator(device="cpu").manual_seed(seed)
    ids = torch.randint(0, vocab, (1, _PROBE_PROMPT_TOKENS), generator=generator).to(device)
    logits_finite = True
    try:
        with torch.no_grad():
            # A prompt-sized forward and a one-token forward: GEMV-class kernels switch code paths by rows.
            for batch in (ids, ids[:, :1]):
                out = hf_model(input_ids=batch, use_cache=False)
                logits = out.logits if hasattr(out, "logits") else out[0]
                logits_finite = logits_finite and bool(torch.isfinite(logits.float()).all())
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    finally:
        for handle in handles:
            handle.remove()
    checks: list[LayerCheck] = []
    for layer in layers:
        weight, bias = _reference_weight(info, layer, device)
        for x, y in captured[layer.prefix]:
            x2 = x.reshape(-1, layer.in_features).float()
            ref = x2 @ weight.t()
            if bias is not None:
                ref = ref + bias
            got = y.reshape(-1, layer.out_features).float()
            finite = bool(torch.isfinite(got).all())
            diff = got - ref
            denom = float(torch.linalg.vector_norm(ref)) or 1.0
            rel = float(torch.linalg.vector_norm(diff)) / denom if finite else math.inf
            max_abs = float(diff.abs().max()) if finite else math.inf
            checks.append(LayerCheck(layer.prefix, x2.shape[0], rel, max_abs, finite))
    worst = max(checks, key=lambda c: c.rel_error, default=None)
    ok = logits_finite and all(c.finite and c.rel_error <= tolerance for c in checks)
    if not checks:
        message = "no quantized layer could be probed by name (fused layers?): checked logits are finite only"
    elif ok and worst is not None:
        message = (
            f"{len(checks)} layer outputs within {tolerance:g} of the float32 dequantized reference "
            f"(worst {worst.rel_error:.2e}, {worst.name}, {worst.rows} rows)"
        )
    elif worst is not None and not worst.finite:
        message = f"{worst.name} returned non-finite values with {worst.rows} rows: the kernel is broken here"
    elif worst is not None and worst.rel_error > tolerance:
        message = (
            f"{worst.name} differs from the dequantized reference by {worst.rel_error:.3g} (relative) with "
            f"{worst.rows} rows, tolerance {tolerance:g}: the kernel returns wrong numbers here"
        )
    else:
        message = "the model's logits are not finite"
    return ProbeResult(ok=ok, tolerance=tolerance, checks=tuple(checks), logits_finite=logits_finite, message=message)
