"""The narrow hooks around AutoAWQ's ``from_quantized``, and the model build for one kernel.

AutoAWQ's ``from_quantized(path, version=...)`` ignores ``version``: the checkpoint's layout alone decides. So the
build patches three names in ``awq.models.base`` while it runs: the quantization config (so the module class
matches the kernel), the weight loader (which converts the packed layout in memory, see
:mod:`awq_autoselect.conversion`) and the device probe (so a CPU load is not forced onto IPEX); then it swaps in
the kernel's module class where AutoAWQ has none, and gives the model the checkpoint's generation config (AutoAWQ's
``from_config`` keeps config.json's only). The patches are applied under a process-wide lock and removed
afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, cast

from awq_autoselect._awq import hf_model_of
from awq_autoselect.catalogue import CATALOGUE, Kernel, Layout
from awq_autoselect.checkpoint import CheckpointInfo, QuantizedLayer
from awq_autoselect.conversion import QUANTIZED_SUFFIXES, iter_tensors
from awq_autoselect.errors import CorruptCheckpointError

from .names import model_name

if TYPE_CHECKING:
    import torch
    from transformers import GenerationConfig, PreTrainedModel

__all__ = ["HOOK_LOCK", "build_model", "default_dtype"]

logger = logging.getLogger(__name__)

HOOK_LOCK = threading.RLock()


def default_dtype(kernel: Kernel, device: torch.device) -> torch.dtype:
    """The dtype a model runs in with ``kernel`` on ``device`` (:meth:`KernelSpec.dtype_on`)."""
    import torch

    dtype = getattr(torch, CATALOGUE[kernel].dtype_on(device.type))
    assert isinstance(dtype, torch.dtype)
    return dtype


@contextlib.contextmanager
def _patched(target: object, **attrs: object) -> Iterator[None]:
    saved = {name: getattr(target, name) for name in attrs}
    try:
        for name, value in attrs.items():
            setattr(target, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(target, name, value)


def _no_progress(iterable: Iterable[int], *args: object, **kwargs: object) -> Iterable[int]:
    return iterable


def _layer_index(info: CheckpointInfo) -> dict[str, QuantizedLayer]:
    return {layer.prefix: layer for layer in info.layers}


def _weights_loader(
    info: CheckpointInfo,
    target: Layout,
    device: torch.device,
    dtype: torch.dtype,
    conversions: list[str],
    *,
    on_convert: Callable[[float], None] | None,
) -> Callable[..., None]:
    """A stand-in for accelerate's ``load_checkpoint_and_dispatch`` that converts layouts in memory."""

    def load(model: torch.nn.Module, *args: object, **kwargs: object) -> None:
        from accelerate.utils import set_module_tensor_to_device

        layers = _layer_index(info)
        expected = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}
        loaded: set[str] = set()
        unexpected: list[str] = []
        if info.layout is not target:
            conversions.append(f"{info.layout.value} -> {target.value}: repacked in memory at load (exact)")
        for stored, tensor in iter_tensors(info, target, on_convert=on_convert):
            name = model_name(stored, info.model_type, expected)  # Mixtral's experts moved in transformers 5
            if name not in expected:
                unexpected.append(stored)
                continue
            prefix, _, suffix = stored.rpartition(".")
            value = tensor
            if value.is_floating_point() and not (prefix in layers and suffix in QUANTIZED_SUFFIXES):
                value = value.to(dtype)
            set_module_tensor_to_device(model, name, device, value=value)
            loaded.add(name)
        tie_weights = getattr(model, "tie_weights", None)
        if callable(tie_weights):
            tie_weights()
        still_meta = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.device.type == "meta"]
        if still_meta:
            raise CorruptCheckpointError(
                f"{info.path}: the weights files lack {len(still_meta)} tensor(s) the model needs, e.g. "
                f"{', '.join(still_meta[:4])}: the checkpoint is incomplete or belongs to another model"
            )
        # Buffers that are not in the checkpoint (e.g. rotary inv_freq) were built on the CPU under AutoAWQ's
        # init_empty_weights; accelerate's dispatch would move them, so move them here. Left on the CPU they cost
        # a synchronizing host-to-device copy in every forward and make CUDA-graph capture impossible.
        model.to(device)
        if unexpected:
            logger.info("ignored %d tensors not used by the model, e.g. %s", len(unexpected), unexpected[:3])

    return load


def _with_per_expert_modules(
    replace_layers: Callable[..., None], model_type: str, conversions: list[str]
) -> Callable[..., None]:
    """AutoAWQ's ``_load_quantized_modules``, run after fused experts got their per-expert modules back."""

    def load_quantized_modules(awq_class: object, model: torch.nn.Module, *args: object, **kwargs: object) -> None:
        from awq_autoselect.kernels.experts import unfuse_experts

        unfused = unfuse_experts(model, model_type)
        if unfused:
            conversions.append(
                f"{unfused} fused expert blocks given one module per expert, as the checkpoint stores them"
            )
        replace_layers(awq_class, model, *args, **kwargs)

    return load_quantized_modules


def _repack(model: torch.nn.Module, kernel: Kernel, dtype: torch.dtype, device: torch.device) -> list[str]:
    """Give a model of AutoAWQ GEMM layers the project's own layers of ``kernel`` (torch_int4 or gemv_triton), fuse
    q/k/v and gate/up, and (gemv_triton on CUDA) time its launch configurations; the conversions, in words."""
    from awq_autoselect.kernels.fusion import fuse_projections

    done: list[str] = []
    if kernel is Kernel.TORCH_INT4:
        from awq_autoselect.kernels.torch_int4 import convert_model_to_torch_int4

        count = convert_model_to_torch_int4(model, dtype=dtype)
        done.append(f"gemm -> torch_int4: {count} layers repacked for aten._weight_int4pack_mm ({dtype})")
    else:
        from awq_autoselect.kernels.triton_int4 import convert_model_to_triton_int4

        count = convert_model_to_triton_int4(model, dtype=dtype)
        done.append(f"gemm -> gemv_triton: {count} layers repacked for the Triton gemv kernel ({dtype})")
    groups = fuse_projections(model)
    if groups:
        done.append(f"{groups} groups of q/k/v and gate/up projections fused into one int4 matmul each")
    if kernel is Kernel.GEMV_TRITON and device.type == "cuda":
        from awq_autoselect.kernels.triton_int4 import tune_layers

        tuned = tune_layers(model)  # before any capture: the launch configuration is fixed per layer shape
        done.append("gemv launch configurations: " + ", ".join(f"{k} {v}" for k, v in tuned.items()))
    return done


def build_model(
    info: CheckpointInfo,
    kernel: Kernel,
    device: torch.device,
    dtype: torch.dtype,
    *,
    fused: bool,
    max_seq_len: int | None,
    trust_remote_code: bool,
    conversions: list[str],
    generation_config: GenerationConfig,
    on_convert: Callable[[float], None] | None = None,
) -> torch.nn.Module:
    """Run AutoAWQ's from_quantized for ``kernel`` on ``device`` and return the model wrapper.

    ``generation_config`` (:func:`~awq_autoselect.loading.generation.checkpoint_generation_config`) replaces the
    one ``from_config`` derived from config.json alone. ``conversions`` receives each conversion made, in words;
    ``on_convert`` the seconds each one took (layouts repacked while loading, the repack and fusion after it).
    """
    import time

    import torch

    from awq_autoselect._awq import import_awq
    from awq_autoselect._quiet import silenced

    import_awq()
    import awq.models.base as awq_base
    from awq import AutoAWQForCausalLM
    from awq.models._config import AwqConfig

    spec = CATALOGUE[kernel]
    target = spec.layout
    quant = AwqConfig(
        quant_method="awq",
        zero_point=target is not Layout.MARLIN,
        q_group_size=info.quant.group_size,
        w_bit=4,
        version=target.value,
        modules_to_not_convert=list(info.quant.modules_to_not_convert) or None,
    )

    class _FixedConfig:
        @staticmethod
        def from_pretrained(*args: object, **kwargs: object) -> AwqConfig:
            return quant

    # from_quantized forces IPEX whenever its device probe says exactly "cpu" (AWQ:awq/models/base.py:504-506);
    # for any other kernel on CPU, report the same device under a name that does not trigger that override.
    best_device = "cpu" if kernel is Kernel.IPEX else ("cpu:0" if device.type == "cpu" else str(device))
    with (
        HOOK_LOCK,
        _patched(
            awq_base.BaseAWQForCausalLM,
            _load_quantized_modules=_with_per_expert_modules(
                awq_base.BaseAWQForCausalLM._load_quantized_modules, info.model_type, conversions
            ),
        ),
        _patched(
            awq_base,
            AwqConfig=_FixedConfig,
            get_best_device=lambda: best_device,
            load_checkpoint_and_dispatch=_weights_loader(
                info, target, device, dtype, conversions, on_convert=on_convert
            ),
            tqdm=_no_progress,  # AutoAWQ draws a progress bar per load on stderr; a library should not
        ),
        silenced("awq"),  # AutoAWQ's warnings about its own fallbacks: the report says what happened
    ):
        model: torch.nn.Module = AutoAWQForCausalLM.from_quantized(
            str(info.path),
            max_seq_len=max_seq_len,
            trust_remote_code=trust_remote_code,
            fuse_layers=fused,
            use_exllama=kernel is Kernel.EXLLAMA,
            use_exllama_v2=kernel is Kernel.EXLLAMAV2,
            use_ipex=kernel is Kernel.IPEX,
            device_map={"": str(device)},
            torch_dtype=dtype,
        )
    if kernel in (Kernel.GEMM_TORCH, Kernel.GEMM_TRITON):
        from awq_autoselect.kernels.gemm import TorchGEMMLinear, TritonGEMMLinear, swap_gemm_backend

        swap_gemm_backend(model, TorchGEMMLinear if kernel is Kernel.GEMM_TORCH else TritonGEMMLinear)
    elif kernel in (Kernel.TORCH_INT4, Kernel.GEMV_TRITON):
        started = time.perf_counter()
        inner = hf_model_of(model)
        assert isinstance(inner, torch.nn.Module)
        conversions.extend(_repack(inner, kernel, dtype, device))
        if on_convert is not None:
            on_convert(time.perf_counter() - started)
    cast("PreTrainedModel", hf_model_of(model)).generation_config = generation_config
    model.eval()
    return model
