"""The default fast decode on a real GPU (``pytest -m gpu``): compiled step in a CUDA graph, greedy tokens equal to
transformers' own eager greedy decoding; what chat code sends (a left-padded batch, the model's own repetition
penalty, seeded sampling with min_p and several sequences per prompt) through the same compiled, captured step.

bf16 on the GPU: the tokens are compared over 16 steps. Over hundreds, a near-tie between two bf16 logits can be
broken the other way by the compiled step's rounding, and the runs part from there (docs/fast-decode.md)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from awq_autoselect import FallbackWarning, load_quantized_auto
from awq_autoselect.catalogue import CATALOGUE
from awq_autoselect.decode.fast import FastGenerate
from tests.helpers import CollectingStreamer, QuantizedFactory

pytestmark = pytest.mark.gpu

PROMPT = [[1, 17, 42, 99, 150, 301, 7]]
CHATS = ["the quick brown fox jumps over", "hi", "Sample 3: the dog sleeps while the fox counts stars and writes"]


def _reference(fast: FastGenerate, *args: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' own notes about masks and pad tokens
        return fast.original(*args, **kwargs)


@pytest.mark.parametrize("mode", [None, "graph"])
def test_fast_generate_equals_eager_greedy(quantized: QuantizedFactory, mode: str | None) -> None:
    model: Any
    model, report = load_quantized_auto(quantized(version="gemm", group_size=128), device="cuda", fast_decode=mode)
    assert report.kernel is not None
    # The default: compiled where torch.compile traces the kernel (torch_int4 without AutoAWQ's kernels), else
    # a CUDA graph of the uncompiled step (AutoAWQ's extensions, when they import here).
    expected_mode = mode or ("compile" if CATALOGUE[report.kernel].traceable else "graph")
    assert report.decode == expected_mode
    hf: Any = model.model
    fast = hf.__dict__["generate"]
    assert isinstance(fast, FastGenerate)
    ids = torch.tensor(PROMPT, device="cuda")
    for batch in (ids, torch.cat([ids, ids.flip(1)])):
        got = model.generate(input_ids=batch, max_new_tokens=16, do_sample=False)
        assert fast.last_path == "fast"
        expected = fast.original(batch, max_new_tokens=16, do_sample=False)
        assert torch.equal(got, expected), (got.tolist(), expected.tolist())
    decoder = next(iter(fast._decoders.values()))
    assert decoder.graph_enabled, decoder.fallback_reason
    assert decoder.compiled is (expected_mode == "compile")


def test_fast_generate_stops_at_eos_and_streams_like_transformers(quantized: QuantizedFactory) -> None:
    """The CUDA loop queues each next step before it looks at a token: a stop at an end-of-sequence token and a
    streamer must still see exactly what transformers' generate gives."""
    model: Any
    model, _ = load_quantized_auto(quantized(version="gemm", group_size=128), device="cuda")
    hf: Any = model.model
    fast = hf.__dict__["generate"]
    ids = torch.tensor(PROMPT, device="cuda")
    free = fast.original(ids, max_new_tokens=12, do_sample=False, min_new_tokens=12, pad_token_id=0)
    eos = int(free[0, ids.shape[1] + 3])  # the 4th greedy token ends the sequence (or an earlier equal one)
    streamer = CollectingStreamer()
    got = model.generate(
        input_ids=ids, max_new_tokens=12, do_sample=False, eos_token_id=eos, pad_token_id=0, streamer=streamer
    )
    assert fast.last_path == "fast"
    expected = fast.original(ids, max_new_tokens=12, do_sample=False, eos_token_id=eos, pad_token_id=0)
    assert torch.equal(got, expected), (got.tolist(), expected.tolist())
    assert got.shape[1] < ids.shape[1] + 12  # it did stop early
    assert [v[0] for v in streamer.values[1:]] == got[0, ids.shape[1] :].tolist()
    assert streamer.shapes == [tuple(ids.shape)] + [(1,)] * (got.shape[1] - ids.shape[1])  # transformers' shapes
    assert streamer.ended


@pytest.mark.parametrize("mode", [None, "graph"])
def test_a_left_padded_batch_with_the_models_repetition_penalty(quantized: QuantizedFactory, mode: str | None) -> None:
    """Three prompts of different lengths, left-padded, and a repetition penalty set in the model's generation
    config (Qwen2.5 ships 1.05): compiled and captured (the default) and captured uncompiled, transformers'
    tokens. The graph reads each row's positions and the cache mask from its inputs: an unpadded batch replays the
    same graph."""
    from transformers import AutoTokenizer

    path = quantized(version="gemm", group_size=128)
    model: Any
    model, report = load_quantized_auto(path, device="cuda", fast_decode=mode)
    hf: Any = model.model
    fast = hf.__dict__["generate"]
    hf.generation_config.repetition_penalty = 1.05
    hf.generation_config.use_cache = True  # AutoAWQ saved False: transformers' reference would not use a cache
    tokenizer: Any = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    inputs = tokenizer(CHATS, return_tensors="pt", padding=True).to("cuda")
    assert bool((inputs["attention_mask"] == 0).any())
    for penalty in (1.05, 1.3):
        got = hf.generate(**inputs, max_new_tokens=16, do_sample=False, repetition_penalty=penalty)
        assert fast.last_path == "fast"
        expected = _reference(fast, **inputs, max_new_tokens=16, do_sample=False, repetition_penalty=penalty)
        assert torch.equal(got, expected), (got.tolist(), expected.tolist())
    decoder = next(iter(fast._decoders.values()))
    assert decoder.graph_enabled, decoder.fallback_reason
    assert decoder.compiled is (report.decode == "compile")
    graph = decoder._graph
    assert graph is not None
    unpadded = torch.tensor(PROMPT * 3, device="cuda")
    got = hf.generate(unpadded, max_new_tokens=16, do_sample=False)
    assert torch.equal(got, _reference(fast, unpadded, max_new_tokens=16, do_sample=False))
    assert decoder._graph is graph  # replayed, not captured again


def test_seeded_sampling_with_min_p_and_several_sequences(quantized: QuantizedFactory) -> None:
    """torch.multinomial on the GPU draws from the CUDA generator as transformers' loop does: same seed, same
    processors (temperature, top_p, min_p, the penalty), the same tokens, three sequences per prompt."""
    from transformers import AutoTokenizer

    path = quantized(version="gemm", group_size=128)
    model: Any
    model, _ = load_quantized_auto(path, device="cuda")
    hf: Any = model.model
    fast = hf.__dict__["generate"]
    hf.generation_config.use_cache = True
    tokenizer: Any = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    inputs = tokenizer(CHATS[:2], return_tensors="pt", padding=True).to("cuda")
    options: dict[str, Any] = {
        "max_new_tokens": 16,
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "min_p": 0.05,
        "repetition_penalty": 1.05,
        "num_return_sequences": 3,
    }
    torch.manual_seed(11)
    got = hf.generate(**inputs, **options)
    assert fast.last_path == "fast"
    torch.manual_seed(11)
    expected = _reference(fast, **inputs, **options)
    assert torch.equal(got, expected), (got.tolist(), expected.tolist())
    assert next(iter(fast._decoders.values())).graph_enabled


@pytest.mark.parametrize(
    "kernel", ["gemm", "gemv", "exllama", "exllamav2", "gemm_triton", "torch_int4", "gemm_torch", "gemv_triton"]
)
def test_every_kernel_that_loads_decodes_the_same_tokens_from_its_graph(
    quantized: QuantizedFactory, kernel: str
) -> None:
    """Each kernel that loads here (AutoAWQ's extensions where they import), decoding from a CUDA graph: greedy tokens
    equal to transformers' eager generate on the same model. A kernel right in an eager forward (its probe) can be
    wrong when replayed from a graph (a buffer it allocates or a stream it uses outside the capture)."""
    from awq_autoselect.errors import KernelError

    model: Any
    try:
        model, report = load_quantized_auto(
            quantized(version="gemm", group_size=128), kernel, device="cuda", fallback=False, fast_decode="graph"
        )
    except KernelError as exc:  # not importable or not usable here: nothing to decode with
        pytest.skip(f"{kernel} does not load here: {str(exc)[:200]}")
    assert report.kernel is not None
    assert report.kernel.value == kernel
    fast = model.model.__dict__["generate"]
    assert isinstance(fast, FastGenerate)
    ids = torch.tensor(PROMPT, device="cuda")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = model.generate(input_ids=ids, max_new_tokens=16, do_sample=False)
    assert fast.last_path == "fast"
    decoder = next(iter(fast._decoders.values()))
    if not decoder.graph_enabled:  # the replay check found the graph wrong: eager steps, and a warning that says so
        assert "cannot decode from a CUDA graph" in (decoder.fallback_reason or ""), decoder.fallback_reason
        assert any(issubclass(w.category, FallbackWarning) for w in caught)
    expected = _reference(fast, ids, max_new_tokens=16, do_sample=False)
    assert torch.equal(got, expected), (kernel, decoder.fallback_reason, got.tolist(), expected.tolist())
