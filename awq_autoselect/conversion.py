"""Whole-checkpoint layout conversion: stream tensors out of a checkpoint in another packed layout.

:func:`iter_tensors` is shared by the loader (which converts in memory while loading) and by
:func:`convert_checkpoint` (which writes a new checkpoint directory for engines that only read one layout).
The source checkpoint is only ever opened for reading.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ._writing import check_directory_destination, staged_directory
from .catalogue import Layout
from .checkpoint import LEGACY_QUANT_CONFIG, CheckpointInfo, QuantizedLayer, read_checkpoint
from .errors import ConversionError, CorruptCheckpointError
from .hub import resolve_checkpoint

if TYPE_CHECKING:
    import torch

__all__ = ["QUANTIZED_SUFFIXES", "convert_checkpoint", "iter_tensors"]


def __dir__() -> list[str]:
    return __all__


logger = logging.getLogger(__name__)

QUANTIZED_SUFFIXES = ("qweight", "qzeros", "scales", "bias")
_DEFAULT_SHARD_BYTES = 4 * 1024**3


def _split(name: str) -> tuple[str, str]:
    prefix, _, suffix = name.rpartition(".")
    return prefix, suffix


def _finite(info: CheckpointInfo, file: Path, name: str, tensor: torch.Tensor) -> torch.Tensor:
    import torch

    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise CorruptCheckpointError(
            f"{info.path}: tensor {name} (in {file.name}) holds {bad} NaN or inf value(s) of {tensor.numel()}: the "
            "checkpoint is corrupt; download or quantize it again"
        )
    return tensor


def iter_tensors(
    info: CheckpointInfo,
    target: Layout | str,
    *,
    device: str = "cpu",
    on_convert: Callable[[float], None] | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield every tensor of the checkpoint, quantized layers converted to ``target``.

    Tensors of a quantized layer are gathered (they may sit in different shards) and yielded together once the
    layer is complete, already converted. Other tensors are yielded as stored. Conversion runs on ``device``;
    ``on_convert`` is given the seconds each layer's conversion took (the loader reports their sum).

    Raises:
        ConversionError: a layer cannot be represented in ``target`` (e.g. asymmetric weights to Marlin).
        CorruptCheckpointError: a layer's tensors are inconsistent, or a floating-point tensor (scales, norms,
            embeddings...) holds NaN or inf: no kernel can compute with it, so this is the checkpoint's fault.
    """
    from safetensors import safe_open

    from . import formats

    dst = Layout(target)
    layers: dict[str, QuantizedLayer] = {layer.prefix: layer for layer in info.layers}
    pending: dict[str, dict[str, torch.Tensor]] = {}
    needed = {prefix: {s for s in QUANTIZED_SUFFIXES if f"{prefix}.{s}" in info.tensors} for prefix in layers}
    for file in info.weight_files:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
                prefix, suffix = _split(name)
                layer = layers.get(prefix)
                stored = _finite(info, file, name, handle.get_tensor(name))
                if layer is None or suffix not in QUANTIZED_SUFFIXES:
                    yield name, stored
                    continue
                group = pending.setdefault(prefix, {})
                group[suffix] = stored.to(device)
                if set(group) != needed[prefix]:
                    continue
                del pending[prefix]
                if layer.layout is dst:
                    converted = group
                else:
                    started = time.perf_counter()
                    try:
                        converted = formats.convert(
                            group,
                            layer.layout,
                            dst,
                            in_features=layer.in_features,
                            out_features=layer.out_features,
                            group_size=info.quant.group_size,
                        )
                    except ConversionError as exc:
                        raise ConversionError(f"{info.path}: layer {prefix}: {exc}") from exc
                    if on_convert is not None:
                        on_convert(time.perf_counter() - started)
                for suffix_out, tensor in converted.items():
                    yield f"{prefix}.{suffix_out}", tensor
    if pending:
        missing = ", ".join(sorted(pending)[:5])
        raise ConversionError(f"{info.path}: incomplete quantized layers after reading every shard: {missing}")


def convert_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    to: Layout | str,
    *,
    overwrite: bool = False,
    max_shard_bytes: int = _DEFAULT_SHARD_BYTES,
    revision: str | None = None,
) -> Path:
    """Write a copy of the checkpoint at ``src`` with its quantized weights repacked in layout ``to``.

    The result is a normal AutoAWQ checkpoint: ``config.json`` carries the new ``quantization_config.version``,
    weights are safetensors (sharded with an index when larger than ``max_shard_bytes``), and every other file
    (tokenizer, generation config, ...) is copied, except a legacy ``quant_config.json`` (config.json holds its
    settings now). Plain ``AutoAWQForCausalLM.from_quantized`` loads it. The
    source directory is only read. The result is written to a staging directory beside ``dst`` and renamed, so a
    failure (or an interrupt) leaves no half-written checkpoint behind.

    ``dst`` must be new, empty, or a checkpoint awq_autoselect wrote (it carries ``.awq-autoselect.json``); with
    ``overwrite=True`` such a checkpoint is replaced, and only the files it lists are deleted. Nothing that
    awq_autoselect did not write is ever deleted or replaced.

    ``src`` may be a Hugging Face Hub model ID (``"org/model-AWQ"``, at ``revision``; default ``main``): after
    ``dst`` is checked, it is downloaded to (or, offline, found in) the Hugging Face cache
    (:func:`awq_autoselect.hub.resolve_checkpoint`). ``revision`` with a local ``src`` is an
    :class:`~awq_autoselect.errors.InvalidArgumentError`.

    Raises:
        OutputPathError: ``dst`` is, contains or lies inside the source; is a file; is a non-empty
            directory awq_autoselect did not write; is one it wrote but ``overwrite`` is false; or holds files
            it did not write.
        ConversionError: the weights cannot be represented in ``to``.
        and every error of :func:`awq_autoselect.checkpoint.read_checkpoint` and
        :func:`awq_autoselect.hub.resolve_checkpoint` for a bad source.
    """
    from safetensors.torch import save_file

    target = Layout(str(to).lower())
    out = Path(os.fspath(dst)).expanduser()
    # A destination that cannot be written fails before a download of a Hub source (checked again below).
    given = Path(os.fspath(src)).expanduser()
    check_directory_destination(
        out, sources=[given] if given.exists() else [], overwrite=overwrite, what="convert destination"
    )
    info = read_checkpoint(resolve_checkpoint(src, revision=revision))
    with staged_directory(
        out, kind="converted checkpoint", sources=[info.path], overwrite=overwrite, what="convert destination"
    ) as staging:
        shards: list[dict[str, torch.Tensor]] = [{}]
        size = 0
        for name, tensor in iter_tensors(info, target):
            nbytes = tensor.numel() * tensor.element_size()
            if size and size + nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][name] = tensor.contiguous()
            size += nbytes
        weight_map: dict[str, str] = {}
        for i, shard in enumerate(shards, start=1):
            fname = "model.safetensors" if len(shards) == 1 else f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(staging / fname), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, fname))
        if len(shards) > 1:
            total = sum(t.numel() * t.element_size() for s in shards for t in s.values())
            index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
            (staging / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        config = dict(info.config)
        # Marlin is symmetric (no qzeros); every other layout stores zero points (8 for symmetric weights).
        quant = replace(info.quant, layout=target, zero_point=target is not Layout.MARLIN)
        config["quantization_config"] = quant.to_dict()
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        # A legacy quant_config.json is not copied: config.json's quantization_config now says what it said, and a
        # stale copy (the old version) would disagree with it.
        written = {"model.safetensors.index.json", "config.json", LEGACY_QUANT_CONFIG}
        weight_names = {f.name for f in info.weight_files} | written
        for item in info.path.iterdir():
            if item.name in weight_names or item.name.startswith("."):
                continue
            if item.is_file():
                shutil.copy2(item, staging / item.name)
            elif item.is_dir():
                shutil.copytree(item, staging / item.name)
    logger.info("converted %s (%s) to %s (%s)", info.path, info.layout, out, target)
    return out
