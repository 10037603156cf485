"""Greedy generation with a captured CUDA graph of the decode step (torch_int4 on a current PyTorch).

    python examples/cuda_graph_generate.py PATH_TO_AWQ_CHECKPOINT

Falls back to eager decoding, with the reason, where a graph cannot be captured (CPU, sliding-window caches).
"""

from __future__ import annotations

import sys

import torch

from awq_autoselect import load_quantized_auto
from awq_autoselect.decode.static import StaticDecoder, generate_with_cuda_graph


def main(path: str) -> int:
    model, report = load_quantized_auto(path, "torch_int4")
    print(report)
    device = next(model.parameters()).device
    ids = torch.tensor([[1, 45, 74, 31, 34, 38]], device=device)  # ids every vocabulary has (tiny: 512)
    tokens = generate_with_cuda_graph(model, ids, max_new_tokens=32)
    print(tokens[0].tolist())
    decoder = StaticDecoder(model, batch_size=1, max_cache_len=64)
    print("graph:", decoder.graph_enabled, decoder.fallback_reason or "")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
