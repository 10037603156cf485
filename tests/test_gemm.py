"""kernels/gemm.py: the fixed-backend GEMM layers, and their dequantization, bit for bit AutoAWQ's."""

from __future__ import annotations

import pytest
import torch

from awq_autoselect import formats
from awq_autoselect.catalogue import Layout
from awq_autoselect.kernels.gemm import dequantize_gemm
from tests.helpers import random_weight


@pytest.mark.parametrize(
    ("n", "k", "group"), [(64, 256, 128), (256, 512, 64), (128, 11008 // 86 * 8, 32), (64, 128, 128)]
)
def test_dequantize_gemm_is_autoawqs_bit_for_bit(n: int, k: int, group: int) -> None:
    from awq.utils.packing_utils import dequantize_gemm as autoawq_dequantize_gemm

    weight = random_weight(n, k, group, seed=n + k)
    tensors = formats.pack(Layout.GEMM, weight)
    ours = dequantize_gemm(tensors["qweight"], tensors["qzeros"], tensors["scales"], group)
    theirs = autoawq_dequantize_gemm(tensors["qweight"], tensors["qzeros"], tensors["scales"], 4, group)
    assert ours.dtype == theirs.dtype
    assert torch.equal(ours, theirs)
    # fp16 arithmetic, as AutoAWQ's: the float32 (q - z) * s rounded once
    assert torch.equal(ours.t(), formats.dequantize(weight).to(torch.float16))
