"""Reading and validating an AWQ checkpoint directory, without torch.

Everything here works from ``config.json`` (or the legacy ``quant_config.json``) and the safetensors headers (a
little-endian length and a JSON table), so a checkpoint can be checked, its layout identified and its layer shapes
listed on a machine that has neither torch nor a GPU; :func:`count_zero_point_zeros` also reads the ``qzeros``
tensors' bytes, which :mod:`awq_autoselect.formats.qzeros` decodes (with numpy). Nothing here writes to the
checkpoint.
"""

from __future__ import annotations

import functools
import json
import math
import os
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from .catalogue import Layout
from .errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointWarning,
    CorruptCheckpointError,
    InvalidArgumentError,
    NotAwqCheckpointError,
    UnsupportedCheckpointError,
)
from .formats.qzeros import StoredTensor, count_zero_points

__all__ = [
    "AUTOAWQ_MODEL_TYPES",
    "LEGACY_QUANT_CONFIG",
    "SUPPORTED_GROUP_SIZES",
    "CheckpointInfo",
    "QuantConfig",
    "QuantizedLayer",
    "TensorMeta",
    "ZeroPointCount",
    "check_fits_context",
    "context_length",
    "count_zero_point_zeros",
    "read_checkpoint",
    "read_safetensors_header",
]


def __dir__() -> list[str]:
    return __all__


PathLike = Union[str, "os.PathLike[str]"]

# AutoAWQ 0.2.9's AWQ_CAUSAL_LM_MODEL_MAP (AWQ:awq/models/auto.py); tests check this copy against awq itself.
AUTOAWQ_MODEL_TYPES: frozenset[str] = frozenset(
    {
        "RefinedWeb",
        "RefinedWebModel",
        "Yi",
        "aquila",
        "baichuan",
        "bloom",
        "cohere",
        "deepseek_v2",
        "deepseek_v3",
        "exaone",
        "falcon",
        "gemma",
        "gemma2",
        "gpt_bigcode",
        "gpt_neox",
        "gptj",
        "internlm2",
        "llama",
        "llava",
        "llava_next",
        "minicpm",
        "minicpm3",
        "mistral",
        "mixtral",
        "mpt",
        "opt",
        "phi3",
        "phi3_v",
        "qwen",
        "qwen2",
        "qwen2_5_omni",
        "qwen2_5_vl",
        "qwen2_vl",
        "qwen3",
        "qwen3_moe",
        "stablelm",
        "starcoder2",
    }
)

# -1 is per-channel (one group spanning in_features). Every kernel's own list is a subset of these; AWQ
# quantizers produce nothing else.
SUPPORTED_GROUP_SIZES: frozenset[int] = frozenset({-1, 32, 64, 128, 256, 512, 1024})

_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
_MAX_HEADER_BYTES = 100 * 1024 * 1024

#: The file older AutoAWQ releases wrote their quantization settings to, instead of config.json.
LEGACY_QUANT_CONFIG = "quant_config.json"


@dataclass(frozen=True)
class QuantConfig:
    """A checkpoint's AWQ quantization settings (``config.json`` → ``quantization_config``)."""

    bits: int = 4
    group_size: int = 128
    zero_point: bool = True
    layout: Layout = Layout.GEMM
    modules_to_not_convert: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, object], *, where: str = "quantization_config") -> QuantConfig:
        """Validate and read a transformers-style (``bits``, ``group_size``) or AutoAWQ-style (``w_bit``,
        ``q_group_size``: the legacy ``quant_config.json``) dict. Whole numbers may be written as strings (``"4"``).

        Raises:
            NotAwqCheckpointError: ``quant_method`` is present and is not ``awq``.
            UnsupportedCheckpointError: bits other than 4, an unsupported group size, an unknown version, or a
                value of the wrong type (the message names the key, the value and its type).
        """
        method = data.get("quant_method", "awq")
        if not isinstance(method, str) or method.lower() != "awq":
            raise NotAwqCheckpointError(
                f"{where}: quant_method is {method!r}, not 'awq': this is not an AWQ checkpoint; "
                "load it with the library that made it"
            )
        bits_key, bits = _whole_number(data, ("bits", "w_bit"), 4, where)
        if bits != 4:
            raise UnsupportedCheckpointError(
                f"{where}: {bits_key}={data.get(bits_key, bits)!r}: AutoAWQ's kernels only run 4-bit weights; "
                "re-quantize with w_bit=4"
            )
        group_key, group = _whole_number(data, ("group_size", "q_group_size"), 128, where)
        if group not in SUPPORTED_GROUP_SIZES:
            sizes = ", ".join(str(g) for g in sorted(SUPPORTED_GROUP_SIZES))
            raise UnsupportedCheckpointError(
                f"{where}: {group_key}={data.get(group_key, group)!r} is not supported (expected one of {sizes}); "
                "re-quantize with q_group_size=128, the size every AWQ kernel runs"
            )
        zero_point = data.get("zero_point", True)
        if not isinstance(zero_point, bool):
            raise UnsupportedCheckpointError(
                f"{where}: zero_point={zero_point!r} ({type(zero_point).__name__}) must be true or false"
            )
        version = data.get("version", "gemm")
        try:
            layout = Layout(str(version).lower().replace("-", "_"))
        except ValueError:
            known = ", ".join(v.value for v in Layout)
            raise UnsupportedCheckpointError(
                f"{where}: version={version!r} is not an AutoAWQ layout (expected one of {known})"
            ) from None
        not_convert = data.get("modules_to_not_convert") or ()
        if not isinstance(not_convert, (list, tuple)) or not all(isinstance(m, str) for m in not_convert):
            raise UnsupportedCheckpointError(f"{where}: modules_to_not_convert must be a list of names")
        return cls(
            bits=4, group_size=group, zero_point=zero_point, layout=layout, modules_to_not_convert=tuple(not_convert)
        )

    def to_dict(self) -> dict[str, object]:
        """The transformers-style dict AutoAWQ writes into ``config.json`` (version lower-case)."""
        return {
            "bits": self.bits,
            "group_size": self.group_size,
            "modules_to_not_convert": list(self.modules_to_not_convert) or None,
            "quant_method": "awq",
            "version": self.layout.value,
            "zero_point": self.zero_point,
        }

    def group_size_for(self, in_features: int) -> int:
        """The effective group size for a layer (``-1`` means one group over all input features)."""
        return in_features if self.group_size == -1 else self.group_size


def _whole_number(data: Mapping[str, object], keys: tuple[str, ...], default: int, where: str) -> tuple[str, int]:
    """(the key found, its value as an int): the first of ``keys`` present, else ``(keys[0], default)``.

    A whole number may be a JSON number (``4``, ``4.0``) or a string of one (``"4"``): quantizers and hand edits
    write both. Anything else names the key, the value and its type.
    """
    key = next((k for k in keys if k in data), None)
    if key is None:
        return keys[0], default
    value = data[key]
    number: object = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = value
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int):
        raise UnsupportedCheckpointError(
            f"{where}: {key}={value!r} ({type(value).__name__}) is not a whole number: write it as a JSON number, "
            f'e.g. "{key}": {default}'
        )
    return key, number


@dataclass(frozen=True)
class TensorMeta:
    """One tensor's entry in a safetensors header."""

    name: str
    dtype: str  # safetensors dtype code: I32, I16, F16, BF16, ...
    shape: tuple[int, ...]
    file: Path
    nbytes: int
    offset: int = 0  # where its bytes start in ``file`` (the 8-byte length and the header included)


@dataclass(frozen=True)
class QuantizedLayer:
    """One quantized linear layer as stored: its module path, shape and packed layout."""

    prefix: str  # e.g. model.layers.0.self_attn.q_proj
    in_features: int
    out_features: int
    layout: Layout
    has_bias: bool
    nbytes: int  # bytes of qweight + qzeros + scales (+ bias): what a forward reads from memory


@dataclass(frozen=True)
class CheckpointInfo:
    """What :func:`read_checkpoint` found: a validated AWQ checkpoint directory."""

    path: Path
    model_type: str
    architectures: tuple[str, ...]
    quant: QuantConfig
    weight_files: tuple[Path, ...]
    tensors: Mapping[str, TensorMeta]
    layers: tuple[QuantizedLayer, ...]
    config: Mapping[str, object]
    #: where :attr:`quant` was read: ``"config.json"`` (its ``quantization_config``) or ``"quant_config.json"``
    #: (the legacy file older AutoAWQ releases wrote instead)
    quant_source: str = "config.json"

    @property
    def layout(self) -> Layout:
        """The packed layout of the weights (checked against ``quantization_config.version``)."""
        return self.quant.layout

    @property
    def quantized_bytes(self) -> int:
        """Bytes of packed weights, scales and zeros in all quantized layers."""
        return sum(layer.nbytes for layer in self.layers)

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def shapes(self) -> tuple[tuple[int, int], ...]:
        """Distinct ``(in_features, out_features)`` pairs of the quantized layers."""
        return tuple(sorted({(layer.in_features, layer.out_features) for layer in self.layers}))

    @property
    def context_length(self) -> int | None:
        """The longest sequence the model is made for (:func:`context_length` of its config), or None."""
        return context_length(self.config)


# Keys that hold a model's context length, in the order config.json files use them (Llama and most others; GPT-2
# style; MPT; Qwen 1).
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "max_sequence_length", "seq_length")
# RoPE scalings that stretch the positions the model was trained on by their factor (transformers' rope types).
_STRETCHING_ROPE = frozenset({"linear", "dynamic", "yarn"})


def _positive_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def context_length(config: Mapping[str, object]) -> int | None:
    """The longest sequence (prompt plus generated tokens) a model's ``config.json`` says it is made for.

    ``max_position_embeddings`` (or the model family's own key; a multimodal model's ``text_config``), stretched by
    a linear, dynamic or YaRN RoPE scaling's ``factor`` where the config sets one (Qwen's long-context recipe adds
    YaRN to config.json and leaves ``max_position_embeddings`` at the trained length). None when the config names
    no length (ALiBi models such as BLOOM have none).
    """
    text = config.get("text_config")
    sources = [config, text] if isinstance(text, Mapping) else [config]
    for source in sources:
        length = next((n for key in _CONTEXT_KEYS if (n := _positive_int(source.get(key))) is not None), None)
        if length is None:
            continue
        rope = source.get("rope_scaling") or source.get("rope_parameters")
        if isinstance(rope, Mapping) and str(rope.get("rope_type", rope.get("type", ""))) in _STRETCHING_ROPE:
            factor = rope.get("factor")
            if isinstance(factor, (int, float)) and not isinstance(factor, bool) and factor > 1:
                trained = _positive_int(rope.get("original_max_position_embeddings")) or length
                length = max(length, int(factor * trained))
        return length
    return None


def check_fits_context(
    info: CheckpointInfo,
    prompt_tokens: int,
    new_tokens: int,
    *,
    prompt_name: str = "prompt_tokens",
    new_name: str = "new_tokens",
) -> None:
    """Refuse a request whose prompt plus new tokens exceed the model's :attr:`~CheckpointInfo.context_length`.

    Past it a model computes positions it was never trained on (transformers only logs a reminder), so a long
    request runs for minutes and returns noise. A model whose config names no length is not checked.

    Raises:
        InvalidArgumentError: the request is longer than the context; the message names both numbers and the
            arguments (``prompt_name``, ``new_name``).
    """
    context = info.context_length
    total = prompt_tokens + new_tokens
    if context is None or total <= context:
        return
    fix = (
        f"ask for at most {context - prompt_tokens} new tokens"
        if prompt_tokens < context
        else f"shorten the prompt below {context} tokens"
    )
    raise InvalidArgumentError(
        f"{prompt_name} ({prompt_tokens} tokens) plus {new_name} ({new_tokens}) is {total} tokens, more than the "
        f"model's context of {context} tokens (config.json of {info.path.name}): {fix}"
    )


def read_safetensors_header(file: Path) -> dict[str, TensorMeta]:
    """Parse one safetensors file's header and check that the file holds every byte it declares.

    Raises:
        CorruptCheckpointError: unreadable header, inconsistent entries, or a truncated file.
    """
    try:
        size = file.stat().st_size
        with open(file, "rb") as fh:
            raw_len = fh.read(8)
            if len(raw_len) != 8:
                raise CorruptCheckpointError(
                    f"{file}: {size} bytes is too short for a safetensors file; re-download or re-save the checkpoint"
                )
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len > min(_MAX_HEADER_BYTES, size - 8):
                raise CorruptCheckpointError(
                    f"{file}: header length {header_len} does not fit in a "
                    f"{size}-byte file: the file is truncated or not safetensors"
                )
            header = json.loads(fh.read(header_len))
    except OSError as exc:
        raise CorruptCheckpointError(f"{file}: cannot read: {exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpointError(
            f"{file}: the safetensors header is not valid JSON ({exc}); re-download or re-save the checkpoint"
        ) from exc
    if not isinstance(header, dict):
        raise CorruptCheckpointError(f"{file}: the safetensors header is not a JSON object")
    data_start = 8 + header_len
    result: dict[str, TensorMeta] = {}
    end_max = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = str(entry["dtype"])
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptCheckpointError(f"{file}: malformed header entry for tensor {name!r}") from exc
        expected = math.prod(shape) * _DTYPE_BYTES.get(dtype, 0)
        if dtype not in _DTYPE_BYTES or end - begin != expected or begin < 0:
            raise CorruptCheckpointError(
                f"{file}: tensor {name!r} declares {dtype}{list(shape)} but spans {end - begin} bytes"
            )
        end_max = max(end_max, end)
        result[name] = TensorMeta(
            name=name, dtype=dtype, shape=shape, file=file, nbytes=expected, offset=data_start + begin
        )
    if data_start + end_max > size:
        raise CorruptCheckpointError(
            f"{file}: truncated: the header needs {data_start + end_max} bytes but the file has {size}; "
            "re-download or re-save the checkpoint"
        )
    return result


def _weight_files(root: Path) -> tuple[Path, ...]:
    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptCheckpointError(f"{index}: not a valid safetensors index ({exc})") from exc
        files = tuple(root / name for name in names)
        for file in files:
            if not file.is_file():
                raise CheckpointNotFoundError(
                    f"{root}: the index lists {file.name}, which is missing; download every shard of the checkpoint"
                )
        return files
    files = tuple(sorted(root.glob("*.safetensors")))
    if not files:
        if any(root.glob("*.bin")) or any(root.glob("*.pt")):
            raise CheckpointError(
                f"{root}: has only PyTorch pickle weights (*.bin/*.pt); awq_autoselect reads "
                "safetensors: re-save the model with safe_serialization=True"
            )
        raise CheckpointNotFoundError(f"{root}: no *.safetensors weights found beside config.json")
    return files


def _layer_from_tensors(
    prefix: str, tensors: Mapping[str, TensorMeta], quant: QuantConfig, source: str = "config.json"
) -> QuantizedLayer:
    qweight = tensors[f"{prefix}.qweight"]
    qzeros = tensors.get(f"{prefix}.qzeros")
    scales = tensors.get(f"{prefix}.scales")
    bias = tensors.get(f"{prefix}.bias")
    where = f"{qweight.file}: layer {prefix}"
    if scales is None or len(scales.shape) != 2 or len(qweight.shape) != 2:
        raise CorruptCheckpointError(f"{where} has qweight but no 2-D scales: the weights file is incomplete")
    if qweight.dtype == "I16":
        layout = Layout.GEMV_FAST
        out_features, in_features = qweight.shape[0] * 4, qweight.shape[1]
        ok = qzeros is not None and qzeros.dtype == "F16" and scales.shape[1] == out_features
    elif qweight.dtype == "I32" and qzeros is None:
        layout = Layout.MARLIN
        in_features, out_features = qweight.shape[0] * 16, qweight.shape[1] // 2
        ok = scales.shape[1] == out_features
    elif qweight.dtype == "I32" and qzeros is not None and qzeros.dtype == "I32" and len(qzeros.shape) == 2:
        # GEMM: qweight [in, out/8], qzeros [in/g, out/8], scales [in/g, out].
        # GEMV: qweight [out, in/8], qzeros and scales [out, groups (padded)].
        gemm = scales.shape[1] == qweight.shape[1] * 8 == qzeros.shape[1] * 8 and qzeros.shape[0] == scales.shape[0]
        gemv = scales.shape[0] == qweight.shape[0] == qzeros.shape[0]
        if gemm:
            layout = Layout.GEMM
            in_features, out_features = qweight.shape[0], scales.shape[1]
        elif gemv:
            layout = Layout.GEMV
            out_features, in_features = qweight.shape[0], qweight.shape[1] * 8
        else:
            raise CorruptCheckpointError(
                f"{where}: qweight {list(qweight.shape)}, qzeros {list(qzeros.shape)} and scales "
                f"{list(scales.shape)} fit neither the GEMM layout (qweight [in, out/8], qzeros [in/g, out/8], "
                "scales [in/g, out]) nor the GEMV layout (qweight [out, in/8], qzeros and scales [out, groups]); "
                f"{source} says {quant.layout.value!r}: the weights file is damaged or was edited"
            )
        ok = True
    else:
        raise CorruptCheckpointError(f"{where}: qweight {qweight.dtype}{list(qweight.shape)} is no AWQ layout")
    if not ok:
        raise CorruptCheckpointError(
            f"{where}: qweight {list(qweight.shape)}, scales {list(scales.shape)} and qzeros "
            f"{list(qzeros.shape) if qzeros else None} do not fit one {layout.value} layer"
        )
    if layout is not quant.layout:
        raise CorruptCheckpointError(
            f"{where} is packed in the {layout.value.upper()} layout but the version in {source} says "
            f"{quant.layout.value!r}: fix the version in {source} (AutoAWQ would load garbage)"
        )
    group = quant.group_size_for(in_features)
    if in_features % group:
        raise UnsupportedCheckpointError(
            f"{where}: group_size {quant.group_size} does not divide in_features {in_features}"
        )
    if layout is Layout.GEMM and scales.shape[0] != in_features // group:
        raise CorruptCheckpointError(
            f"{where}: scales has {scales.shape[0]} groups, group_size {group} over {in_features} inputs "
            f"needs {in_features // group}: the group size in {source} does not match the weights"
        )
    nbytes = sum(t.nbytes for t in (qweight, qzeros, scales, bias) if t is not None)
    return QuantizedLayer(
        prefix=prefix,
        in_features=in_features,
        out_features=out_features,
        layout=layout,
        has_bias=bias is not None,
        nbytes=nbytes,
    )


def _json_object(file: Path) -> dict[str, object]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpointError(f"{file}: not valid JSON ({exc}); re-download or re-save the checkpoint") from exc
    if not isinstance(data, dict):
        raise CorruptCheckpointError(
            f"{file}: expected a JSON object, found a {type(data).__name__}; re-download or re-save the checkpoint"
        )
    return data


# The settings both files hold: QuantConfig's field, then its keys in config.json and in quant_config.json.
_COMPARED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bits", ("bits", "w_bit")),
    ("group_size", ("group_size", "q_group_size")),
    ("zero_point", ("zero_point",)),
    ("layout", ("version",)),
    ("modules_to_not_convert", ("modules_to_not_convert",)),
)


def _stated(data: Mapping[str, object], keys: tuple[str, ...], value: object) -> str:
    """How a file states one setting: ``key=value`` as written, or the default it leaves in place."""
    key = next((k for k in keys if k in data), None)
    if key is not None:
        return f"{key}={data[key]!r}"
    shown = value.value if isinstance(value, Layout) else list(value) if isinstance(value, tuple) else value
    return f"no {keys[-1]} ({shown!r} by default)"


def _quant_config(root: Path, config: Mapping[str, object], notes: list[str]) -> tuple[QuantConfig, str]:
    """The checkpoint's quantization settings and the file they came from; a legacy ``quant_config.json`` that
    disagrees with config.json, or cannot be read beside it, adds a note (config.json wins)."""
    config_file = root / "config.json"
    legacy_file = root / LEGACY_QUANT_CONFIG
    qc = config.get("quantization_config")
    if not isinstance(qc, dict):
        if legacy_file.is_file():
            # Older AutoAWQ releases wrote the settings (w_bit, q_group_size, zero_point, version) only there.
            legacy = QuantConfig.from_dict(_json_object(legacy_file), where=str(legacy_file))
            return legacy, LEGACY_QUANT_CONFIG
        raise NotAwqCheckpointError(
            f"{config_file} has no quantization_config and {root} has no {LEGACY_QUANT_CONFIG}: it is not an "
            "AWQ-quantized model. Quantize it with AutoAWQ first (model.quantize(...); model.save_quantized(...))."
        )
    quant = QuantConfig.from_dict(qc, where=f"{config_file}: quantization_config")
    if not legacy_file.is_file():
        return quant, "config.json"
    # AutoAWQ 0.2.9 and transformers read config.json's quantization_config only, so it wins.
    outcome = (
        f"using config.json's quantization_config ({quant.layout.value}, group_size {quant.group_size}), which "
        f"AutoAWQ 0.2.9 and transformers read; delete {LEGACY_QUANT_CONFIG} or make it agree"
    )
    try:
        legacy_data = _json_object(legacy_file)
        legacy = QuantConfig.from_dict(legacy_data, where=str(legacy_file))
    except CheckpointError as exc:
        notes.append(f"{root}: the legacy {LEGACY_QUANT_CONFIG} beside config.json cannot be read ({exc}); {outcome}")
        return quant, "config.json"
    differences = [
        f"config.json has {_stated(qc, keys, getattr(quant, name))}, {LEGACY_QUANT_CONFIG} has "
        f"{_stated(legacy_data, keys, getattr(legacy, name))}"
        for name, keys in _COMPARED
        if getattr(quant, name) != getattr(legacy, name)
    ]
    if differences:
        notes.append(
            f"{root}: config.json's quantization_config and the legacy {LEGACY_QUANT_CONFIG} disagree "
            f"({'; '.join(differences)}): {outcome}"
        )
    return quant, "config.json"


def read_checkpoint(path: PathLike, *, check_model_type: bool = True) -> CheckpointInfo:
    """Validate an AWQ checkpoint directory and describe it. Reads headers only; writes nothing.

    The quantization settings come from config.json's ``quantization_config``; a checkpoint of older AutoAWQ
    releases has them in ``quant_config.json`` instead (``w_bit``, ``q_group_size``, ``zero_point``,
    ``version``), which is read when config.json has none.

    Warns:
        CheckpointWarning: both files hold settings and they disagree (config.json's are used, as AutoAWQ and
            transformers use them), or ``quant_config.json`` beside a ``quantization_config`` cannot be read.

    Raises:
        InvalidArgumentError: ``path`` is empty (which would mean the current directory; pass ``"."`` for that).
        CheckpointNotFoundError: the path, its config.json or a weights shard does not exist.
        CheckpointError: the path is a file, or holds only pickle weights.
        NotAwqCheckpointError: neither config.json's ``quantization_config`` nor a legacy ``quant_config.json``.
        UnsupportedCheckpointError: bits, group size or version nothing here can run, or a ``model_type`` AutoAWQ
            0.2.9 does not support.
        CorruptCheckpointError: unreadable JSON, a truncated weights file, or tensors that do not fit.
    """
    if not os.fspath(path).strip():
        raise InvalidArgumentError(
            f"checkpoint path {os.fspath(path)!r} is empty: pass the directory holding config.json and the "
            "*.safetensors weights ('.' for the current directory)"
        )
    root = Path(os.fspath(path)).expanduser()
    if not root.exists():
        raise CheckpointNotFoundError(
            f"checkpoint path {str(root)!r} does not exist: pass the local directory holding config.json and "
            "the *.safetensors weights (a Hub model: pass its ID to load_quantized_auto, which resolves it, or "
            "download it first: hf download org/model-AWQ --local-dir DIR)"
        )
    if not root.is_dir():
        raise CheckpointError(f"checkpoint path {str(root)!r} is a file: pass the directory that contains it")
    config_file = root / "config.json"
    if not config_file.is_file():
        raise CheckpointNotFoundError(
            f"{root} has no config.json, so it is not a Hugging Face model directory: pass the directory "
            "that save_quantized() wrote"
        )
    config = _json_object(config_file)
    notes: list[str] = []
    quant, quant_source = _quant_config(root, config, notes)
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise CorruptCheckpointError(f"{config_file}: no model_type")
    if check_model_type and model_type not in AUTOAWQ_MODEL_TYPES:
        raise UnsupportedCheckpointError(
            f"{config_file}: model_type {model_type!r} is not supported by AutoAWQ 0.2.9 (it supports "
            f"{', '.join(sorted(AUTOAWQ_MODEL_TYPES))})"
        )
    files = _weight_files(root)
    tensors: dict[str, TensorMeta] = {}
    for file in files:
        tensors.update(read_safetensors_header(file))
    prefixes = sorted(name[: -len(".qweight")] for name in tensors if name.endswith(".qweight"))
    if not prefixes:
        raise CorruptCheckpointError(
            f"{root}: config.json declares AWQ quantization but no tensor is named *.qweight: the weights are "
            "not quantized (or belong to another model)"
        )
    layers = tuple(_layer_from_tensors(prefix, tensors, quant, quant_source) for prefix in prefixes)
    architectures = config.get("architectures") or ()
    for note in notes:
        warnings.warn(note, CheckpointWarning, stacklevel=2)
    return CheckpointInfo(
        path=root,
        model_type=model_type,
        architectures=tuple(str(a) for a in architectures) if isinstance(architectures, list) else (),
        quant=quant,
        weight_files=files,
        tensors=tensors,
        layers=layers,
        config=config,
        quant_source=quant_source,
    )


@dataclass(frozen=True)
class ZeroPointCount:
    """What :func:`count_zero_point_zeros` found: stored zero points equal to 0, over every quantized layer."""

    zeros: int  # zero points that are 0
    total: int  # zero points read (padding excluded)
    first: str | None  # the first layer (module path) with one, or None

    def __str__(self) -> str:
        where = f" (first in {self.first})" if self.first else ""
        return f"{self.zeros} of {self.total} zero points are 0{where}"


def _read(meta: TensorMeta) -> bytes:
    try:
        with open(meta.file, "rb") as fh:
            fh.seek(meta.offset)
            data = fh.read(meta.nbytes)
    except OSError as exc:
        raise CorruptCheckpointError(f"{meta.file}: cannot read tensor {meta.name!r}: {exc}") from exc
    if len(data) != meta.nbytes:
        raise CorruptCheckpointError(f"{meta.file}: tensor {meta.name!r} is cut short; re-download the checkpoint")
    return data


# (checkpoint path, (file, size, mtime) of every weight file) -> its count: a load selects twice
_COUNTS: dict[tuple[str, tuple[tuple[str, int, int], ...]], ZeroPointCount] = {}
_COUNTS_KEPT = 8


def count_zero_point_zeros(info: CheckpointInfo) -> ZeroPointCount:
    """Count the stored zero points equal to 0 in every quantized layer. Reads the ``qzeros`` tensors only (once
    per checkpoint and process while its files are unchanged).

    Some kernels cannot run them (AutoAWQ repacks ExLlama's zero points as ``zero - 1``: see
    :attr:`awq_autoselect.catalogue.KernelSpec.zero_minus_one`). Each layer is read as its layout stores it
    (:func:`awq_autoselect.formats.qzeros.count_zero_points`, padding skipped); Marlin stores none. What is stored
    is counted, whatever ``zero_point`` says: the kernels use it as stored.

    Raises:
        ImportError: numpy is not installed (transformers, a dependency, installs it).
        CorruptCheckpointError: a weights file cannot be read, or its ``qzeros`` do not fit the layer.
    """
    try:
        stats = [(str(f), f.stat()) for f in info.weight_files]
    except OSError as exc:
        raise CorruptCheckpointError(f"{info.path}: cannot read the weights files: {exc}") from exc
    key = (str(info.path), tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats))
    if key not in _COUNTS:
        if len(_COUNTS) >= _COUNTS_KEPT:
            _COUNTS.pop(next(iter(_COUNTS)))
        _COUNTS[key] = _count(info)
    return _COUNTS[key]


def _count(info: CheckpointInfo) -> ZeroPointCount:
    zeros = total = 0
    first: str | None = None
    for layer in info.layers:
        meta = info.tensors.get(f"{layer.prefix}.qzeros")
        if meta is None:  # Marlin stores no zero points
            continue
        scales = info.tensors.get(f"{layer.prefix}.scales")
        found, count = count_zero_points(
            layer.layout,
            _stored(meta),
            groups=layer.in_features // info.quant.group_size_for(layer.in_features),
            out_features=layer.out_features,
            scales=None if scales is None else _stored(scales),
            where=f"{meta.file}: {meta.name}",
        )
        zeros += found
        total += count
        if found and first is None:
            first = layer.prefix
    return ZeroPointCount(zeros=zeros, total=total, first=first)


def _stored(meta: TensorMeta) -> StoredTensor:
    return StoredTensor(meta.shape, functools.partial(_read, meta))
