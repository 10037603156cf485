"""Single-query decoding with a static KV cache, the decode step captured once as a CUDA graph and replayed.

Why: eager decoding of a 7B model spends about 50 ms per token in Python and kernel launches, far more than the
few milliseconds of GPU work the kernel choice moves (research/h200-measurements.md). Replaying one captured
graph per token removes that overhead; a static cache (fixed addresses) is what makes the step capturable.

Use :func:`generate_with_cuda_graph` for greedy generation, or :class:`StaticDecoder` to drive the steps
yourself. Both take a transformers ``PreTrainedModel`` or AutoAWQ's wrapper (its ``.model`` is used). Where a
graph cannot be used the decoder runs the same static-cache step eagerly and says why in
:attr:`StaticDecoder.fallback_reason`; the tokens are the same either way. docs/cuda-graph.md has the details.

Invariants: importing this module imports no torch (torch and transformers are imported inside functions); the
decoder never synchronizes the GPU per token, except for the copy a caller asks for.
"""

from __future__ import annotations

import inspect
import logging
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from awq_autoselect._awq import fused_modules, hf_model_of
from awq_autoselect.errors import CudaContextPoisonedError, FallbackWarning, InvalidArgumentError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

__all__ = ["InvalidArgumentError", "StaticDecoder", "generate_with_cuda_graph"]


def __dir__() -> list[str]:
    return __all__


logger = logging.getLogger(__name__)

# Eager runs of the step on a side stream before capture: the first may allocate (cuBLAS workspaces, lazily
# compiled kernels); the second sees the steady state the graph must record.
_WARMUP_STEPS = 2


def _positive_int(label: str, value: object, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgumentError(f"{label} must be an int >= {minimum}, got {value!r}")
    return value


def _unwrap(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers model: ``model`` itself, or the ``.model`` of AutoAWQ's ``BaseAWQForCausalLM``."""
    from transformers import PreTrainedModel

    inner = hf_model_of(model)
    if isinstance(inner, PreTrainedModel):
        return inner
    raise InvalidArgumentError(
        f"expected a transformers PreTrainedModel or AutoAWQ's wrapper (with .model), got {type(model).__name__}"
    )


class StaticDecoder:
    """Prefill once, then decode one token per step against a static KV cache, replaying a CUDA graph.

    The decode step is captured on the first :meth:`decode_step` after a :meth:`prefill` (two eager warm-up
    steps on a side stream, then capture) and replayed from then on, also after later prefills (the cache is
    reset in place, so its addresses stay). Where a graph cannot be used the same step runs eagerly:

    - ``use_cuda_graph=False``, or the model is not on a CUDA device (no warning: nothing to act on);
    - the cache has sliding-window layers, whose fill level transformers keeps in Python (logged, no warning);
    - this transformers' ``StaticCache`` has a constructor this module does not know (then the model's own
      dynamic cache is used, eagerly; a :class:`~awq_autoselect.errors.FallbackWarning` says so);
    - capture failed, e.g. a kernel synchronizes the device (a ``FallbackWarning`` carries the error);
    - the captured step, replayed twice before its first use, computed other logits than the step run directly
      (:func:`_check_replay`; a ``FallbackWarning`` gives the difference).

    With ``compile=True`` the decode step is the model's forward compiled by ``torch.compile`` (inductor fuses the
    norms, rotary, activation and residual adds into a few kernels), captured in the same CUDA graph. Compiling
    happens at the first decode step (tens of seconds for a 7B model; inductor caches it on disk for later
    processes); if it fails, the step is captured uncompiled and a ``FallbackWarning`` says why. The compiled step
    computes what the eager one does, rounding like it (inductor's ``emulate_precision_casts``).

    Prompts of different lengths come left-padded with an ``attention_mask`` (what a tokenizer with
    ``padding_side="left"`` gives): each row's positions count its own tokens only, as transformers counts them
    (the mask's cumulative sum), and the decode step reads a mask over the whole static cache that hides the pad
    slots. Both live in tensors the captured step reads, so one graph serves padded and unpadded batches. Greedy or
    not is the caller's choice: this class returns logits.

    Args:
        model: a transformers causal LM, or AutoAWQ's ``BaseAWQForCausalLM`` (not loaded with
            ``fuse_layers=True``: fused layers keep their own cache).
        batch_size: rows of every ``input_ids``.
        max_cache_len: prompt plus generated tokens the cache holds; the graph's attention spans all of it.
        use_cuda_graph: capture and replay the decode step (on CUDA).
        compile: compile the decode step with ``torch.compile`` first (see above).

    Raises:
        InvalidArgumentError: ``model`` is neither kind, holds AutoAWQ fused layers, or the sizes are not positive.
    """

    graph_enabled: bool
    """Whether decode steps replay (or will capture and replay) a CUDA graph."""
    fallback_reason: str | None
    """Why decode steps run eagerly; ``None`` while the graph is used."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        batch_size: int = 1,
        max_cache_len: int,
        use_cuda_graph: bool = True,
        compile: bool = False,
    ) -> None:
        import torch

        self.model = _unwrap(model)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.max_cache_len = _positive_int("max_cache_len", max_cache_len)
        fused = fused_modules(self.model)
        if fused:
            raise InvalidArgumentError(
                f"the model holds AutoAWQ fused layers ({', '.join(fused)}), which keep their own KV cache; "
                "load it with fuse_layers=False to decode with a static cache"
            )
        embeddings = self.model.get_input_embeddings()
        weight = getattr(embeddings, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise InvalidArgumentError(
                f"{type(self.model).__name__} has no input embedding weight to place the cache by"
            )
        self.device = weight.device
        self.dtype = weight.dtype

        params = inspect.signature(self.model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._pass_cache_position = "cache_position" in params
        self._pass_attention_mask = "attention_mask" in params
        self._pass_logits_to_keep = "logits_to_keep" in params
        self._cache, cache_problem = self._make_cache()
        self._past: object = None  # the model's own cache, when no static cache could be built
        sliding = [layer for layer in getattr(self._cache, "layers", ()) or () if getattr(layer, "is_sliding", False)]

        self.graph_enabled = False
        self.fallback_reason = None
        if not use_cuda_graph:
            self.fallback_reason = "use_cuda_graph=False"
        elif cache_problem is not None:
            self.fallback_reason = cache_problem
        elif sliding:
            self.fallback_reason = (
                f"{len(sliding)} cache layers are sliding-window layers, whose fill level transformers keeps in "
                "Python: a replayed graph cannot follow it"
            )
        elif self.device.type != "cuda":
            self.fallback_reason = f"the model is on {self.device}; CUDA graphs need a CUDA device"
        else:
            self.graph_enabled = True
        if cache_problem is not None:
            warnings.warn(f"StaticDecoder: {cache_problem}", FallbackWarning, stacklevel=2)
        if self.fallback_reason is not None:
            logger.info("StaticDecoder decodes eagerly: %s", self.fallback_reason)

        # The step's inputs live at fixed addresses: a replay reads whatever was copied into them.
        self._ids = torch.zeros((batch_size, 1), dtype=torch.long, device=self.device)
        self._positions = torch.zeros((batch_size, 1), dtype=torch.long, device=self.device)
        self._cache_position = torch.zeros(1, dtype=torch.long, device=self.device)
        # Which cache slots each row may attend to (0: a pad slot of its prompt); slots past the prompt are 1, and
        # the causal mask keeps every step from the ones not yet written.
        self._mask = torch.ones((batch_size, max_cache_len), dtype=torch.long, device=self.device)
        # Per row: position minus cache slot (negative for a left-padded row), fixed from the prefill on.
        self._offsets = torch.zeros((batch_size, 1), dtype=torch.long, device=self.device)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_logits: torch.Tensor | None = None
        self.compiled = bool(compile)
        """Whether the decode step is (to be) compiled with torch.compile."""
        self._compiled_forward: Callable[..., object] | None = None
        self.setup_seconds: float | None = None
        """Wall seconds of the first decode step when it compiled the step or captured its graph (None until
        then, and for plain eager steps)."""
        self._length = 0
        self._prefilled = False

    # --- cache -------------------------------------------------------------------------------------------------

    def _make_cache(self) -> tuple[object, str | None]:
        """A transformers StaticCache for this model, or (None, why not)."""
        try:
            from transformers import StaticCache
        except ImportError:
            import transformers

            return None, f"transformers {transformers.__version__} has no StaticCache; decoding with its dynamic cache"
        params = inspect.signature(StaticCache.__init__).parameters
        config = self.model.config
        if "max_batch_size" in params:  # transformers 4.4x-4.55: allocated up front
            cache = StaticCache(
                config=config,
                max_batch_size=self.batch_size,
                max_cache_len=self.max_cache_len,
                device=self.device,
                dtype=self.dtype,
            )
        elif "max_cache_len" in params:  # 4.56+: allocated at the first update, from the keys it sees
            cache = StaticCache(config=config, max_cache_len=self.max_cache_len)
        else:
            import transformers

            return None, (
                f"transformers {transformers.__version__}'s StaticCache{inspect.signature(StaticCache.__init__)} "
                "is not a constructor this version of awq_autoselect knows; decoding with the dynamic cache"
            )
        return cache, None

    def _counters(self) -> list[torch.Tensor]:
        """Per-layer fill counters that transformers 5 keeps as tensors inside its static cache layers."""
        import torch

        found: list[torch.Tensor] = []
        for layer in getattr(self._cache, "layers", ()) or ():
            counter = getattr(layer, "cumulative_length", None)
            if isinstance(counter, torch.Tensor):
                found.append(counter)
        return found

    # --- steps -------------------------------------------------------------------------------------------------

    def _forward(self) -> Callable[..., object]:
        """The decode step's forward: the model's, or its compiled version."""
        if not self.compiled:
            return self.model
        if self._compiled_forward is None:
            import torch

            # Static shapes (a graph per cache size); round like eager so greedy tokens agree with it.
            self._compiled_forward = torch.compile(
                self.model.forward, dynamic=False, options={"emulate_precision_casts": True}
            )
        return self._compiled_forward

    def _run(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        cache_position: torch.Tensor,
        mask: torch.Tensor | None,
        forward: Callable[..., object] | None = None,
    ) -> torch.Tensor:
        kwargs: dict[str, object] = {"input_ids": input_ids, "position_ids": positions, "use_cache": True}
        if mask is not None and self._pass_attention_mask:
            kwargs["attention_mask"] = mask
        if self._cache is not None:
            kwargs[self._cache_kwarg] = self._cache
        elif self._past is not None:
            kwargs[self._cache_kwarg] = self._past
        if self._pass_cache_position:
            kwargs["cache_position"] = cache_position
        if self._pass_logits_to_keep:
            kwargs["logits_to_keep"] = 1
        out: Any = (forward or self.model)(**kwargs)
        if self._cache is None:
            past = getattr(out, "past_key_values", None)
            self._past = getattr(out, "cache", None) if past is None else past
        logits: torch.Tensor = out.logits
        return logits[:, -1, :]

    def _step(self) -> torch.Tensor:
        # A dynamic cache (no static one could be built) sizes its mask by what it holds.
        mask = self._mask if self._cache is not None else self._mask[:, : self._length + 1]
        return self._run(self._ids, self._positions, self._cache_position, mask, self._forward())

    def prefill(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reset the cache, run the prompt, and return the last position's logits ``[batch_size, vocab]``.

        Args:
            input_ids: ``[batch_size, T]`` prompt ids.
            attention_mask: ``[batch_size, T]``, 0 at pad tokens (left padding); ``None``: no padding.
            position_ids: ``[batch_size, T]`` or ``[1, T]``; by default what transformers' ``generate`` gives: the
                mask's cumulative sum minus one (0 at pad tokens), or ``0 .. T-1`` without a mask. Each row's next
                positions continue from its last one.

        Raises:
            InvalidArgumentError: ``input_ids`` is not ``[batch_size, T]`` with ``1 <= T <= max_cache_len``, or
                ``attention_mask`` / ``position_ids`` do not match it.
        """
        import torch

        if input_ids.dim() != 2 or input_ids.shape[0] != self.batch_size or input_ids.shape[1] < 1:
            raise InvalidArgumentError(
                f"prefill expects input_ids [{self.batch_size}, T] with T >= 1, got {list(input_ids.shape)}"
            )
        length = int(input_ids.shape[1])
        if length > self.max_cache_len:
            raise InvalidArgumentError(
                f"the prompt has {length} tokens but max_cache_len is {self.max_cache_len}; build the decoder with "
                "a larger max_cache_len"
            )
        if attention_mask is not None and tuple(attention_mask.shape) != (self.batch_size, length):
            raise InvalidArgumentError(
                f"prefill expects attention_mask [{self.batch_size}, {length}] like input_ids, got "
                f"{list(attention_mask.shape)}"
            )
        if position_ids is not None and (
            position_ids.dim() != 2
            or position_ids.shape[0] not in (1, self.batch_size)
            or position_ids.shape[1] != length
        ):
            raise InvalidArgumentError(
                f"prefill expects position_ids [{self.batch_size}, {length}] or [1, {length}], got "
                f"{list(position_ids.shape)}"
            )
        if self._cache is not None:
            reset = getattr(self._cache, "reset", None)
            if callable(reset):
                reset()
        self._past = None
        ids = input_ids.to(self.device, torch.long)
        mask = None if attention_mask is None else attention_mask.to(self.device, torch.long)
        if position_ids is not None:
            positions = position_ids.to(self.device, torch.long).expand(self.batch_size, -1)
        elif mask is not None:
            positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # transformers' positions for a padded batch
        else:
            positions = torch.arange(length, device=self.device).unsqueeze(0).expand(self.batch_size, -1)
        cache_position = torch.arange(length, device=self.device)
        with torch.no_grad():
            self._mask.fill_(1)
            if mask is not None:
                self._mask[:, :length].copy_(mask)
            self._offsets.copy_(positions[:, -1:] + 1 - length)
            logits = self._run(ids, positions, cache_position, mask)
        self._length = length
        self._prefilled = True
        return logits

    def decode_step(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Append ``token_ids`` ``[batch_size, 1]`` to the cache and return the next logits ``[batch_size, vocab]``.

        The returned tensor is the caller's (a copy of the graph's output when a graph is replayed).

        Raises:
            InvalidArgumentError: no :meth:`prefill` yet, ``token_ids`` of another shape, or the cache is full.
            CudaContextPoisonedError: a failed capture left the CUDA context unusable.
        """
        import torch

        if not self._prefilled:
            raise InvalidArgumentError("decode_step needs a prompt first: call prefill(input_ids)")
        if token_ids.numel() != self.batch_size or token_ids.dim() not in (1, 2):
            raise InvalidArgumentError(
                f"decode_step expects token_ids [{self.batch_size}, 1], got {list(token_ids.shape)}"
            )
        if self._length >= self.max_cache_len:
            raise InvalidArgumentError(
                f"the cache is full ({self.max_cache_len} tokens); build the decoder with a larger max_cache_len"
            )
        self._ids.copy_(token_ids.reshape(self.batch_size, 1))
        torch.add(self._offsets, self._length, out=self._positions)
        self._cache_position.fill_(self._length)
        setup = (self.graph_enabled and self._graph is None) or (self.compiled and self._compiled_forward is None)
        started = time.perf_counter()
        with torch.no_grad():
            if self.graph_enabled and self._graph is None:
                self._capture()
            if self._graph is not None and self._graph_logits is not None:
                self._graph.replay()
                logits = self._graph_logits.clone()
            else:
                logits = self._step()
        if setup and self.setup_seconds is None:
            self.setup_seconds = time.perf_counter() - started
        self._length += 1
        return logits

    def _capture(self) -> None:
        """Warm up on a side stream and capture one decode step; on failure, decode eagerly from now on."""
        import torch

        counters = self._counters()
        saved = [c.clone() for c in counters]

        def restore() -> None:
            # Warm-up steps advance transformers 5's in-cache counters; the real step must see the old ones.
            for counter, value in zip(counters, saved, strict=True):
                counter.copy_(value)

        def capture() -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
            graph = torch.cuda.CUDAGraph()
            side = torch.cuda.Stream(device=self.device)  # type: ignore[no-untyped-call]
            side.wait_stream(torch.cuda.current_stream(self.device))
            called = torch.empty(0)
            with torch.cuda.stream(side):
                for _ in range(_WARMUP_STEPS):  # the first compiles, when compiling
                    called = self._step().float()
                    restore()
            torch.cuda.current_stream(self.device).wait_stream(side)
            with torch.cuda.graph(graph):
                logits = self._step()
            restore()
            _check_replay(graph, logits, called, restore)
            return graph, logits

        try:
            graph, logits = capture()
        except Exception as exc:  # compiling or capturing failed
            restore()
            if not self.compiled:
                self._fail(exc)
                return
            self._check_context(exc)
            self.compiled = False
            warnings.warn(
                f"StaticDecoder: compiling the decode step failed ({type(exc).__name__}: {str(exc).strip()[:300]}); "
                "capturing it uncompiled",
                FallbackWarning,
                stacklevel=3,
            )
            try:
                graph, logits = capture()
            except Exception as again:
                restore()
                self._fail(again)
                return
        restore()
        self._graph = graph
        self._graph_logits = logits
        logger.info("StaticDecoder captured the decode step (batch %d, cache %d)", self.batch_size, self.max_cache_len)

    def _check_context(self, exc: Exception) -> None:
        """Raise CudaContextPoisonedError when ``exc`` left the CUDA context unusable."""
        import torch

        try:
            torch.cuda.synchronize(self.device)
        except Exception as sync_error:
            raise CudaContextPoisonedError(
                f"capturing the decode step failed ({exc}) and left the CUDA context unusable ({sync_error}); "
                "restart the process and decode with use_cuda_graph=False"
            ) from sync_error

    def _fail(self, exc: Exception) -> None:
        self.graph_enabled = False
        self.fallback_reason = f"CUDA graph capture failed ({type(exc).__name__}: {str(exc).strip()[:300]})"
        self._check_context(exc)
        warnings.warn(f"StaticDecoder: {self.fallback_reason}; decoding eagerly", FallbackWarning, stacklevel=3)


#: Largest relative difference (vector norm) between the logits of the replayed decode step and of the same step
#: run directly: the same kernel launches give the same numbers, up to the order of split reductions' atomic adds.
REPLAY_TOLERANCE = 1e-2


class ReplayMismatchError(RuntimeError):
    """The captured decode step, replayed, computes other logits than the same step run directly."""


def _check_replay(
    graph: torch.cuda.CUDAGraph, logits: torch.Tensor, called: torch.Tensor, restore: Callable[[], None]
) -> None:
    """Replay ``graph`` twice (the step writes the same token at the same place of the cache: nothing moves) and
    compare its ``logits`` with ``called``, the step's logits run directly; raise :class:`ReplayMismatchError` when
    they differ. A kernel can compute right when called and wrong when replayed (AutoAWQ's ExLlama kernel did on an
    H100: transformers' tokens from the replayed step's second token on, then NaN logits when sampling); twice,
    because a kernel that accumulates into memory it clears outside the captured work drifts on the second."""
    import torch

    scale = float(torch.linalg.vector_norm(called)) or 1.0
    for _ in range(2):
        graph.replay()
        restore()
        replayed = logits.float()
        difference = float(torch.linalg.vector_norm(replayed - called)) / scale
        if not bool(torch.isfinite(replayed).all()) or not difference <= REPLAY_TOLERANCE:
            raise ReplayMismatchError(
                f"the replayed decode step computes other logits than the step itself (relative difference "
                f"{difference:.3g}): this kernel cannot decode from a CUDA graph"
            )


def generate_with_cuda_graph(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    max_cache_len: int | None = None,
    use_cuda_graph: bool = True,
) -> torch.Tensor:
    """Greedy generation through :class:`StaticDecoder`: ``[B, prompt + max_new_tokens]`` token ids.

    Generates exactly ``max_new_tokens`` (no stop at an end-of-sequence token), on the model's device. The
    tokens equal ``model.generate(input_ids, do_sample=False, max_new_tokens=..., eos_token_id=None)``.

    Args:
        model: a transformers causal LM or AutoAWQ's wrapper.
        input_ids: ``[B, T]`` prompt ids, no padding.
        max_new_tokens: tokens to generate (0 returns the prompt).
        max_cache_len: cache size; default ``T + max_new_tokens``.
        use_cuda_graph: replay a captured decode step (on CUDA).

    Raises:
        InvalidArgumentError: bad shapes or sizes, or ``max_cache_len`` too small for the request.
    """
    import torch

    if input_ids.dim() != 2:
        raise InvalidArgumentError(f"input_ids must be [batch, tokens], got {list(input_ids.shape)}")
    _positive_int("max_new_tokens", max_new_tokens, minimum=0)
    batch, prompt = (int(d) for d in input_ids.shape)
    needed = prompt + max_new_tokens - 1  # the last token is generated, never fed back
    length = max(prompt + max_new_tokens, 1) if max_cache_len is None else max_cache_len
    if length < needed:
        raise InvalidArgumentError(
            f"max_cache_len {length} is too small for {prompt} prompt + {max_new_tokens} new tokens (needs {needed})"
        )
    decoder = StaticDecoder(model, batch_size=batch, max_cache_len=length, use_cuda_graph=use_cuda_graph)
    ids = input_ids.to(decoder.device, torch.long)
    if max_new_tokens == 0:
        return ids.clone()
    generated = [decoder.prefill(ids).argmax(dim=-1, keepdim=True)]
    for _ in range(max_new_tokens - 1):
        generated.append(decoder.decode_step(generated[-1]).argmax(dim=-1, keepdim=True))
    return torch.cat([ids, *generated], dim=1)
