"""Mixture-of-experts checkpoints in AutoAWQ's per-expert layout, on transformers that fuse experts.

AutoAWQ (and every AWQ MoE checkpoint published for it) quantizes each expert's projections as separate linear
layers: ``model.layers.N.block_sparse_moe.experts.E.w1.qweight`` (Mixtral), ``mlp.experts.E.gate_proj.qweight``
(Qwen3-MoE, DeepSeek-V2/V3). transformers 5 builds these models with all experts of a layer in two 3-D
parameters (``experts.gate_up_proj`` [E, 2I, H] and ``experts.down_proj`` [E, H, I]) and, for Mixtral, renames
``block_sparse_moe`` to ``mlp``; its loader converts dense checkpoints on the fly, which packed int4 tensors cannot
take. AutoAWQ replaces only ``nn.Linear`` modules, so on transformers 5 the experts stay dense and the checkpoint
"lacks" their weights.

:func:`unfuse_experts` gives such a model the per-expert structure back before AutoAWQ swaps in its quantized
layers: each fused experts module becomes a :class:`PerExpertMLPs` (a ``ModuleList`` of :class:`ExpertMLP`, one
per expert, with the checkpoint's projection names), which takes the call transformers' MoE block makes
(``experts(hidden_states, top_k_index, top_k_weights)``) and computes what the fused module computes.
:mod:`awq_autoselect.loading.names` maps the checkpoint's names to the model's (Mixtral's rename). On
transformers 4.x the experts are already per-expert ``nn.Linear`` modules and nothing is changed.

Private module: imported by :mod:`awq_autoselect.loading` inside functions, never by ``import awq_autoselect``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch

from awq_autoselect.errors import UnsupportedCheckpointError

__all__ = ["EXPERT_PROJECTIONS", "ExpertMLP", "PerExpertMLPs", "unfuse_experts"]

#: Per architecture: the checkpoint's names of an expert's gate, up and down projections (AutoAWQ 0.2.9's
#: ``awq/models/<type>.py``).
EXPERT_PROJECTIONS: Mapping[str, tuple[str, str, str]] = MappingProxyType(
    {
        "mixtral": ("w1", "w3", "w2"),
        "qwen3_moe": ("gate_proj", "up_proj", "down_proj"),
        "deepseek_v2": ("gate_proj", "up_proj", "down_proj"),
        "deepseek_v3": ("gate_proj", "up_proj", "down_proj"),
    }
)


class ExpertMLP(torch.nn.Module):
    """One expert: ``down(act(gate(x)) * up(x))``, its projections under the checkpoint's names."""

    def __init__(
        self, names: tuple[str, str, str], hidden: int, intermediate: int, act: Callable[..., torch.Tensor]
    ) -> None:
        super().__init__()
        self.names = names
        gate, up, down = names
        meta = torch.device("meta")  # the model is built without memory; AutoAWQ replaces these, the loader fills
        self.add_module(gate, torch.nn.Linear(hidden, intermediate, bias=False, device=meta))
        self.add_module(up, torch.nn.Linear(hidden, intermediate, bias=False, device=meta))
        self.add_module(down, torch.nn.Linear(intermediate, hidden, bias=False, device=meta))
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up, down = (getattr(self, name) for name in self.names)
        result: torch.Tensor = down(self.act(gate(x)) * up(x))
        return result


class PerExpertMLPs(torch.nn.ModuleList):
    """A layer's experts, one module each, called like transformers' fused experts module.

    ``forward(hidden_states [T, H], top_k_index [T, k], top_k_weights [T, k]) -> [T, H]``: each token's output
    is the sum of its chosen experts' outputs times their routing weights. Eagerly, each expert runs only on the
    tokens routed to it. While a CUDA graph is being captured or the step compiled, where shapes must not depend on
    the routing, every expert runs on every token and unchosen ones get weight 0 (the same sum, more work).
    """

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        out = torch.zeros_like(hidden_states)
        experts = len(self)
        if _static_shapes_required(hidden_states):
            weights = torch.zeros(hidden_states.shape[0], experts + 1, dtype=top_k_weights.dtype, device=out.device)
            weights.scatter_add_(1, top_k_index, top_k_weights)
            for index, expert in enumerate(self):
                out += (expert(hidden_states) * weights[:, index, None]).to(out.dtype)
            return out
        for index in torch.unique(top_k_index).tolist():
            if index >= experts:  # transformers' marker for "no local expert" (expert parallelism)
                continue
            token, slot = torch.where(top_k_index == index)
            contribution = self[index](hidden_states[token]) * top_k_weights[token, slot, None]
            out.index_add_(0, token, contribution.to(out.dtype))
        return out


def _static_shapes_required(x: torch.Tensor) -> bool:
    if torch.compiler.is_compiling():
        return True
    return x.is_cuda and torch.cuda.is_current_stream_capturing()


def _is_fused_experts(module: torch.nn.Module) -> bool:
    gate_up = getattr(module, "gate_up_proj", None)
    down = getattr(module, "down_proj", None)
    return (
        isinstance(gate_up, torch.nn.Parameter)
        and isinstance(down, torch.nn.Parameter)
        and gate_up.dim() == 3
        and down.dim() == 3
    )


def unfuse_experts(model: torch.nn.Module, model_type: str) -> int:
    """Replace every fused experts module of ``model`` by per-expert modules; returns how many were replaced.

    Raises:
        UnsupportedCheckpointError: the model fuses its experts in a way this module does not know (an
            architecture missing from :data:`EXPERT_PROJECTIONS`, or fused experts without an activation).
    """
    replaced = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if not _is_fused_experts(child):
                continue
            names = EXPERT_PROJECTIONS.get(model_type)
            act = getattr(child, "act_fn", None)
            if names is None or not callable(act):
                import transformers

                raise UnsupportedCheckpointError(
                    f"model_type {model_type!r}: transformers {transformers.__version__} stores this model's experts "
                    "fused in 3-D parameters, which AutoAWQ's per-expert int4 layers cannot fill, and awq_autoselect "
                    "knows no per-expert layout for it: install transformers>=4.51,<4.57, whose model has one "
                    "module per expert"
                )
            gate_up = child.gate_up_proj
            assert isinstance(gate_up, torch.nn.Parameter)
            experts, double_intermediate, hidden = gate_up.shape
            assert callable(act)
            mlps = PerExpertMLPs(ExpertMLP(names, hidden, double_intermediate // 2, act) for _ in range(experts))
            setattr(parent, child_name, mlps)
            replaced += 1
    return replaced
