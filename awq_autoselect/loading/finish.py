"""Making a loaded model ready for its user: the fast decode path installed on ``generate()``, and a
``save_quantized`` that writes the checkpoint the model was loaded from (:func:`finish`)."""

from __future__ import annotations

import logging
import os
import warnings
from typing import TYPE_CHECKING

from awq_autoselect._awq import hf_model_of
from awq_autoselect.catalogue import CATALOGUE, Kernel
from awq_autoselect.checkpoint import CheckpointInfo
from awq_autoselect.errors import FallbackWarning, InvalidArgumentError

from .records import FirstCompile

if TYPE_CHECKING:
    import torch

__all__ = ["default_decode", "finish"]

logger = logging.getLogger(__name__)


def default_decode(kernel: Kernel, dev: torch.device) -> str:
    """The fast decode mode a model gets by default: compiled where torch.compile can trace the kernel's layers, a
    CUDA graph of the uncompiled step for the others (AutoAWQ's extensions), eager static-cache steps off CUDA."""
    if dev.type != "cuda":
        return "eager"
    return "compile" if CATALOGUE[kernel].traceable else "graph"


def finish(
    model: torch.nn.Module,
    info: CheckpointInfo,
    dev: torch.device,
    fast_decode: str | bool | None,
    *,
    fused: bool,
    kernel: Kernel,
    first_compile: FirstCompile | None = None,
) -> str:
    """Install the fast decode path and a ``save_quantized`` that writes a loadable checkpoint; the decode mode."""
    from awq_autoselect.decode.fast import install

    def save_quantized(save_dir: str | os.PathLike[str], safetensors: bool = True, shard_size: str = "5GB") -> None:
        """Write the checkpoint this model was loaded from (its weights are never changed by loading), in its
        layout, to ``save_dir`` (:func:`awq_autoselect.conversion.convert_checkpoint`); AutoAWQ's own
        ``save_quantized`` would write the repacked in-memory layout (e.g. torch_int4's), which nothing loads."""
        from awq_autoselect.conversion import convert_checkpoint

        if not safetensors:
            raise InvalidArgumentError("save_quantized(safetensors=False): only safetensors checkpoints are written")
        convert_checkpoint(info.path, save_dir, info.layout, max_shard_bytes=_shard_bytes(shard_size))

    if model is not hf_model_of(model):
        model.__dict__["save_quantized"] = save_quantized  # AutoAWQ's wrapper: this object only
    mode = default_decode(kernel, dev) if fast_decode in (None, True) else fast_decode
    if mode == "compile" and dev.type == "cuda" and not CATALOGUE[kernel].traceable:
        warnings.warn(
            f"fast_decode='compile': torch.compile cannot trace {kernel.value}'s layers (they call "
            f"{CATALOGUE[kernel].extension}); decoding from a CUDA graph of the uncompiled step instead",
            FallbackWarning,
            stacklevel=4,
        )
        mode = "graph"
    if mode is False:
        return "transformers"
    if fused:
        logger.info("fast decode not installed: AutoAWQ's fused layers keep their own KV cache")
        return "transformers"
    if first_compile is not None:
        first_compile.expected = mode == "compile" or (mode == "graph" and dev.type == "cuda")
    install(hf_model_of(model), str(mode), on_compiled=None if first_compile is None else first_compile.note)
    return str(mode)


def _shard_bytes(text: str) -> int:
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
    cleaned = str(text).strip().upper()
    for unit, factor in units.items():
        if cleaned.endswith(unit):
            try:
                return int(float(cleaned[: -len(unit)]) * factor)
            except ValueError:
                break
    try:
        return int(cleaned)
    except ValueError:
        raise InvalidArgumentError(f"shard_size={text!r}: expected a size such as '5GB' or a number of bytes") from None
