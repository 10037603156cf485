"""Fast decode through a model's own ``generate(...)``: what :func:`~awq_autoselect.loading.load_quantized_auto`
installs on the models it returns.

:class:`FastGenerate` replaces the ``generate`` of one model object (an instance attribute; the class and every
other model are untouched). For the requests it can serve it prefills once and decodes every further token
against a static KV cache, the step replayed from a captured CUDA graph and, on CUDA, compiled by
``torch.compile`` first (:class:`~.static.StaticDecoder`); greedy tokens equal transformers' eager greedy
decoding. It serves: ``input_ids`` of any batch size without padding (an ``attention_mask`` of ones is fine),
greedy or sampled decoding (``temperature``, ``top_k``, ``top_p``), ``max_new_tokens`` / ``max_length``,
``min_new_tokens``, end-of-sequence tokens with ``pad_token_id``, and streamers. The static cache is sized per
request in steps (256, 512, 1024, ... tokens), so longer requests get a larger cache (and, compiled, one more
compilation). Anything else (beam search, padding, logits processors, repetition penalties, scores in the
output, ...) goes to transformers' own ``generate``, eagerly, with a :class:`~awq_autoselect.errors.FallbackWarning`
that names the reason, once per reason.

``FastGenerate.original`` is transformers' ``generate`` of the model; :func:`uninstall` puts it back.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from awq_autoselect.errors import FallbackWarning, InvalidArgumentError

from .static import StaticDecoder

if TYPE_CHECKING:
    import torch

__all__ = ["DECODE_MODES", "FastGenerate", "install", "uninstall"]

logger = logging.getLogger(__name__)

#: What ``fast_decode`` may be: compiled step in a CUDA graph, the step in a CUDA graph, a static cache eagerly.
DECODE_MODES = ("compile", "graph", "eager")

_BUCKET = 256  # smallest static cache; sizes double from here
# transformers' own defaults for what a config leaves unset (transformers 5 keeps them unset until generate)
_DEFAULTS: Mapping[str, object] = {
    "max_length": 20,
    "min_length": 0,
    "do_sample": False,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
}
_KEPT_DECODERS = 2

# Generation options that change what is generated, with the values under which they change nothing. A request
# with any other value goes to transformers' generate (named in the warning).
_NEUTRAL: Mapping[str, tuple[object, ...]] = {
    "num_beams": (None, 1),
    "num_beam_groups": (None, 1),
    "num_return_sequences": (None, 1),
    "penalty_alpha": (None,),
    "dola_layers": (None,),
    "repetition_penalty": (None, 1.0),
    "encoder_repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "typical_p": (None, 1.0),
    "epsilon_cutoff": (None, 0.0),
    "eta_cutoff": (None, 0.0),
    "min_p": (None,),
    "top_h": (None,),
    "diversity_penalty": (None, 0.0),
    "guidance_scale": (None, 1.0),
    "bad_words_ids": (None,),
    "force_words_ids": (None,),
    "constraints": (None,),
    "sequence_bias": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "exponential_decay_length_penalty": (None,),
    "renormalize_logits": (None, False),
    "remove_invalid_values": (None, False),
    "watermarking_config": (None,),
    "stop_strings": (None,),
    "max_time": (None,),
    "token_healing": (None, False),
    "prompt_lookup_num_tokens": (None,),
    "output_attentions": (None, False),
    "output_hidden_states": (None, False),
    "output_scores": (None, False),
    "output_logits": (None, False),
    "return_dict_in_generate": (None, False),
    "cache_implementation": (None, "static", "dynamic"),
}
_UNSERVED_KWARGS = frozenset(
    {
        "logits_processor",
        "stopping_criteria",
        "prefix_allowed_tokens_fn",
        "synced_gpus",
        "assistant_model",
        "negative_prompt_ids",
        "negative_prompt_attention_mask",
        "inputs_embeds",
        "past_key_values",
        "cache",
        "position_ids",
        "custom_generate",
        "tokenizer",
    }
)


def _bucket(length: int) -> int:
    size = _BUCKET
    while size < length:
        size *= 2
    return size


def _eos_ids(value: object) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    import torch

    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.flatten().tolist()]
    return []


class _Request:
    """What one call asks for, when the fast path can serve it."""

    def __init__(self, input_ids: torch.Tensor, config: Any, streamer: object) -> None:
        # ``config`` has every field of _DEFAULTS set (FastGenerate._unserved fills the missing ones).
        self.input_ids = input_ids
        self.streamer = streamer
        prompt = int(input_ids.shape[1])
        if config.max_new_tokens is not None:
            self.new_tokens = int(config.max_new_tokens)
        else:
            self.new_tokens = max(int(config.max_length) - prompt, 0)
        if config.min_new_tokens is not None:
            self.min_new = int(config.min_new_tokens)
        else:
            self.min_new = max(int(config.min_length) - prompt, 0)
        self.sample = bool(config.do_sample)
        self.temperature = float(config.temperature)
        self.top_k = int(config.top_k)
        self.top_p = float(config.top_p)
        self.eos = _eos_ids(config.eos_token_id)
        pad = config.pad_token_id
        self.pad = int(pad) if pad is not None else (self.eos[0] if self.eos else 0)


class FastGenerate:
    """A model's ``generate``, served by a static-cache, CUDA-graph (and compiled) decoder where it can be.

    Args:
        model: a transformers causal LM (``PreTrainedModel``).
        mode: ``"compile"``, ``"graph"`` or ``"eager"`` (:data:`DECODE_MODES`); ``"compile"`` and ``"graph"`` need
            CUDA and otherwise run the static cache eagerly.
        on_compiled: called once, with the seconds the first call spent compiling or capturing its decode step.

    Raises:
        InvalidArgumentError: an unknown ``mode``.
    """

    def __init__(
        self, model: torch.nn.Module, *, mode: str = "compile", on_compiled: Callable[[float], None] | None = None
    ) -> None:
        if mode not in DECODE_MODES:
            raise InvalidArgumentError(f"fast_decode={mode!r}: expected one of {', '.join(DECODE_MODES)} or False")
        self.model = model
        self.mode = mode
        generate = getattr(type(model), "generate", None)  # transformers' own, whatever this instance was given
        if generate is None:
            raise InvalidArgumentError(f"{type(model).__name__} has no generate(): pass a transformers causal LM")
        self.original: Callable[..., Any] = generate.__get__(model)
        self._decoders: dict[tuple[int, int], StaticDecoder] = {}
        self._warned: set[str] = set()
        self._on_compiled = on_compiled
        self.last_path = ""
        """How the last call was served: ``"fast"`` or ``"transformers: <why>"``."""

    # --- the request ----------------------------------------------------------------------------------------

    def _unserved(self, args: tuple[object, ...], kwargs: dict[str, Any]) -> tuple[str | None, _Request | None]:
        """(why the fast path cannot serve this call, None) or (None, the request)."""
        import torch

        if len(args) > 1:
            return "positional arguments after the inputs", None
        inputs = args[0] if args else kwargs.pop("inputs", None)
        ids = kwargs.pop("input_ids", None)
        ids = inputs if ids is None else ids
        if isinstance(ids, torch.Tensor) and (ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool):
            raise InvalidArgumentError(
                f"generate(input_ids=...): token ids are integers, got a {ids.dtype} tensor; pass the tokenizer's "
                "input_ids (torch.long), or ids.long() if these hold token ids"
            )
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[1] == 0:
            return "input_ids that are not a [batch, tokens] tensor", None
        given = kwargs.pop("generation_config", None)
        base = given if given is not None else getattr(self.model, "generation_config", None)
        if base is None:
            return "a model without a generation_config", None
        config = copy.deepcopy(base)
        streamer = kwargs.pop("streamer", None)
        mask = kwargs.pop("attention_mask", None)
        for name in sorted(set(kwargs) & _UNSERVED_KWARGS):
            return f"{name}=", None
        unused = config.update(**kwargs)
        if unused:
            return f"model arguments {', '.join(sorted(unused))}", None
        for name, value in _DEFAULTS.items():
            if getattr(config, name, None) is None:
                setattr(config, name, value)
        for name, neutral in _NEUTRAL.items():
            value = getattr(config, name, None)
            if value not in neutral:
                return f"{name}={value!r}", None
        if mask is not None and not bool(torch.as_tensor(mask).all()):
            return "an attention_mask with padding (prompts of different lengths)", None
        request = _Request(ids, config, streamer)
        if request.sample and request.temperature <= 0:
            return f"temperature={request.temperature} with do_sample=True", None
        return None, request

    # --- the decoder ----------------------------------------------------------------------------------------

    def _decoder(self, batch: int, length: int) -> StaticDecoder:
        key = (batch, _bucket(length))
        decoder = self._decoders.get(key)
        if decoder is None:
            while len(self._decoders) >= _KEPT_DECODERS:  # bound the memory held in static caches
                self._decoders.pop(next(iter(self._decoders)))
            decoder = StaticDecoder(
                self.model,
                batch_size=batch,
                max_cache_len=key[1],
                use_cuda_graph=self.mode in ("compile", "graph"),
                compile=self.mode == "compile",
            )
            self._decoders[key] = decoder
        return decoder

    # --- the call -------------------------------------------------------------------------------------------

    def __call__(self, *args: object, **kwargs: Any) -> Any:
        why, request = self._unserved(args, dict(kwargs))
        if why is not None or request is None:
            self.last_path = f"transformers: {why}"
            if why not in self._warned:
                self._warned.add(str(why))
                warnings.warn(
                    f"generate() with {why}: decoding with transformers' own generate, eagerly (the fast path serves "
                    "greedy and sampled decoding of unpadded prompts)",
                    FallbackWarning,
                    stacklevel=2,
                )
            return self.original(*args, **kwargs)
        self.last_path = "fast"
        return self._generate(request)

    def _next(self, logits: torch.Tensor, step: int, request: _Request, eos: torch.Tensor | None) -> torch.Tensor:
        """The next token per sequence, as transformers' processors and sampling would choose it (``eos``: the
        request's end-of-sequence ids, on the device)."""
        import torch

        suppress = step < request.min_new and eos is not None
        if not request.sample and not suppress:
            return logits.argmax(dim=-1, keepdim=True)  # the same index as in float32: the cast is exact
        scores = logits.float()
        if suppress and eos is not None:
            scores.index_fill_(1, eos, -float("inf"))
        if not request.sample:
            return scores.argmax(dim=-1, keepdim=True)
        if request.temperature != 1.0:
            scores = scores / request.temperature
        if request.top_k > 0:
            k = min(request.top_k, scores.shape[-1])
            kth = torch.topk(scores, k, dim=-1).values[..., -1, None]
            scores = scores.masked_fill(scores < kth, -float("inf"))
        if request.top_p < 1.0:
            ordered, order = torch.sort(scores, descending=False, dim=-1)
            cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
            remove = cumulative <= 1 - request.top_p
            remove[..., -1:] = False  # keep at least one token
            scores = scores.masked_fill(remove.scatter(-1, order, remove), -float("inf"))
        return torch.multinomial(scores.softmax(dim=-1), num_samples=1)

    def _generate(self, request: _Request) -> torch.Tensor:
        import torch

        ids = request.input_ids
        batch, prompt = (int(d) for d in ids.shape)
        streamer = request.streamer
        put = getattr(streamer, "put", None)
        if callable(put):
            put(ids.cpu())
        if request.new_tokens == 0:
            if streamer is not None:
                getattr(streamer, "end")()  # noqa: B009 - a transformers streamer
            return ids
        decoder = self._decoder(batch, prompt + request.new_tokens)
        out = torch.empty((batch, request.new_tokens), dtype=torch.long, device=decoder.device)
        unfinished = torch.ones((batch, 1), dtype=torch.bool, device=decoder.device)
        eos = torch.tensor(request.eos, device=decoder.device) if request.eos else None
        host = _HostCopy(batch, decoder.device, tokens=callable(put), alive=eos is not None)
        produced = request.new_tokens
        # Inference mode always: a static cache made under it (AutoAWQ's generate enters it) stays usable.
        with torch.inference_mode():
            logits = decoder.prefill(ids)
            for step in range(request.new_tokens):
                token = self._next(logits, step, request, eos)
                if eos is not None:
                    token = token.masked_fill(~unfinished, request.pad)
                    unfinished = unfinished & ~torch.isin(token, eos)
                out[:, step : step + 1] = token
                host.send(token, unfinished)
                more = step + 1 < request.new_tokens
                if more and host.ahead:  # queue the next step before waiting for this one's token on the host
                    logits = decoder.decode_step(token)
                tokens, alive = host.receive()
                if callable(put) and tokens is not None:
                    put(tokens.clone())
                if not alive:  # every sequence has ended (a step queued ahead is dropped)
                    produced = step + 1
                    break
                if more and not host.ahead:
                    logits = decoder.decode_step(token)
        if streamer is not None:
            getattr(streamer, "end")()  # noqa: B009 - a transformers streamer
        if self._on_compiled is not None and decoder.setup_seconds is not None:
            self._on_compiled(decoder.setup_seconds)
            self._on_compiled = None
        return torch.cat([ids.to(decoder.device), out[:, :produced]], dim=1)


class _HostCopy:
    """What the host needs of each decode step (its tokens for a streamer, whether any sequence is unfinished),
    copied without stopping the device.

    On CUDA the copies go to pinned memory behind the step's kernels and an event marks them, so the caller can
    queue the next step first (:attr:`ahead`) and then wait for this one's copies only: the GPU never idles
    between steps while Python looks at a token. Elsewhere the copies are plain and nothing runs ahead.
    """

    def __init__(self, batch: int, device: torch.device, *, tokens: bool, alive: bool) -> None:
        import torch

        self.ahead = device.type == "cuda"
        self._tokens = torch.empty((batch, 1), dtype=torch.long, pin_memory=self.ahead) if tokens else None
        self._alive = torch.ones(1, dtype=torch.bool, pin_memory=self.ahead) if alive else None
        self._event = torch.cuda.Event() if self.ahead else None  # type: ignore[no-untyped-call]

    def send(self, token: torch.Tensor, unfinished: torch.Tensor) -> None:
        """Queue the copies of this step's ``token`` and ``unfinished.any()``."""
        if self._tokens is not None:
            self._tokens.copy_(token, non_blocking=self.ahead)
        if self._alive is not None:
            self._alive.copy_(unfinished.any().reshape(1), non_blocking=self.ahead)
        if self._event is not None:
            self._event.record()

    def receive(self) -> tuple[torch.Tensor | None, bool]:
        """Wait for the last :meth:`send`'s copies: (the tokens on the host or None, whether any is unfinished).

        The tokens tensor is reused by the next send."""
        if self._event is not None:
            self._event.synchronize()
        return self._tokens, self._alive is None or bool(self._alive[0])


def install(
    model: torch.nn.Module, mode: str = "compile", *, on_compiled: Callable[[float], None] | None = None
) -> FastGenerate:
    """Give ``model`` (a transformers causal LM) a :class:`FastGenerate` as its ``generate``; returns it."""
    fast = FastGenerate(model, mode=mode, on_compiled=on_compiled)
    model.__dict__["generate"] = fast  # an instance attribute: this object only
    logger.info("fast decode (%s) installed on %s", mode, type(model).__name__)
    return fast


def uninstall(model: torch.nn.Module) -> None:
    """Put transformers' own ``generate`` back on ``model``."""
    if isinstance(model.__dict__.get("generate"), FastGenerate):
        del model.__dict__["generate"]
