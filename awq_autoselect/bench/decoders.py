"""The decode loops a benchmark times, behind one interface: eager (as ``generate`` runs) and CUDA graph."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from awq_autoselect._awq import hf_model_of

if TYPE_CHECKING:
    import torch

__all__ = ["Decoder", "EagerDecoder", "GraphDecoder"]


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
    """:class:`awq_autoselect.cudagraph.StaticDecoder` (static KV cache, decode from a captured CUDA graph)."""

    def __init__(self, model: torch.nn.Module, batch_size: int, max_cache_len: int) -> None:
        from awq_autoselect.decode.static import StaticDecoder

        self._decoder = StaticDecoder(model, batch_size=batch_size, max_cache_len=max_cache_len, use_cuda_graph=True)

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
