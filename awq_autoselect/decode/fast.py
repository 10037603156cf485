"""Fast decode through a model's own ``generate(...)``: what :func:`~awq_autoselect.loading.load_quantized_auto`
installs on the models it returns.

:class:`FastGenerate` replaces the ``generate`` of one model object (an instance attribute; the class and every
other model are untouched). A request it can serve still goes through transformers' ``generate``, which prepares
it as it always does (the generation config merged with the call's options, special tokens, the attention mask
and positions, ``num_return_sequences`` copies, ``max_length``, the logits processors and stopping criteria, the
prompt handed to a streamer); only the decoding loop is ours, handed over as a ``custom_generate`` callable
(transformers 4.56 and later). The loop prefills once and decodes every further token against a static KV cache
(:class:`~.static.StaticDecoder`): on CUDA the step is replayed from a captured CUDA graph and, by default, compiled
by ``torch.compile`` first. Around the step it does what transformers' sampling loop does, in the same order and
with the same objects: transformers' own processors on the float32 logits, ``argmax`` or ``torch.multinomial`` on
the softmax, pad tokens after a row's end, transformers' own stopping criteria, a streamer fed the tokens as
``[batch]`` tensors. So greedy and seeded sampled tokens equal transformers' own (tested in float32; in bf16 up
to the first near-tie of two logits, docs/fast-decode.md).

Served: greedy and sampled decoding of any batch, padded or not (an ``attention_mask``, or the one transformers
infers from pad tokens), ``num_return_sequences``, every logits processor transformers builds from the
generation config (``repetition_penalty``, ``min_p``, ``top_k``/``top_p``/``typical_p``, ``no_repeat_ngram_size``,
``bad_words_ids``, ...), ``logits_processor=`` / ``stopping_criteria=`` / ``prefix_allowed_tokens_fn=``,
``stop_strings`` with ``tokenizer=``, ``max_time``, ``return_dict_in_generate`` with ``sequences`` only, streamers.
The rest (beam search and its variants, contrastive search, DoLa, assisted decoding, scores, logits, attentions or
hidden states in the output, classifier-free guidance, token healing, ``inputs_embeds``, a cache or other model
inputs passed in) goes to transformers' own ``generate``, eagerly, with a
:class:`~awq_autoselect.errors.FallbackWarning` that names the reason, once per reason.

The static cache is sized per request in steps (256, 512, 1024, ... tokens), so longer requests get a larger cache
(and, compiled, one more compilation). ``FastGenerate.original`` is transformers' ``generate`` of the model;
:func:`uninstall` puts it back.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from awq_autoselect._packages import dist_version, satisfies
from awq_autoselect._quiet import silenced
from awq_autoselect.errors import FallbackWarning, InvalidArgumentError
from awq_autoselect.modes import FAST_DECODE

from .static import StaticDecoder

if TYPE_CHECKING:
    import torch

__all__ = ["DECODE_MODES", "FastGenerate", "install", "uninstall"]

logger = logging.getLogger(__name__)

#: What ``fast_decode`` may be: compiled step in a CUDA graph, the step in a CUDA graph, a static cache eagerly.
DECODE_MODES = tuple(mode.value for mode in FAST_DECODE)  # awq_autoselect.modes

_BUCKET = 256  # smallest static cache; sizes double from here
_KEPT_DECODERS = 2
# transformers hands generate()'s decoding loop to a callable (``custom_generate=``) from this release on.
_LOOP_API = ">=4.56"
_SERVED_MODES = frozenset({"greedy_search", "sample"})

# Generation options the loop does not serve, with the values under which they change nothing; a request with any
# other value goes to transformers' generate (named in the warning). Processors and stopping criteria are not
# listed: the loop runs whatever transformers builds from the config.
_UNSERVED_OPTIONS: Mapping[str, tuple[object, ...]] = {
    "num_beams": (None, 1),
    "num_beam_groups": (None, 1),
    "diversity_penalty": (None, 0.0),
    "constraints": (None,),
    "force_words_ids": (None,),
    "penalty_alpha": (None,),
    "dola_layers": (None,),
    "prompt_lookup_num_tokens": (None,),
    "assistant_early_exit": (None,),
    "use_mtp": (None, False),
    "guidance_scale": (None, 1.0),
    "token_healing": (None, False),
    "output_scores": (None, False),
    "output_logits": (None, False),
    "output_attentions": (None, False),
    "output_hidden_states": (None, False),
    "cache_implementation": (None, "static", "dynamic"),
}
# generate() arguments (and model inputs) the loop does not serve when given (None counts as not given).
_UNSERVED_KWARGS: Mapping[str, tuple[object, ...]] = {
    "assistant_model": (None,),
    "assistant_tokenizer": (None,),
    "synced_gpus": (None, False),
    "negative_prompt_ids": (None,),
    "negative_prompt_attention_mask": (None,),
    "custom_generate": (None,),
    "inputs_embeds": (None,),
    "past_key_values": (None,),
    "cache": (None,),
    "position_ids": (None,),
}
# generate() arguments that are neither generation options nor model inputs: kept out of the config check.
_CALL_KWARGS = frozenset(
    {"streamer", "tokenizer", "logits_processor", "stopping_criteria", "prefix_allowed_tokens_fn", "trust_remote_code"}
)


def _bucket(length: int) -> int:
    size = _BUCKET
    while size < length:
        size *= 2
    return size


def _loop_unsupported(generate: Callable[..., Any]) -> str | None:
    """Why this transformers cannot run our decoding loop inside its ``generate``; ``None`` when it can."""
    version = dist_version("transformers")
    try:
        takes_callable = "custom_generate" in inspect.signature(generate).parameters
    except (TypeError, ValueError):
        takes_callable = False
    if takes_callable and satisfies(version, _LOOP_API):
        return None
    return (
        f"transformers {version}, which cannot hand generate()'s decoding loop to a callable (custom_generate "
        f"needs transformers {_LOOP_API[2:]} or later; upgrade it for the fast path)"
    )


class _Plan(NamedTuple):
    """How one call is served: ``reason`` is why not (``None``: the loop serves it, prepared as ``config``)."""

    reason: str | None
    config: Any = None


class FastGenerate:
    """A model's ``generate``, its decoding loop run on a static-cache, CUDA-graph (and compiled) decoder where it
    can be.

    Args:
        model: a transformers causal LM (``PreTrainedModel``).
        mode: ``"compile"``, ``"graph"`` or ``"eager"`` (:data:`DECODE_MODES`); ``"compile"`` and ``"graph"`` need
            CUDA and otherwise run the static cache eagerly (``"compile"`` still compiles the step).
        on_compiled: called once, with the seconds the first call spent compiling or capturing its decode step.

    Raises:
        InvalidArgumentError: an unknown ``mode``, or a model without ``generate``.
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
        self._unsupported = _loop_unsupported(self.original)
        self._decoders: dict[tuple[int, int], StaticDecoder] = {}
        self._warned: set[str] = set()
        self._on_compiled = on_compiled
        self.last_path = ""
        """How the last call was served: ``"fast"`` or ``"transformers: <why>"``."""

    # --- the request ----------------------------------------------------------------------------------------

    def _plan(self, args: tuple[object, ...], kwargs: dict[str, Any]) -> _Plan:
        """Whether the loop can serve this call, judged on the generation config transformers will use."""
        import torch

        if self._unsupported is not None:
            return _Plan(self._unsupported)
        if len(args) > 1:
            return _Plan("positional arguments after the inputs")
        rest = dict(kwargs)
        inputs = args[0] if args else rest.pop("inputs", None)
        ids = rest.pop("input_ids", None)
        if inputs is not None and ids is not None:
            return _Plan("both inputs and input_ids")
        ids = inputs if ids is None else ids
        if isinstance(ids, torch.Tensor) and (ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool):
            raise InvalidArgumentError(
                f"generate(input_ids=...): token ids are integers, got a {ids.dtype} tensor; pass the tokenizer's "
                "input_ids (torch.long), or ids.long() if these hold token ids"
            )
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[1] == 0:
            return _Plan("input_ids that are not a [batch, tokens] tensor")
        mask = rest.pop("attention_mask", None)
        if mask is not None and (not isinstance(mask, torch.Tensor) or mask.shape != ids.shape):
            return _Plan("an attention_mask that is not a tensor of input_ids' shape")
        for name, neutral in _UNSERVED_KWARGS.items():
            if name in rest and rest.pop(name) not in neutral:
                return _Plan(f"{name}=")
        given = rest.pop("generation_config", None)
        for name in _CALL_KWARGS:
            rest.pop(name, None)
        try:
            # The very preparation generate() makes; its warnings come again from the call itself.
            with silenced("transformers"):
                config, model_kwargs = self.model._prepare_generation_config(given, **rest)  # type: ignore[operator]
        except Exception as exc:  # transformers' own check of the options: its generate raises it again
            return _Plan(f"options transformers refuses ({type(exc).__name__}: {str(exc).strip()[:200]})")
        unused = sorted(set(model_kwargs) - {"output_attentions", "output_hidden_states"})
        if unused:
            return _Plan(f"model arguments {', '.join(unused)}")
        for name, neutral in _UNSERVED_OPTIONS.items():
            value = getattr(config, name, None)
            if value not in neutral:
                return _Plan(f"{name}={value!r}")
        mode = config.get_generation_mode()
        mode = str(getattr(mode, "value", mode))
        if mode not in _SERVED_MODES:
            return _Plan(f"generation mode {mode}")
        if config.stop_strings is not None and kwargs.get("tokenizer") is None:
            return _Plan("stop_strings without tokenizer=")  # transformers' generate says what to pass
        return _Plan(None, config)

    def _fast_kwargs(self, kwargs: dict[str, Any], config: Any) -> dict[str, Any]:
        """The keyword arguments that run this call's decoding loop here, through transformers' generate."""
        call = dict(kwargs)
        call["custom_generate"] = _Loop(self, kwargs.get("streamer"))
        if config.stop_strings is not None:
            # transformers 5 drops tokenizer= when the loop is a callable, before it builds the stop-string
            # criterion: the criterion is built here, as transformers builds it, and handed over as a custom one.
            from transformers import StoppingCriteriaList, StopStringCriteria

            stop = StopStringCriteria(tokenizer=kwargs["tokenizer"], stop_strings=config.stop_strings)
            call["stopping_criteria"] = StoppingCriteriaList([*(kwargs.get("stopping_criteria") or []), stop])
            call["stop_strings"] = None  # an option given last wins over any config's
        return call

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
        plan = self._plan(args, kwargs)
        if plan.reason is None:
            self.last_path = "fast"
            return self.original(*args, **self._fast_kwargs(kwargs, plan.config))
        self.last_path = f"transformers: {plan.reason}"
        if plan.reason not in self._warned:
            self._warned.add(plan.reason)
            warnings.warn(
                f"generate() with {plan.reason}: decoding with transformers' own generate, eagerly (the fast path "
                "serves greedy and sampled decoding; docs/fast-decode.md lists what it serves)",
                FallbackWarning,
                stacklevel=2,
            )
        return self.original(*args, **kwargs)

    def _decode(
        self,
        input_ids: torch.Tensor,
        *,
        processors: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        criteria: Any,
        config: Any,
        streamer: object,
        model_kwargs: Mapping[str, object],
    ) -> object:
        """transformers' sampling loop with the model's forward replaced by the static decoder's prefill and steps.

        ``input_ids`` and the rest are what transformers' ``generate`` prepared (the prompt already went to the
        streamer). Tokens, processors and criteria stay on ``input_ids``' device, as transformers keeps them.
        """
        import torch

        batch, prompt = (int(d) for d in input_ids.shape)
        steps = max(int(config.max_length) - prompt, 1)  # transformers' loop makes its first step whatever the length
        decoder = self._decoder(batch, prompt + steps)
        mask, positions = model_kwargs.get("attention_mask"), model_kwargs.get("position_ids")
        pad = getattr(config, "_pad_token_tensor", None)
        # transformers pads a finished row only when an end-of-sequence criterion can finish it
        pads = pad is not None and any(hasattr(c, "eos_token_id") for c in criteria)
        put = getattr(streamer, "put", None)
        ids = input_ids
        host = _HostCopy(batch, ids.device, tokens=callable(put))
        unfinished = torch.ones(batch, dtype=torch.long, device=ids.device)
        # The decoder runs under inference mode always (a static cache allocated under it, as under AutoAWQ's
        # generate, stays usable); what the caller and the processors see are ordinary tensors, as transformers'.
        with torch.inference_mode():
            logits = decoder.prefill(
                ids,
                mask if isinstance(mask, torch.Tensor) else None,
                positions if isinstance(positions, torch.Tensor) else None,
            )
        for step in range(steps):
            scores = processors(ids, logits.to(device=ids.device, dtype=torch.float32, copy=True))
            if config.do_sample:
                token = torch.multinomial(torch.nn.functional.softmax(scores, dim=-1), num_samples=1).squeeze(1)
            else:
                token = torch.argmax(scores, dim=-1)
            if pads and pad is not None:
                token = token * unfinished + pad * (1 - unfinished)
            ids = torch.cat([ids, token[:, None]], dim=-1)
            unfinished = unfinished & ~criteria(ids, None)
            host.send(token, unfinished)
            more = step + 1 < steps
            if more and host.ahead:  # queue the next step before waiting for this one's token on the host
                with torch.inference_mode():
                    logits = decoder.decode_step(token)
            tokens, alive = host.receive()
            if callable(put) and tokens is not None:
                put(tokens.clone())
            if not alive:  # every row has finished (a step queued ahead is dropped)
                break
            if more and not host.ahead:
                with torch.inference_mode():
                    logits = decoder.decode_step(token)
        if streamer is not None:
            getattr(streamer, "end")()  # noqa: B009 - a transformers streamer
        if self._on_compiled is not None and decoder.setup_seconds is not None:
            self._on_compiled(decoder.setup_seconds)
            self._on_compiled = None
        if config.return_dict_in_generate:
            from transformers.generation.utils import GenerateDecoderOnlyOutput

            # Scores and the rest were not asked for (else transformers decodes); the static cache is the
            # decoder's, reused by the next call, so none is handed out.
            return GenerateDecoderOnlyOutput(sequences=cast("torch.LongTensor", ids))
        return ids


class _Loop:
    """The decoding loop of one ``generate(...)`` call, as transformers calls a ``custom_generate`` callable.

    The streamer is the call's own: transformers 5 does not pass it on to a callable loop (it still hands it the
    prompt itself).
    """

    def __init__(self, fast: FastGenerate, streamer: object) -> None:
        self._fast = fast
        self._streamer = streamer

    def __call__(
        self,
        model: object,
        input_ids: torch.Tensor,
        *,
        logits_processor: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        stopping_criteria: Any,
        generation_config: Any,
        synced_gpus: bool = False,
        streamer: object = None,
        **model_kwargs: object,
    ) -> object:
        return self._fast._decode(
            input_ids,
            processors=logits_processor,
            criteria=stopping_criteria,
            config=generation_config,
            streamer=self._streamer,
            model_kwargs=model_kwargs,
        )


class _HostCopy:
    """What the host needs of each decode step (its tokens for a streamer, whether any row is unfinished),
    copied without stopping the device.

    On CUDA the copies go to pinned memory behind the step's kernels and an event marks them, so the caller can
    queue the next step first (:attr:`ahead`) and then wait for this one's copies only: the GPU never idles
    between steps while Python looks at a token. Elsewhere the copies are plain and nothing runs ahead.
    """

    def __init__(self, batch: int, device: torch.device, *, tokens: bool) -> None:
        import torch

        self.ahead = device.type == "cuda"
        self._tokens = torch.empty(batch, dtype=torch.long, pin_memory=self.ahead) if tokens else None
        self._alive = torch.ones(1, dtype=torch.bool, pin_memory=self.ahead)
        self._event = torch.cuda.Event() if self.ahead else None  # type: ignore[no-untyped-call]

    def send(self, token: torch.Tensor, unfinished: torch.Tensor) -> None:
        """Queue the copies of this step's ``token`` (``[batch]``) and ``unfinished.any()``."""
        if self._tokens is not None:
            self._tokens.copy_(token, non_blocking=self.ahead)
        self._alive.copy_(unfinished.any().reshape(1), non_blocking=self.ahead)
        if self._event is not None:
            self._event.record()

    def receive(self) -> tuple[torch.Tensor | None, bool]:
        """Wait for the last :meth:`send`'s copies: (the tokens on the host or None, whether any is unfinished).

        The tokens tensor is reused by the next send."""
        if self._event is not None:
            self._event.synchronize()
        return self._tokens, bool(self._alive[0])


def install(
    model: torch.nn.Module, mode: str = "compile", *, on_compiled: Callable[[float], None] | None = None
) -> FastGenerate:
    """Give ``model`` (a transformers causal LM) a :class:`FastGenerate` as its ``generate``; returns it.

    ``on_compiled`` is called once, with the seconds the first call spent compiling or capturing its decode step.

    Raises:
        InvalidArgumentError: an unknown ``mode``, or a model without ``generate``.
    """
    fast = FastGenerate(model, mode=mode, on_compiled=on_compiled)
    model.__dict__["generate"] = fast  # an instance attribute: this object only
    logger.info("fast decode (%s) installed on %s", mode, type(model).__name__)
    return fast


def uninstall(model: torch.nn.Module) -> None:
    """Put transformers' own ``generate`` back on ``model``."""
    if isinstance(model.__dict__.get("generate"), FastGenerate):
        del model.__dict__["generate"]
