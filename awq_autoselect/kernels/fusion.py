"""Sibling projections that read the same input, fused into one int4 matmul: q/k/v and gate/up.

A decoder layer calls ``q_proj(h)``, ``k_proj(h)`` and ``v_proj(h)`` on the same tensor, and ``gate_proj(x)`` and
``up_proj(x)`` likewise. With :class:`~.torch_int4.TorchInt4Linear` each call is one tinygemm launch that reads
its weights; fused, one launch reads all three (or two) weight matrices, whose shape tinygemm runs at a higher
fraction of the memory bandwidth (docs/torch-int4.md). :class:`~.triton_int4.TritonInt4Linear` layers fuse the
same way. The fusion is exact: both layouts are contiguous per block of output rows (8 for tinygemm's tiles, 4 for
the gemv layout), so the fused module's state is the members' one after another, and every output element is
computed from the same packed values, scales and zeros as before.

How the model keeps calling its projections: each member (``q_proj`` ...) becomes a :class:`FusedProjection`
that, called with a tensor, runs the fused matmul once and hands every member its slice of the output. A member
called with another tensor than the others (a model that does not feed them the same input) runs the fused matmul
for that tensor itself: never a wrong result, only no saving.
"""

from __future__ import annotations

import torch

from .torch_int4 import TorchInt4Linear
from .triton_int4 import TritonInt4Linear

__all__ = ["FUSED_GROUPS", "FusedProjection", "fuse_projections"]

#: Names of sibling projections that read one input, per architecture family (Llama, Mistral, Qwen2/3,
#: Gemma/Gemma2, Mixtral experts' w1/w3).
FUSED_GROUPS: tuple[tuple[str, ...], ...] = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("w1", "w3"))


class _Shared:
    """The fused matmul of one group, and its last output while members are still collecting their slices."""

    def __init__(self, fused: TorchInt4Linear | TritonInt4Linear, members: int) -> None:
        self.fused = fused
        self.members = members
        self.input: torch.Tensor | None = None
        self.output: torch.Tensor | None = None
        self.pending = 0

    def slice_for(self, x: torch.Tensor, start: int, end: int) -> torch.Tensor:
        if self.input is not x or self.pending == 0:
            self.output = self.fused(x)
            self.input = x
            self.pending = self.members
        output = self.output
        assert output is not None
        self.pending -= 1
        if self.pending == 0:  # every member has its slice: drop the references
            self.input = None
            self.output = None
        return output[..., start:end]


class FusedProjection(torch.nn.Module):
    """One member of a fused group: its slice ``[start, end)`` of the fused output, as its own module."""

    def __init__(self, shared: _Shared, start: int, end: int) -> None:
        super().__init__()
        self.fused = shared.fused  # registered in every member: one module, shared (a state dict lists it once)
        self._shared = shared
        self.start = start
        self.end = end
        self.in_features = shared.fused.in_features
        self.out_features = end - start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._shared.slice_for(x, self.start, self.end)

    def extra_repr(self) -> str:
        return f"outputs [{self.start}, {self.end}) of a fused {self.fused.out_features}-output projection"


def _fusable_triton(members: list[TritonInt4Linear]) -> bool:
    first = members[0]
    return all(
        m.in_features == first.in_features
        and m.group_size == first.group_size
        and (m.bias is None) == (first.bias is None)
        and m.qweight.device == first.qweight.device
        and m.dtype == first.dtype
        and m.qweight.shape[2] == first.qweight.shape[2]
        for m in members
    )


@torch.no_grad()
def _fuse_triton(members: list[TritonInt4Linear]) -> TritonInt4Linear:
    first = members[0]
    fused = TritonInt4Linear(
        first.in_features,
        sum(m.out_features for m in members),
        first.group_size,
        bias=first.bias is not None,
        device=first.qweight.device,
        dtype=first.dtype,
        gemv_max_rows=first.gemv_max_rows,
    )
    fused.qweight.copy_(torch.cat([m.qweight for m in members], dim=0))  # [N/4, ...]: blocks of 4 outputs
    fused.scale_zero.copy_(torch.cat([m.scale_zero for m in members], dim=0))
    if fused.bias is not None:
        fused.bias.copy_(torch.cat([m.bias for m in members if m.bias is not None]))
    fused.config = first.config
    return fused


def _fusable(members: list[TorchInt4Linear]) -> bool:
    first = members[0]
    return all(
        m.in_features == first.in_features
        and m.group_size == first.group_size
        and (m.bias is None) == (first.bias is None)
        and m.qtiles.device == first.qtiles.device
        and m.scales_and_zeros.dtype == first.scales_and_zeros.dtype
        and m.inner_k_tiles == first.inner_k_tiles
        for m in members
    )


@torch.no_grad()
def _fuse(members: list[TorchInt4Linear]) -> TorchInt4Linear:
    first = members[0]
    fused = TorchInt4Linear(
        first.in_features,
        sum(m.out_features for m in members),
        first.group_size,
        bias=first.bias is not None,
        device=first.qtiles.device,
        dtype=first.scales_and_zeros.dtype,
        dense_threshold=first.dense_threshold,
        cache_dense=first.cache_dense,
    )
    fused.qtiles.copy_(torch.cat([m.qtiles for m in members], dim=0))  # [N/8, ...]: rows of 8 outputs
    fused.scales_and_zeros.copy_(torch.cat([m.scales_and_zeros for m in members], dim=1))  # [G, N, 2]
    if fused.bias is not None:
        fused.bias.copy_(torch.cat([m.bias for m in members if m.bias is not None]))
    fused._invalidate()
    return fused


def fuse_projections(model: torch.nn.Module) -> int:
    """Fuse every group of :data:`FUSED_GROUPS` whose members are compatible ``TorchInt4Linear`` layers (or
    compatible ``TritonInt4Linear`` layers).

    Returns:
        The number of groups fused (2 per Llama decoder layer).
    """
    count = 0
    for parent in list(model.modules()):
        for names in FUSED_GROUPS:
            members = [getattr(parent, name, None) for name in names]
            fused: TorchInt4Linear | TritonInt4Linear
            if all(isinstance(m, TorchInt4Linear) for m in members):
                tiled = [m for m in members if isinstance(m, TorchInt4Linear)]
                if not _fusable(tiled):
                    continue
                fused, widths = _fuse(tiled), [m.out_features for m in tiled]
            elif all(isinstance(m, TritonInt4Linear) for m in members):
                blocked = [m for m in members if isinstance(m, TritonInt4Linear)]
                if not _fusable_triton(blocked):
                    continue
                fused, widths = _fuse_triton(blocked), [m.out_features for m in blocked]
            else:
                continue
            shared = _Shared(fused, len(widths))
            start = 0
            for name, width in zip(names, widths, strict=True):
                setattr(parent, name, FusedProjection(shared, start, start + width))
                start += width
            count += 1
    return count
