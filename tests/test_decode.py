"""StaticDecoder and generate_with_cuda_graph on CPU: the static-cache step (eager) against transformers' own.

On CPU there is no CUDA graph; the decoder runs the very step it would capture, on the same static tensors.
The capture and replay themselves are covered by tests/test_torch_int4_gpu.py.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

from awq_autoselect import FallbackWarning
from awq_autoselect.decode.static import StaticDecoder, generate_with_cuda_graph
from awq_autoselect.errors import InvalidArgumentError
from tests.helpers import UnknownStaticCache, hf_greedy


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    loaded: torch.nn.Module = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    return loaded.to(torch.float32).eval()


PROMPTS = {
    "one": torch.tensor([[1, 17, 42, 99, 150, 301, 7]]),
    "batch": torch.tensor([[1, 17, 42, 99, 150], [3, 200, 11, 5, 480], [77, 77, 77, 2, 9]]),
    "single-token": torch.tensor([[42]]),
}


@pytest.mark.parametrize("prompt", sorted(PROMPTS))
@pytest.mark.parametrize("use_cuda_graph", [True, False])
def test_greedy_tokens_equal_generate(model: torch.nn.Module, prompt: str, use_cuda_graph: bool) -> None:
    ids = PROMPTS[prompt]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a CPU run is not a fallback anyone must act on
        out = generate_with_cuda_graph(model, ids, 12, use_cuda_graph=use_cuda_graph)
    assert out.shape == (ids.shape[0], ids.shape[1] + 12)
    assert torch.equal(out, hf_greedy(model, ids, 12))


def test_decode_logits_equal_a_full_forward(model: torch.nn.Module) -> None:
    ids = torch.tensor([[1, 17, 42, 99, 150, 301, 7, 255, 12, 64]])
    decoder = StaticDecoder(model, max_cache_len=16)
    steps = [decoder.prefill(ids[:, :6])]
    steps += [decoder.decode_step(ids[:, i : i + 1]) for i in range(6, 10)]
    with torch.no_grad():
        full = model(ids).logits
    for offset, logits in enumerate(steps):
        assert logits.shape == (1, full.shape[-1])
        torch.testing.assert_close(logits, full[:, 5 + offset], rtol=1e-4, atol=1e-4)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """transformers' positions for a padded batch: each row counts its own tokens (0 at pad tokens)."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def test_a_left_padded_batch_decodes_like_a_full_forward(model: torch.nn.Module) -> None:
    """Rows of 6, 4 and 2 tokens, left-padded: the prefill and every step read per-row positions and a cache mask
    that hides the pad slots, so each step's logits are the full sequence's forward with its mask."""
    ids = torch.tensor([[1, 17, 42, 99, 150, 301], [0, 0, 3, 200, 11, 5], [0, 0, 0, 0, 77, 9]])
    mask = (ids != 0).long()
    following = torch.tensor([[7, 8, 9, 10], [11, 12, 13, 14], [15, 16, 17, 18]])
    decoder = StaticDecoder(model, batch_size=3, max_cache_len=16)
    steps = [decoder.prefill(ids, mask)]
    steps += [decoder.decode_step(following[:, i : i + 1]) for i in range(4)]
    full = torch.cat([ids, following], dim=1)
    full_mask = torch.cat([mask, torch.ones_like(following)], dim=1)
    with torch.no_grad():
        reference = model(full, attention_mask=full_mask, position_ids=_positions(full_mask)).logits
    for offset, logits in enumerate(steps):
        torch.testing.assert_close(logits, reference[:, ids.shape[1] - 1 + offset], rtol=1e-4, atol=1e-4)
    # The padding is invisible: a padded row decodes as that row alone.
    alone = StaticDecoder(model, max_cache_len=16)
    row = [alone.prefill(ids[2:, 4:])] + [alone.decode_step(following[2:, i : i + 1]) for i in range(4)]
    for padded, single in zip(steps, row, strict=True):
        torch.testing.assert_close(padded[2:], single, rtol=1e-4, atol=1e-4)


def test_greedy_decoding_of_a_padded_batch_equals_generate(model: torch.nn.Module) -> None:
    ids = torch.tensor([[1, 17, 42, 99, 150, 301], [0, 0, 0, 200, 11, 5]])
    mask = (ids != 0).long()
    decoder = StaticDecoder(model, batch_size=2, max_cache_len=24)
    tokens = [decoder.prefill(ids, mask).argmax(-1, keepdim=True)]
    for _ in range(11):
        tokens.append(decoder.decode_step(tokens[-1]).argmax(-1, keepdim=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        expected = model.generate(  # type: ignore[operator]
            ids, attention_mask=mask, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0
        )
    assert torch.equal(torch.cat([ids, *tokens], dim=1), expected)
    # The same decoder, unpadded again: the mask of the last prompt is gone.
    plain = PROMPTS["batch"][:2]
    tokens = [decoder.prefill(plain).argmax(-1, keepdim=True)]
    for _ in range(7):
        tokens.append(decoder.decode_step(tokens[-1]).argmax(-1, keepdim=True))
    assert torch.equal(torch.cat([plain, *tokens], dim=1), hf_greedy(model, plain, 8))


def test_prefill_resets_the_cache(model: torch.nn.Module) -> None:
    decoder = StaticDecoder(model, max_cache_len=12)
    ids = torch.tensor([[4, 8, 15, 16]])
    first = decoder.prefill(ids)
    after_one = decoder.decode_step(first.argmax(-1, keepdim=True))
    decoder.decode_step(after_one.argmax(-1, keepdim=True))
    assert torch.equal(decoder.prefill(ids), first)
    assert torch.equal(decoder.decode_step(first.argmax(-1, keepdim=True)), after_one)


def test_accepts_token_ids_as_a_vector(model: torch.nn.Module) -> None:
    decoder = StaticDecoder(model, batch_size=2, max_cache_len=8)
    decoder.prefill(torch.tensor([[1, 2], [3, 4]]))
    assert decoder.decode_step(torch.tensor([5, 6])).shape[0] == 2


@pytest.mark.parametrize(
    ("use_cuda_graph", "reason"),
    [(False, "use_cuda_graph=False"), (True, "the model is on cpu; CUDA graphs need a CUDA device")],
)
def test_fallback_reason_says_why_decoding_is_eager(model: torch.nn.Module, use_cuda_graph: bool, reason: str) -> None:
    decoder = StaticDecoder(model, max_cache_len=8, use_cuda_graph=use_cuda_graph)
    assert decoder.graph_enabled is False
    assert decoder.fallback_reason == reason


def test_sliding_window_models_decode_eagerly_with_a_reason() -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "mistral",
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=6,  # shorter than prompt + output, so the window matters
    )
    torch.manual_seed(0)
    mistral: torch.nn.Module = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    mistral.eval()
    decoder = StaticDecoder(mistral, max_cache_len=24)
    assert decoder.graph_enabled is False
    assert decoder.fallback_reason is not None
    assert "sliding-window" in decoder.fallback_reason
    ids = torch.tensor([[3, 14, 15, 92, 65, 35, 89, 79, 32]])
    assert torch.equal(generate_with_cuda_graph(mistral, ids, 12), hf_greedy(mistral, ids, 12))


def test_accepts_autoawq_wrapper(model: torch.nn.Module) -> None:
    from awq.models.llama import LlamaAWQForCausalLM

    wrapper = LlamaAWQForCausalLM(model, "llama", False, model.config, None, None)
    ids = PROMPTS["one"]
    assert StaticDecoder(wrapper, max_cache_len=8).model is model
    assert torch.equal(generate_with_cuda_graph(wrapper, ids, 4), hf_greedy(model, ids, 4))


def test_generate_zero_tokens_returns_the_prompt(model: torch.nn.Module) -> None:
    ids = PROMPTS["one"]
    assert torch.equal(generate_with_cuda_graph(model, ids, 0), ids)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: StaticDecoder(object(), max_cache_len=8), "PreTrainedModel or AutoAWQ's wrapper"),  # type: ignore[arg-type]
        (lambda m: StaticDecoder(m, max_cache_len=0), "max_cache_len must be an int >= 1"),
        (lambda m: StaticDecoder(m, batch_size=0, max_cache_len=8), "batch_size must be an int >= 1"),
        (lambda m: StaticDecoder(m, max_cache_len=8).decode_step(torch.tensor([[1]])), "call prefill"),
        (lambda m: StaticDecoder(m, max_cache_len=4).prefill(torch.tensor([[1, 2, 3, 4, 5]])), "max_cache_len is 4"),
        (lambda m: StaticDecoder(m, batch_size=2, max_cache_len=8).prefill(torch.tensor([[1, 2]])), r"\[2, T\]"),
        (lambda m: StaticDecoder(m, max_cache_len=8).prefill(torch.tensor([1, 2])), r"\[1, T\]"),
        (
            lambda m: StaticDecoder(m, batch_size=2, max_cache_len=8).prefill(
                torch.ones(2, 3, dtype=torch.long), torch.ones(2, 2)
            ),
            r"attention_mask \[2, 3\] like input_ids, got \[2, 2\]",
        ),
        (
            lambda m: StaticDecoder(m, max_cache_len=8).prefill(
                torch.ones(1, 3, dtype=torch.long), None, torch.ones(3)
            ),
            r"position_ids \[1, 3\] or \[1, 3\], got \[3\]",
        ),
        (lambda m: generate_with_cuda_graph(m, torch.tensor([[1, 2]]), -1), "max_new_tokens must be an int >= 0"),
        (lambda m: generate_with_cuda_graph(m, torch.tensor([1, 2]), 3), r"must be \[batch, tokens\]"),
        (lambda m: generate_with_cuda_graph(m, torch.tensor([[1, 2]]), 5, max_cache_len=4), "needs 6"),
    ],
)
def test_bad_requests_are_refused(model: torch.nn.Module, call: object, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        call(model)  # type: ignore[operator]


def test_a_full_cache_is_refused(model: torch.nn.Module) -> None:
    decoder = StaticDecoder(model, max_cache_len=3)
    logits = decoder.prefill(torch.tensor([[1, 2]]))
    decoder.decode_step(logits.argmax(-1, keepdim=True))
    with pytest.raises(InvalidArgumentError, match=r"the cache is full \(3 tokens\)"):
        decoder.decode_step(torch.tensor([[1]]))
    with pytest.raises(InvalidArgumentError, match=r"token_ids \[1, 1\]"):
        decoder.decode_step(torch.tensor([[1, 2]]))


def test_exactly_filling_the_cache_works(model: torch.nn.Module) -> None:
    ids = PROMPTS["one"]
    out = generate_with_cuda_graph(model, ids, 5, max_cache_len=ids.shape[1] + 4)
    assert torch.equal(out, hf_greedy(model, ids, 5))


def test_unknown_static_cache_falls_back_to_the_dynamic_cache(
    model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    monkeypatch.setattr(transformers, "StaticCache", UnknownStaticCache)
    ids = PROMPTS["batch"]
    with pytest.warns(FallbackWarning, match="is not a constructor this version of awq_autoselect knows"):
        decoder = StaticDecoder(model, batch_size=3, max_cache_len=20)
    assert decoder.graph_enabled is False
    assert decoder.fallback_reason is not None
    assert "decoding with the dynamic cache" in decoder.fallback_reason
    tokens = [decoder.prefill(ids).argmax(-1, keepdim=True)]
    for _ in range(7):
        tokens.append(decoder.decode_step(tokens[-1]).argmax(-1, keepdim=True))
    assert torch.equal(torch.cat([ids, *tokens], dim=1), hf_greedy(model, ids, 8))
    decoder.prefill(ids[:, :2])  # a new prompt starts a new dynamic cache
    assert decoder.decode_step(tokens[0]).shape == (3, 512)


def test_importing_the_module_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, awq_autoselect.decode.static; print('torch' in sys.modules, 'transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


class _Replays:
    """Stands in for a captured CUDA graph (none exists on a CPU): each replay writes ``logits`` as ``step`` says.
    The same check runs on real graphs in tests/gpu/test_fast_decode.py."""

    def __init__(self, logits: torch.Tensor, step: str) -> None:
        self.logits, self.step, self.replays = logits, step, 0

    def replay(self) -> None:
        self.replays += 1
        base = torch.arange(6.0).reshape(2, 3)
        if self.step == "same":
            self.logits.copy_(base)
        elif self.step == "accumulate":  # adds into memory cleared only outside the graph
            self.logits.add_(base)
        else:
            self.logits.fill_(float("nan"))


@pytest.mark.parametrize(("step", "replays", "error"), [("same", 2, None), ("accumulate", 2, "1"), ("nan", 1, "nan")])
def test_a_replayed_step_that_computes_other_logits_is_refused(step: str, replays: int, error: str | None) -> None:
    from awq_autoselect.decode.static import ReplayMismatchError, _check_replay

    called = torch.arange(6.0).reshape(2, 3)
    logits = torch.zeros(2, 3)
    restored: list[int] = []
    graph = _Replays(logits, step)
    if error is None:
        _check_replay(graph, logits, called, lambda: restored.append(1))  # type: ignore[arg-type]
    else:
        with pytest.raises(ReplayMismatchError, match=rf"relative difference {error}.*cannot decode from a CUDA graph"):
            _check_replay(graph, logits, called, lambda: restored.append(1))  # type: ignore[arg-type]
    assert graph.replays == replays
    assert len(restored) == replays  # the cache's counters put back after every replay
