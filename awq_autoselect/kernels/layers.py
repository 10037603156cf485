"""One quantized linear layer of any catalogue kernel, built from layout-free weights.

The trials (:mod:`awq_autoselect.trials`) run each kernel on layers of a checkpoint's shapes without loading a
whole model. The layers built here are the ones ``from_quantized`` builds: the class the catalogue names for the
kernel (:attr:`~awq_autoselect.catalogue.KernelSpec.module_class`, the one kernel -> class table: AutoAWQ's own
``WQLinear_*``, or the project's :class:`~.torch_int4.TorchInt4Linear`, :class:`~.triton_int4.TritonInt4Linear`
and fixed-backend GEMM classes), holding the weights packed by :func:`awq_autoselect.formats.pack` (bit for bit
AutoAWQ's packing), post-initialised the way AutoAWQ does after a load (ExLlama's ``make_q4``, ExLlamaV2's
scratch space, Marlin's workspace, IPEX's repack).

Imports torch; AutoAWQ and Triton only for the kernels that need them (a torch_int4 trial imports neither: its
child process starts seconds sooner).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

import torch

from awq_autoselect import formats
from awq_autoselect._awq import import_awq
from awq_autoselect.catalogue import CATALOGUE, Kernel

__all__ = ["build_layers"]

# kernel -> AutoAWQ's post-load initialisation of every such layer in a model
_POST_INIT: dict[Kernel, tuple[str, str]] = {
    Kernel.MARLIN: ("awq.modules.linear.marlin", "marlin_post_init"),
    Kernel.EXLLAMA: ("awq.modules.linear.exllama", "exllama_post_init"),
    Kernel.EXLLAMAV2: ("awq.modules.linear.exllamav2", "exllamav2_post_init"),
    Kernel.IPEX: ("awq.modules.linear.gemm_ipex", "ipex_post_init"),
}


def _attribute(module: str, name: str) -> object:
    return getattr(importlib.import_module(module), name)


def _layer_class(kernel: Kernel) -> Callable[..., torch.nn.Module]:
    """The class :attr:`~awq_autoselect.catalogue.KernelSpec.module_class` names for ``kernel``, imported."""
    module, _, name = CATALOGUE[kernel].module_class.rpartition(".")
    if module.startswith("awq."):
        import_awq()  # AutoAWQ's import has side effects (warnings, transformers' lazy names): made once, quietly
    cls = _attribute(module, name)
    assert callable(cls)
    return cls


def build_layers(
    kernel: Kernel,
    weights: Sequence[formats.UnpackedWeight],
    *,
    device: torch.device,
    dtype: torch.dtype,
    max_rows: int,
) -> torch.nn.ModuleList:
    """Layers of ``kernel`` holding ``weights``, on ``device``, ready for inputs of up to ``max_rows`` rows.

    Raises:
        ConversionError: a weight cannot be held in the kernel's layout (shape, group size, symmetry).
        Exception: whatever the kernel's own construction or post-initialisation raises (a missing extension is an
            ``AttributeError`` on ``None`` at post-init for ExLlama, nothing at all for GEMV until the first forward).
    """
    cls = _layer_class(kernel)
    if kernel is Kernel.TORCH_INT4 or kernel is Kernel.GEMV_TRITON:  # the project's layers, from unpacked weights
        from_unpacked = getattr(cls, "from_unpacked")  # noqa: B009 - a classmethod of TorchInt4Linear and TritonInt4Linear
        own = torch.nn.ModuleList(from_unpacked(w, device=device, dtype=dtype) for w in weights)
        if kernel is Kernel.TORCH_INT4:
            return own
        from .triton_int4 import tune_layers

        if device.type == "cuda":
            tune_layers(own)
        return own.eval()
    layout = CATALOGUE[kernel].layout
    layers: list[torch.nn.Module] = []
    for weight in weights:
        tensors = formats.pack(layout, weight)
        out_features, in_features = (int(d) for d in weight.intweight.shape)
        layer = cls(4, weight.group_size, in_features, out_features, weight.bias is not None, device)
        for name, tensor in tensors.items():
            value = tensor.to(device)
            if name == "bias":
                value = value.to(dtype)
            setattr(layer, name, value)
        layers.append(layer)
    container = torch.nn.ModuleList(layers).to(device)
    post = _POST_INIT.get(kernel)
    if post is not None:
        post_init = _attribute(*post)
        assert callable(post_init)
        if kernel is Kernel.EXLLAMAV2:
            post_init(container, max_input_len=max_rows, max_batch_size=1)
        else:
            post_init(container)
    return container.eval()
