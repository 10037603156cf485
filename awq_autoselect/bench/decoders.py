"""The decode loops a benchmark times.

Three drive prefill and decode steps themselves (:class:`Decoder`): ``eager`` (one forward per token with the
model's dynamic cache, as transformers' ``generate`` runs it), ``graph`` (a static cache, the step replayed from
a CUDA graph) and ``compiled`` (the same with the step compiled by torch.compile: what the fast path of
``load_quantized_auto``'s models runs). Two time a whole ``generate(...)`` call through a streamer stamping every
token (:class:`GenerateDecoder`): ``generate`` (the model's own, as ``load_quantized_auto`` returns it) and
``hf-static`` (transformers' static-cache recipe, whose decode transformers compiles with torch.compile).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from awq_autoselect._awq import hf_model_of
from awq_autoselect.modes import BENCHMARKED

if TYPE_CHECKING:
    import torch

__all__ = ["DECODE_MODES", "Decoder", "EagerDecoder", "GenerateDecoder", "GraphDecoder"]

#: The decode modes a benchmark can time (see the module docstring).
DECODE_MODES = tuple(mode.value for mode in BENCHMARKED)  # awq_autoselect.modes


class Decoder(Protocol):
    """What a timed run drives: a prefill, then one decode step per token."""

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor: ...

    def decode_step(self, token_ids: torch.Tensor) -> torch.Tensor: ...

    def release(self) -> None: ...


class EagerDecoder:
    """``model(ids, use_cache=True)``, then one forward per token with the returned cache (as generate() does)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._model = hf_model_of(model)
        params = inspect.signature(self._model.forward).parameters
        # transformers 5.2x renamed past_key_values to cache (the old name warns); accept either.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        # Like generate(), compute logits for the last position only when the model supports it.
        self._extra: dict[str, object] = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self._cache: object = None

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        self._cache = None
        out = self._model(input_ids=input_ids, use_cache=True, **self._extra)
        self._cache = _output_cache(out)
        logits: torch.Tensor = out.logits[:, -1, :]
        return logits

    def decode_step(self, token_ids: torch.Tensor) -> torch.Tensor:
        kwargs = {self._cache_arg: self._cache, **self._extra}
        out = self._model(input_ids=token_ids, use_cache=True, **kwargs)
        self._cache = _output_cache(out)
        logits: torch.Tensor = out.logits[:, -1, :]
        return logits

    def release(self) -> None:
        self._cache = None


def _output_cache(out: Mapping[str, object]) -> object:
    cache = out.get("cache")
    return cache if cache is not None else out.get("past_key_values")


class GraphDecoder:
    """:class:`awq_autoselect.decode.static.StaticDecoder`: static KV cache, decode from a captured CUDA graph,
    compiled by torch.compile first with ``compile=True``."""

    def __init__(
        self,
        model: torch.nn.Module,
        batch_size: int,
        max_cache_len: int,
        *,
        compile: bool = False,
    ) -> None:
        from awq_autoselect.decode.static import StaticDecoder

        self._decoder = StaticDecoder(
            model, batch_size=batch_size, max_cache_len=max_cache_len, use_cuda_graph=True, compile=compile
        )

    @property
    def graph_enabled(self) -> bool:
        return bool(self._decoder.graph_enabled)

    @property
    def fallback_reason(self) -> str | None:
        reason = self._decoder.fallback_reason
        return None if reason is None else str(reason)

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self._decoder.prefill(input_ids)
        return logits

    def decode_step(self, token_ids: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self._decoder.decode_step(token_ids)
        return logits

    def release(self) -> None:
        """The static cache stays allocated for the next run (it is counted in ``state_bytes``)."""


class _Stamps:
    """A transformers streamer that stamps the time of every ``put`` (the prompt first, then each token).

    Both recipes hand a streamer host copies of the tokens (transformers ``.cpu()``, the fast path a copy it waited
    for), so a stamp is when the token reached the host, as a user's streamer sees it. Stamping does not
    synchronize the device itself: that would stop a loop that queues the next step before handing out a token.
    """

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: object) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        """Nothing to flush."""


class GenerateDecoder:
    """One ``generate(...)`` call of exactly ``new_tokens`` greedy tokens, timed by a streamer at every token.

    ``recipe="generate"``: the model's own ``generate`` (what ``load_quantized_auto`` returns: its fast path, or
    transformers'). ``recipe="hf-static"``: transformers' ``generate`` with ``cache_implementation="static"``,
    which compiles the decode step with torch.compile (its default compile configuration) on CUDA.
    """

    graph_enabled: bool | None = None
    fallback_reason: str | None = None

    def __init__(self, model: torch.nn.Module, *, recipe: str) -> None:
        from transformers import GenerationMixin

        self._model = hf_model_of(model)
        self.recipe = recipe
        self._generate: Callable[..., Any]
        if recipe == "generate":
            self._generate = getattr(self._model, "generate")  # noqa: B009 - maybe an instance's FastGenerate
        else:
            self._generate = functools.partial(GenerationMixin.generate, self._model, cache_implementation="static")

    def run(self, input_ids: torch.Tensor, new_tokens: int, sync: Callable[[], None]) -> list[float]:
        """Generate; return the stamps: the prompt's, then one per token (``new_tokens + 1`` in all); ``sync``
        waits for the device afterwards."""
        stamps = _Stamps()
        self._generate(
            input_ids,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,  # the end-of-sequence token cannot end it early
            do_sample=False,
            pad_token_id=0,
            streamer=stamps,
        )
        sync()
        return stamps.times

    def release(self) -> None:
        """Nothing is kept between runs but what the model itself keeps (its static cache, its compiled graph)."""
