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

import_awq()

from awq.modules.linear.gemm import WQLinear_GEMM  # noqa: E402 - after import_awq() on purpose
from awq.utils.packing_utils import dequantize_gemm  # noqa: E402

__all__ = ["TorchGEMMLinear", "TritonGEMMLinear", "swap_gemm_backend"]

# AutoAWQ's own switch from its GEMM kernel to dequantize + matmul (AWQ:awq/modules/linear/gemm.py:54-76).
DENSE_ROWS_THRESHOLD = 1024


class TorchGEMMLinear(WQLinear_GEMM):  # type: ignore[misc]
    """GEMM-layout AWQ weights, dequantized in torch on every call, then ``torch.matmul``. Runs anywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_shape = (*x.shape[:-1], self.out_features)
        compute_dtype = x.dtype if x.dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float32
        with torch.no_grad():
            weight = dequantize_gemm(self.qweight, self.qzeros, self.scales, self.w_bit, self.group_size)
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
