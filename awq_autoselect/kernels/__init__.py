"""The project's own ``nn.Module`` kernels: ``torch_int4`` (PyTorch's int4 matmul on AWQ weights), its dense
dequantization, and AutoAWQ GEMM layers with a fixed backend. Each module imports torch (and awq) at import time;
nothing imports them before a model is loaded.
"""
