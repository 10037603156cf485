"""Real-format AWQ checkpoints at real model shapes, with random weights, made offline.

Kernel latency depends on the shapes of the layers (hidden size, intermediate size, heads, vocabulary, number of
layers), the packed layout and the group size, not on the values of the weights. A synthetic checkpoint has a
real model's shapes and AutoAWQ's real on-disk format, filled with seeded random 4-bit weights, so 7B-scale
benchmarks run on a machine that cannot reach a model hub::

    from awq_autoselect.testing import make_synthetic_checkpoint

    path = make_synthetic_checkpoint("/tmp/llama-2-7b-awq", shape="llama-2-7b", version="gemm", device="cuda")

What is written is what AutoAWQ 0.2.9's ``save_quantized`` writes, and
``AutoAWQForCausalLM.from_quantized(path)`` loads it unchanged:

- ``config.json``: a ``LlamaConfig`` with the shape's dimensions (see :data:`SHAPES`) and AutoAWQ's
  ``quantization_config`` (``bits`` 4, ``group_size``, ``zero_point`` true, ``version``, ``quant_method`` awq).
- ``model.safetensors``, or shards ``model-0000i-of-0000n.safetensors`` with ``model.safetensors.index.json``
  when the weights exceed ``max_shard_size``. Every quantized linear layer (q, k, v, o, gate, up, down in each
  decoder layer) holds valid packed int4 weights in the requested layout (``gemm`` or ``gemv``): uniformly
  random 4-bit values and zero points in 0..15, and fp16 scales of about ``1 / (4 * sqrt(in_features))`` so
  that a forward pass through all layers stays finite in fp16 (through llama-2-7b's 32 layers the residual
  stream peaks below 100 and the logits have a standard deviation of about 1). Embeddings and ``lm_head`` are
  random fp16; RMSNorm weights are ones.
- A byte-level BPE tokenizer trained on a few built-in sentences and padded with ``<extra_i>`` tokens up to
  the vocabulary size, so every id a model generates decodes; ``generation_config.json`` as transformers
  derives it from the config.

The same random 4-bit values and zero points are drawn for both layouts, so a ``gemm`` and a ``gemv``
checkpoint made with the same shape, group size, seed and device dequantize to identical weights. The same
arguments give byte-identical files under the same transformers version (``config.json`` records it); CPU and
CUDA generators draw different streams, so the device is one of the arguments that fix the bytes.

The weights are random: generated text is gibberish and the end-of-sequence token may come at any step, so
benchmarks must fix the number of new tokens (``min_new_tokens``). Special tokens are ``<unk>`` (0), ``<s>``
(1) and ``</s>`` (2) for every shape, including ``llama-3-8b`` whose real tokenizer uses other ids; token ids do
not change any latency.

Generation works layer by layer and writes each shard as soon as it is complete, so peak memory is about one
shard plus one layer. ``device="cuda"`` draws the random numbers and packs on the GPU.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Union

from awq_autoselect._writing import staged_directory
from awq_autoselect.catalogue import Layout
from awq_autoselect.devices import resolve_device
from awq_autoselect.errors import InvalidArgumentError, UnknownVersionError, UnsupportedCheckpointError
from awq_autoselect.formats.geometry import NIBBLES_PER_WORD, layer_geometry, tensor_shapes
from awq_autoselect.formats.packing import from_awq_order, join_nibbles

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_MAX_SHARD_SIZE",
    "SHAPES",
    "ModelShape",
    "make_synthetic_checkpoint",
]


def __dir__() -> list[str]:
    return __all__


logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Shards are cut before a tensor that would take a shard past this many bytes (decimal, as "2GB" in HF).
DEFAULT_MAX_SHARD_SIZE = 2_000_000_000

_SUPPORTED_LAYOUTS = (Layout.GEMM, Layout.GEMV)
_GROUP_SIZES = (32, 64, 128, -1)  # what AutoAWQ's WQLinear_GEMV accepts at load (calculate_zeros_width)
_ITEMSIZE = {"int32": 4, "int16": 2, "float16": 2}
_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
_BOS_ID, _EOS_ID = 1, 2

# Sentences the tokenizer is trained on: printable ASCII, digits and punctuation, so ordinary prompts encode
# into real tokens rather than single bytes. The content is irrelevant to anything measured.
_TOKENIZER_TEXTS = (
    "A synthetic checkpoint has the shapes of a real model and random weights.",
    "The kernel reads packed four-bit weights, unpacks them and multiplies them by the activations.",
    "Every layer has a query, key, value and output projection, then a gated feed-forward block.",
    "Latency depends on how many bytes are read from memory and how many rows each matrix product has.",
    "Numbers such as 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 32, 64, 128, 256, 1024 and 4096 appear often.",
    "Punctuation: commas, periods. Questions? Exclamations! Colons: semicolons; (parentheses) [brackets].",
    "Once upon a time there was a small model that wanted to be as fast as a large one.",
    "The quick brown fox jumps over the lazy dog while the cat watches from the window.",
    "Write a short story about a lighthouse keeper who counts the ships that pass each night.",
    "Explain, step by step, why the sky looks blue during the day and red at sunset.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Tokens per second, time to first token and memory use are reported for each kernel version.",
)


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a Llama-architecture model: everything that decides a forward pass's cost."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    max_position_embeddings: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        """Size of one attention head."""
        return self.hidden_size // self.num_attention_heads

    def with_layers(self, num_layers: int) -> ModelShape:
        """The same shape with another number of decoder layers (e.g. one layer at 7B width, for tests).

        Raises:
            InvalidArgumentError: ``num_layers`` is not a positive int.
        """
        if isinstance(num_layers, bool) or num_layers < 1:
            raise InvalidArgumentError(
                f"num_layers={num_layers!r}: expected a positive number of decoder layers, or None for the "
                f"shape's own {self.num_hidden_layers}"
            )
        return dataclasses.replace(self, num_hidden_layers=num_layers)

    def linear_shapes(self) -> tuple[tuple[str, int, int], ...]:
        """``(name, in_features, out_features)`` of each quantized linear in one decoder layer, in file order."""
        hidden, inter = self.hidden_size, self.intermediate_size
        heads, kv = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        return (
            ("self_attn.q_proj", hidden, heads),
            ("self_attn.k_proj", hidden, kv),
            ("self_attn.v_proj", hidden, kv),
            ("self_attn.o_proj", heads, hidden),
            ("mlp.gate_proj", hidden, inter),
            ("mlp.up_proj", hidden, inter),
            ("mlp.down_proj", inter, hidden),
        )

    def config_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``transformers.LlamaConfig``."""
        return {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "bos_token_id": _BOS_ID,
            "eos_token_id": _EOS_ID,
        }


#: The shapes :func:`make_synthetic_checkpoint` knows, by name. ``tiny`` matches the test models of this
#: project (every in_features a multiple of 128) with grouped-query attention, and builds in well under a second.
SHAPES: Mapping[str, ModelShape] = MappingProxyType(
    {
        shape.name: shape
        for shape in (
            ModelShape(
                name="tiny",
                hidden_size=256,
                intermediate_size=512,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                vocab_size=512,
                max_position_embeddings=512,
            ),
            ModelShape(
                name="llama-2-7b",
                hidden_size=4096,
                intermediate_size=11008,
                num_hidden_layers=32,
                num_attention_heads=32,
                num_key_value_heads=32,
                vocab_size=32000,
                max_position_embeddings=4096,
            ),
            ModelShape(
                name="llama-3-8b",
                hidden_size=4096,
                intermediate_size=14336,
                num_hidden_layers=32,
                num_attention_heads=32,
                num_key_value_heads=8,
                vocab_size=128256,
                max_position_embeddings=8192,
                rope_theta=500000.0,
            ),
        )
    }
)


# --- planning: every tensor's name, shape and dtype, before anything is drawn ----------------------------------


@dataclass(frozen=True)
class _TensorPlan:
    name: str
    shape: tuple[int, ...]
    itemsize: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.itemsize


def _linear_plan(
    prefix: str, in_features: int, out_features: int, layout: Layout, group_size: int
) -> list[_TensorPlan]:
    geo = layer_geometry(layout, in_features, out_features, group_size)
    return [
        _TensorPlan(f"{prefix}.{name}", shape, _ITEMSIZE[dtype]) for name, (shape, dtype) in tensor_shapes(geo).items()
    ]


def _plan(shape: ModelShape, layout: Layout, group_size: int) -> list[_TensorPlan]:
    """All tensors in generation order (the order random numbers are drawn in)."""
    plan = [_TensorPlan("model.embed_tokens.weight", (shape.vocab_size, shape.hidden_size), 2)]
    for index in range(shape.num_hidden_layers):
        prefix = f"model.layers.{index}"
        plan.append(_TensorPlan(f"{prefix}.input_layernorm.weight", (shape.hidden_size,), 2))
        for name, in_features, out_features in shape.linear_shapes():
            plan.extend(_linear_plan(f"{prefix}.{name}", in_features, out_features, layout, group_size))
        plan.append(_TensorPlan(f"{prefix}.post_attention_layernorm.weight", (shape.hidden_size,), 2))
    plan.append(_TensorPlan("model.norm.weight", (shape.hidden_size,), 2))
    plan.append(_TensorPlan("lm_head.weight", (shape.vocab_size, shape.hidden_size), 2))
    return plan


def _shard_names(plan: list[_TensorPlan], max_shard_size: int) -> list[list[str]]:
    """Greedy sharding in plan order, as huggingface_hub does: start a new shard when the next tensor would
    overflow a non-empty one."""
    shards: list[list[str]] = [[]]
    size = 0
    for tensor in plan:
        if shards[-1] and size + tensor.nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(tensor.name)
        size += tensor.nbytes
    return shards


# --- drawing and packing ------------------------------------------------------------------------------------


def _random_words(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Uniform random int32 words: eight independent uniform 4-bit values each."""
    import torch

    return torch.randint(-(2**31), 2**31, shape, dtype=torch.int32, generator=gen, device=device)


def _draw_linear(
    prefix: str,
    in_features: int,
    out_features: int,
    *,
    layout: Layout,
    group_size: int,
    gen: torch.Generator,
    device: torch.device,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Draw one quantized linear and pack it. The draws are the same for every layout."""
    import torch

    group = in_features if group_size == -1 else group_size
    groups = in_features // group
    # Canonical draws: GEMM-packed words (8 uniform 4-bit values each) for weights and zero points.
    qweight = _random_words((in_features, out_features // NIBBLES_PER_WORD), gen, device)
    qzeros = _random_words((groups, out_features // NIBBLES_PER_WORD), gen, device)
    # Scales near 1/(4*sqrt(K)) with +-25% spread: (q - z) has a standard deviation of about 6.5, so each
    # weight has a standard deviation of about 1.6/sqrt(K) and every projection keeps activations O(1).
    base = 1.0 / (4.0 * math.sqrt(in_features))
    spread = torch.rand((groups, out_features), generator=gen, device=device, dtype=torch.float32)
    scales = (base * (0.75 + 0.5 * spread)).to(torch.float16)
    if layout is Layout.GEMM:
        yield f"{prefix}.qweight", qweight
        yield f"{prefix}.qzeros", qzeros
        yield f"{prefix}.scales", scales
        return
    width = layer_geometry(layout, in_features, out_features, group_size).zeros_width
    weights = from_awq_order(qweight)  # [N, K]
    del qweight
    yield f"{prefix}.qweight", join_nibbles(weights, torch.int32)
    del weights
    zeros = torch.zeros((out_features, width * NIBBLES_PER_WORD), dtype=torch.uint8, device=device)
    zeros[:, :groups] = from_awq_order(qzeros)
    yield f"{prefix}.qzeros", join_nibbles(zeros, torch.int32)
    padded = torch.zeros((out_features, width * NIBBLES_PER_WORD), dtype=torch.float16, device=device)
    padded[:, :groups] = scales.t()
    yield f"{prefix}.scales", padded


def _draw_all(
    shape: ModelShape, layout: Layout, group_size: int, gen: torch.Generator, device: torch.device
) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor, in :func:`_plan` order."""
    import torch

    def dense(rows: int, cols: int, std: float) -> torch.Tensor:
        return torch.randn((rows, cols), generator=gen, device=device, dtype=torch.float16).mul_(std)

    def ones() -> torch.Tensor:
        return torch.ones(shape.hidden_size, dtype=torch.float16, device=device)

    yield "model.embed_tokens.weight", dense(shape.vocab_size, shape.hidden_size, 0.02)
    for index in range(shape.num_hidden_layers):
        prefix = f"model.layers.{index}"
        yield f"{prefix}.input_layernorm.weight", ones()
        for name, in_features, out_features in shape.linear_shapes():
            yield from _draw_linear(
                f"{prefix}.{name}",
                in_features,
                out_features,
                layout=layout,
                group_size=group_size,
                gen=gen,
                device=device,
            )
        yield f"{prefix}.post_attention_layernorm.weight", ones()
    yield "model.norm.weight", ones()
    # Unit-RMS hidden states times N(0, 1/hidden) rows: logits with a standard deviation of about 1.
    yield "lm_head.weight", dense(shape.vocab_size, shape.hidden_size, 1.0 / math.sqrt(shape.hidden_size))


# --- writing ------------------------------------------------------------------------------------------------


def _write_weights(
    out: Path,
    plan: list[_TensorPlan],
    tensors: Iterator[tuple[str, torch.Tensor]],
    max_shard_size: int,
) -> list[str]:
    """Write the shards (and the index when there are several); return the file names written."""
    from safetensors.torch import save_file

    shards = _shard_names(plan, max_shard_size)
    expected = {t.name: t for t in plan}
    files = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    weight_map: dict[str, str] = {}
    for file, names in zip(files, shards, strict=True):
        batch: dict[str, torch.Tensor] = {}
        for want in names:
            name, tensor = next(tensors)
            planned = expected[want]
            # The plan and the drawing code must agree; a mismatch is a bug here, not bad input.
            if name != want or tuple(tensor.shape) != planned.shape:
                raise AssertionError(f"synthetic: drew {name}{list(tensor.shape)}, planned {want}{list(planned.shape)}")
            batch[name] = tensor.cpu() if tensor.device.type != "cpu" else tensor
            weight_map[name] = file
        save_file(batch, str(out / file), metadata={"format": "pt"})
        logger.debug("wrote %s (%d tensors, %.2f GB)", file, len(batch), sum(expected[n].nbytes for n in names) / 1e9)
        del batch
    if len(files) > 1:
        index = {
            "metadata": {"total_size": sum(t.nbytes for t in plan)},
            "weight_map": dict(sorted(weight_map.items())),
        }
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        files.append("model.safetensors.index.json")
    return files


def _write_tokenizer(out: Path, vocab_size: int, max_length: int) -> None:
    """Train a small byte-level BPE offline, pad its vocabulary with ``<extra_i>`` to ``vocab_size``, save it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=min(vocab_size, 1024),
        special_tokens=list(_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_TOKENIZER_TEXTS, trainer)
    data = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    # Ids past the trained vocabulary: plain vocabulary entries that decode to their own text. Encoding never
    # produces them (no merge builds them); a random-weight model generates them all the time.
    for token_id in range(len(vocab), vocab_size):
        vocab[f"<extra_{token_id}>"] = token_id
    padded = Tokenizer.from_str(json.dumps(data))
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=padded,
        bos_token=_SPECIAL_TOKENS[_BOS_ID],
        eos_token=_SPECIAL_TOKENS[_EOS_ID],
        unk_token=_SPECIAL_TOKENS[0],
        model_max_length=max_length,
    )
    fast.save_pretrained(str(out))
    # transformers 5 names its own class (TokenizersBackend), which transformers 4 cannot import; the generic
    # name loads under both.
    config_file = out / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_configs(out: Path, shape: ModelShape, layout: Layout, group_size: int) -> None:
    """config.json (with AutoAWQ's quantization_config) and generation_config.json."""
    from transformers import GenerationConfig, LlamaConfig

    # torch_dtype: transformers 5 maps it to dtype silently; transformers 4 knows only torch_dtype.
    kwargs: dict[str, Any] = {**shape.config_kwargs(), "torch_dtype": "float16"}
    config = LlamaConfig(**kwargs)
    config.architectures = ["LlamaForCausalLM"]
    # The dict AutoAWQ's AwqConfig.to_transformers_dict() writes in save_quantized.
    config.quantization_config = {
        "quant_method": "awq",
        "zero_point": True,
        "group_size": group_size,
        "bits": 4,
        "version": layout.value,
        "modules_to_not_convert": None,
    }
    GenerationConfig.from_model_config(config).save_pretrained(str(out))
    config.save_pretrained(str(out))  # last: a directory without config.json is not a checkpoint yet


# --- validation ---------------------------------------------------------------------------------------------


def _resolve_shape(shape: str | ModelShape, num_layers: int | None) -> ModelShape:
    if isinstance(shape, ModelShape):
        resolved = shape
    elif shape in SHAPES:
        resolved = SHAPES[shape]
    else:
        raise InvalidArgumentError(
            f"shape={shape!r} is not a known model shape: expected one of {', '.join(SHAPES)} (or a ModelShape)"
        )
    if resolved.hidden_size % resolved.num_attention_heads or (
        resolved.num_attention_heads % resolved.num_key_value_heads
    ):
        raise InvalidArgumentError(
            f"shape {resolved.name!r}: hidden_size {resolved.hidden_size} must split into "
            f"{resolved.num_attention_heads} heads, and the heads into {resolved.num_key_value_heads} KV groups"
        )
    if resolved.vocab_size < 512:
        raise InvalidArgumentError(
            f"shape {resolved.name!r}: vocab_size {resolved.vocab_size} is below 512, too small for the "
            "byte-level tokenizer (259 base tokens); use a vocabulary of at least 512"
        )
    return resolved if num_layers is None else resolved.with_layers(num_layers)


def _resolve_layout(version: str | Layout) -> Layout:
    try:
        layout = Layout(str(version).lower().replace("-", "_"))
    except ValueError:
        raise UnknownVersionError(f"version={version!r} is not an AutoAWQ layout: expected 'gemm' or 'gemv'") from None
    if layout not in _SUPPORTED_LAYOUTS:
        raise UnsupportedCheckpointError(
            f"version={layout.value!r}: synthetic checkpoints are written in the gemm or gemv layout; make a gemm "
            "one and convert it with awq_autoselect.formats.convert"
        )
    return layout


def _check_group_size(shape: ModelShape, group_size: int, layout: Layout) -> None:
    if isinstance(group_size, bool) or group_size not in _GROUP_SIZES:
        raise UnsupportedCheckpointError(
            f"group_size={group_size!r}: expected one of {', '.join(map(str, _GROUP_SIZES))} (128 is what every "
            "AWQ kernel runs)"
        )
    if group_size == -1 and layout is Layout.GEMV:
        raise UnsupportedCheckpointError(
            "group_size=-1 with version='gemv': AutoAWQ's GEMV kernels run group sizes 64 and 128 only; use 128"
        )
    for name, in_features, out_features in shape.linear_shapes():
        if group_size != -1 and in_features % group_size:
            raise UnsupportedCheckpointError(
                f"group_size={group_size} does not divide {name}'s in_features {in_features} in shape "
                f"{shape.name!r}: pick a group size that divides {shape.hidden_size} and {shape.intermediate_size}"
            )
        if in_features % NIBBLES_PER_WORD or out_features % NIBBLES_PER_WORD:
            raise InvalidArgumentError(
                f"shape {shape.name!r}: {name} is {in_features}x{out_features}; AWQ packs 8 values per int32, "
                "so both must be multiples of 8"
            )


def make_synthetic_checkpoint(
    out: PathLike,
    *,
    shape: str | ModelShape = "llama-2-7b",
    version: str | Layout = "gemm",
    group_size: int = 128,
    seed: int = 0,
    device: str | None = None,
    overwrite: bool = False,
    num_layers: int | None = None,
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
) -> Path:
    """Write a random-weight AWQ checkpoint in AutoAWQ's format with a real model's shapes.

    See the module docstring for what is written. A llama-2-7b checkpoint is about 3.9 GB.

    Args:
        out: Directory to write; created if missing. It must be new, empty, or a checkpoint awq_autoselect
            wrote (``overwrite`` replaces one; nothing awq_autoselect did not write is ever deleted).
        shape: A name from :data:`SHAPES` (``tiny``, ``llama-2-7b``, ``llama-3-8b``) or a :class:`ModelShape`.
        version: Packed layout: ``gemm`` or ``gemv``.
        group_size: Quantization group size: 32, 64, 128, or -1 (one group per row; gemm only).
        seed: Seed of the ``torch.Generator`` every random number comes from.
        device: Where to draw and pack (``"cuda"`` is much faster for 7B shapes); ``None`` means the CPU. CPU and
            CUDA draw different random streams, so the same seed gives different (equally valid) weights.
        overwrite: Replace ``out`` when it holds a checkpoint awq_autoselect wrote (and nothing else).
        num_layers: Override the shape's number of decoder layers (e.g. 1 for a fast test at 7B width).
        max_shard_size: Largest shard in bytes; more weights than that are split into
            ``model-0000i-of-0000n.safetensors`` with ``model.safetensors.index.json``.

    Returns:
        The checkpoint directory.

    Raises:
        InvalidArgumentError: unknown shape, bad ``num_layers``, ``max_shard_size`` or ``device``, or no CUDA.
        UnknownVersionError: ``version`` is not an AutoAWQ layout name.
        UnsupportedCheckpointError: a layout other than gemm/gemv, or a group size that is unsupported or
            does not divide the layers' input sizes.
        OutputPathError: ``out`` is a file, a non-empty directory awq_autoselect did not write, one it wrote
            while ``overwrite`` is false, or cannot be written.
    """
    import torch

    model = _resolve_shape(shape, num_layers)
    layout = _resolve_layout(version)
    _check_group_size(model, group_size, layout)
    if isinstance(max_shard_size, bool) or max_shard_size < 1:
        raise InvalidArgumentError(f"max_shard_size={max_shard_size!r}: expected a positive number of bytes")
    dev = resolve_device("cpu" if device is None else device)  # None: the CPU, not the current GPU
    root = Path(os.fspath(out)).expanduser()

    start = time.perf_counter()
    plan = _plan(model, layout, group_size)
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    with staged_directory(root, kind="synthetic checkpoint", overwrite=overwrite, what="output directory") as staging:
        with torch.no_grad():
            files = _write_weights(staging, plan, _draw_all(model, layout, group_size, gen, dev), max_shard_size)
        _write_tokenizer(staging, model.vocab_size, model.max_position_embeddings)
        _write_configs(staging, model, layout, group_size)
    logger.info(
        "synthetic %s checkpoint (%s, %d layers, g%d, seed %d) written to %s in %.1f s: %s",
        model.name,
        layout.value,
        model.num_hidden_layers,
        group_size,
        seed,
        root,
        time.perf_counter() - start,
        ", ".join(files),
    )
    return root
