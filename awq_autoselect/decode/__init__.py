"""Decoding a loaded model: a static KV cache with the decode step replayed from a captured CUDA graph."""
