"""WQLinear_GEMM subclasses whose backend is fixed instead of chosen by module-level globals.

AutoAWQ's ``WQLinear_GEMM`` picks awq_ext, then Triton, then a naive torch path from globals set when
``awq.modules.linear.gemm`` is imported. That makes two things impossible: running the naive path on a CPU
where triton happens to be installed (the Triton branch is taken and crashes on CPU tensors), and running the
Triton kernel where awq_ext is present. These subclasses keep the same buffers (so the same state dict and the
same GEMM layout) and only replace ``forward``. They are inference-only.

Private module: imported by :mod:`awq_autoselect.loading` inside functions, never by ``import awq_autoselect``.
"""

from __future__ import annotations

import torch

from awq_autoselect._awq import import_awq
from awq_autoselect.formats.geometry import AWQ_REVERSE_ORDER

import_awq()

from awq.modules.linear.gemm import WQLinear_GEMM  # noqa: E402 - after import_awq() on purpose

__all__ = ["TorchGEMMLinear", "TritonGEMMLinear", "dequantize_gemm", "swap_gemm_backend"]

# AutoAWQ's own switch from its GEMM kernel to dequantize + matmul (AWQ:awq/modules/linear/gemm.py:54-76).
DENSE_ROWS_THRESHOLD = 1024


_ORDERS: dict[tuple[torch.device, int], torch.Tensor] = {}


def _reverse_order(columns: int, device: torch.device) -> torch.Tensor:
    """The column permutation that undoes AWQ's packing order, cached per device and width: built once, outside
    any CUDA-graph capture (AutoAWQ's own builds it from a Python list each call, a host-to-device copy)."""
    key = (device, columns)
    order = _ORDERS.get(key)
    if order is None:
        reverse = torch.tensor(AWQ_REVERSE_ORDER, device=device)
        order = torch.arange(columns, dtype=torch.int32, device=device).view(-1, 8)[:, reverse].reshape(-1)
        _ORDERS[key] = order
    return order


def dequantize_gemm(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(q - z) * s`` of GEMM-layout tensors, ``[in_features, out_features]`` in the scales' dtype.

    The same operations, in the same order, as AutoAWQ 0.2.9's ``dequantize_gemm`` (so the same bits), without
    its per-call host-to-device copy: capturable in a CUDA graph.
    """
    shifts = torch.arange(0, 32, 4, device=qweight.device)
    iweight = torch.bitwise_right_shift(qweight[:, :, None], shifts[None, None, :]).to(torch.int8)
    izeros = torch.bitwise_right_shift(qzeros[:, :, None], shifts[None, None, :]).to(torch.int8)
    iweight = iweight.view(iweight.shape[0], -1)
    izeros = izeros.view(izeros.shape[0], -1)
    order = _reverse_order(iweight.shape[-1], qweight.device)
    iweight = torch.bitwise_and(iweight[:, order], 15)
    izeros = torch.bitwise_and(izeros[:, order], 15)
    scales = scales.repeat_interleave(group_size, dim=0)
    izeros = izeros.repeat_interleave(group_size, dim=0)
    return (iweight - izeros) * scales


class TorchGEMMLinear(WQLinear_GEMM):  # type: ignore[misc]
    """GEMM-layout AWQ weights, dequantized in torch on every call, then ``torch.matmul``. Runs anywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_shape = (*x.shape[:-1], self.out_features)
        compute_dtype = x.dtype if x.dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float32
        with torch.no_grad():
            weight = dequantize_gemm(self.qweight, self.qzeros, self.scales, self.group_size)
            out = torch.matmul(x.reshape(-1, x.shape[-1]).to(compute_dtype), weight.to(compute_dtype))
            if self.bias is not None:
                out = out + self.bias.to(compute_dtype)
        return out.reshape(out_shape).to(x.dtype)


class TritonGEMMLinear(WQLinear_GEMM):  # type: ignore[misc]
    """GEMM-layout AWQ weights through AutoAWQ's Triton kernels, whatever else is installed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from awq.modules.triton.gemm import awq_dequantize_triton, awq_gemm_triton

        out_shape = (*x.shape[:-1], self.out_features)
        rows = x.reshape(-1, x.shape[-1]).to(torch.float16)
        with torch.no_grad():
            if rows.shape[0] >= DENSE_ROWS_THRESHOLD:
                out = torch.matmul(rows, awq_dequantize_triton(self.qweight, self.scales, self.qzeros))
            else:
                out = awq_gemm_triton(rows, self.qweight, self.scales, self.qzeros, split_k_iters=8)
            if self.bias is not None:
                out = out + self.bias
        return out.reshape(out_shape).to(x.dtype)


def swap_gemm_backend(model: torch.nn.Module, cls: type[WQLinear_GEMM]) -> int:
    """Re-class every ``WQLinear_GEMM`` in ``model`` as ``cls`` (same buffers, no copy). Returns the count."""
    count = 0
    for module in model.modules():
        if isinstance(module, WQLinear_GEMM):
            module.__class__ = cls
            count += 1
    return count
