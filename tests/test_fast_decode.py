"""The fast decode path on CPU: fused projections (exact), FastGenerate behind generate(), the default on load.

On a CPU the fast path runs its static cache eagerly (CUDA graphs need CUDA); every token it produces is checked
against transformers' own eager generate on the same model, greedy and seeded sampling: what chat code sends
(the model's own repetition penalty, left-padded batches, min_p, stop strings, several sequences per prompt, a
chat template's output, a streamer read from another thread) and every logits processor transformers builds.
The compiled step (torch.compile) is checked on CPU too. Real checkpoints, quantized by AutoAWQ at test time.
"""

from __future__ import annotations

import re
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from awq_autoselect import FallbackWarning, load_quantized_auto
from awq_autoselect.decode.fast import FastGenerate, install, uninstall
from awq_autoselect.errors import InvalidArgumentError
from awq_autoselect.kernels.fusion import FusedProjection, fuse_projections
from awq_autoselect.kernels.torch_int4 import TorchInt4Linear
from tests.helpers import CollectingStreamer, QuantizedFactory

PROMPT = torch.tensor([[1, 17, 42, 99, 150, 301, 7]])
BATCH = torch.tensor([[1, 17, 42, 99, 150, 301, 7], [5, 6, 7, 8, 9, 10, 11]])
CHATS = ["the quick brown fox jumps over", "hi", "Sample 3: the dog sleeps while the fox counts stars and writes"]
# A chat template of the usual shape (role, content, generation prompt) for the tiny tokenizer, which has none.
CHAT_TEMPLATE = (
    "{% for message in messages %}<s>{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)


@pytest.fixture(scope="module")
def loaded(quantized: QuantizedFactory) -> Any:
    """A real AutoAWQ checkpoint loaded with torch_int4 on the CPU, its generate() the fast one (the default).

    In float32: a random-weight tiny model's bf16 logits hold exact ties that rounding order breaks either way
    over hundreds of tokens; float32 has none, so every token can be compared exactly.
    """
    model, report = load_quantized_auto(
        quantized(version="gemm", group_size=128), "torch_int4", device="cpu", torch_dtype=torch.float32
    )
    assert report.decode == "eager"
    hf: Any = model.model
    assert isinstance(hf.__dict__.get("generate"), FastGenerate)
    # AutoAWQ saves do_sample=true in generation_config.json, which the model gets; these tests compare greedy
    # tokens unless they ask for sampling.
    assert hf.generation_config.do_sample is True
    hf.generation_config.do_sample = False
    # AutoAWQ's quantization saved use_cache=False, with which transformers' reference recomputes the whole
    # sequence for every token (slow; assisted decoding refuses it); published checkpoints decode with a cache.
    # The fast path decodes with its static cache either way (the bf16 test below keeps the saved setting).
    hf.generation_config.use_cache = True
    return hf


def _reference(model: Any, ids: torch.Tensor | None, **kwargs: Any) -> Any:
    """transformers' own generate on the same model (inputs in ``ids`` or in ``kwargs``)."""
    fast = model.__dict__["generate"]
    assert isinstance(fast, FastGenerate)
    args = () if ids is None else (ids,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' own notes about masks and pad tokens
        return fast.original(*args, **kwargs)


def test_fusion_is_exact_and_counted(quantized: QuantizedFactory) -> None:
    model, report = load_quantized_auto(
        quantized(version="gemm", group_size=64), "torch_int4", device="cpu", fast_decode=False
    )
    hf: Any = model.model
    assert any("2 groups" in c or "4 groups" in c for c in report.conversions)  # q/k/v and gate/up per layer
    layer: Any = hf.model.layers[0]
    assert isinstance(layer.self_attn.q_proj, FusedProjection)
    assert layer.self_attn.q_proj.fused is layer.self_attn.v_proj.fused
    assert isinstance(layer.self_attn.o_proj, TorchInt4Linear)  # o_proj and down_proj have no sibling
    # Members fed another input than their siblings compute their own slice: never a wrong number.
    x = torch.randn(3, layer.self_attn.q_proj.in_features).to(torch.bfloat16)
    y = torch.randn_like(x)
    q_x, k_y = layer.self_attn.q_proj(x), layer.self_attn.k_proj(y)
    full_x, full_y = layer.self_attn.q_proj.fused(x), layer.self_attn.q_proj.fused(y)
    q = layer.self_attn.q_proj
    k = layer.self_attn.k_proj
    assert torch.equal(q_x, full_x[..., q.start : q.end])
    assert torch.equal(k_y, full_y[..., k.start : k.end])


def test_fusion_does_not_change_a_single_logit() -> None:
    from awq_autoselect.formats import UnpackedWeight

    torch.manual_seed(0)

    def weight(n: int, k: int) -> UnpackedWeight:
        q = torch.randint(0, 16, (n, k), dtype=torch.uint8)
        z = torch.randint(0, 16, (n, k // 64), dtype=torch.uint8)
        s = (torch.rand(n, k // 64) * 0.02 + 0.001).half()
        return UnpackedWeight(q, z, s, 64, None)

    class Attention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q_proj = TorchInt4Linear.from_unpacked(weight(256, 256))
            self.k_proj = TorchInt4Linear.from_unpacked(weight(128, 256))
            self.v_proj = TorchInt4Linear.from_unpacked(weight(128, 256))

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.q_proj(h), self.k_proj(h), self.v_proj(h)], dim=-1)

    module: Any = Attention()
    h = torch.randn(5, 256).to(torch.bfloat16)
    expected = module(h)
    assert fuse_projections(module) == 1
    assert torch.equal(module(h), expected)  # bit for bit
    assert torch.equal(module(h[:1]), expected[:1])  # tinygemm rows and the dense path alike


@pytest.fixture(scope="module")
def tokenizer(quantized: QuantizedFactory) -> Any:
    """The checkpoint's own tokenizer, padding on the left (what batched generation with a decoder-only model
    needs), with a small chat template (the tiny tokenizer ships none)."""
    from transformers import AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(str(quantized(version="gemm", group_size=128)), padding_side="left")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _same(got: Any, expected: Any) -> None:
    """The fast path's output equals transformers': the tensor, or the dict's sequences (and nothing else)."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor)
        assert torch.equal(got, expected), (got.tolist(), expected.tolist())
    else:
        assert type(got) is type(expected)
        assert torch.equal(got.sequences, expected.sequences), (got.sequences.tolist(), expected.sequences.tolist())


def _both(model: Any, ids: torch.Tensor | None, **kwargs: Any) -> tuple[Any, Any]:
    """(the model's generate, transformers' own) on the same request, each after the same seed."""
    args = () if ids is None else (ids,)
    torch.manual_seed(7)
    got = model.generate(*args, **kwargs)
    assert model.generate.last_path == "fast"
    torch.manual_seed(7)
    return got, _reference(model, ids, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_new_tokens": 12},
        {"max_new_tokens": 300},  # past the first static cache (256 tokens): a larger one is made
        {"max_length": 15},
        {"max_new_tokens": 8, "min_new_tokens": 8, "eos_token_id": 391},
        {"max_new_tokens": 10, "eos_token_id": [391, 466], "pad_token_id": 3},
    ],
    ids=["max_new_tokens", "beyond-the-cache", "max_length", "min_new_tokens", "eos-and-pad"],
)
def test_greedy_tokens_equal_transformers_eager_greedy(loaded: Any, kwargs: dict[str, object]) -> None:
    for ids in (PROMPT, BATCH):
        _same(*_both(loaded, ids, do_sample=False, **kwargs))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": 0.8, "top_k": 20},
        {"temperature": 1.3, "top_k": 0, "top_p": 0.9},
        {"top_k": 5, "top_p": 0.5, "min_new_tokens": 5},
        {},  # transformers' defaults when sampling: top_k 50
        {"min_p": 0.1},
        {"min_p": 0.05, "temperature": 0.7, "top_k": 0, "repetition_penalty": 1.05},
        {"typical_p": 0.8},
        {"epsilon_cutoff": 3e-3},
        {"eta_cutoff": 1e-3},
        {"top_h": 0.5},
    ],
)
def test_seeded_sampling_draws_what_transformers_draws(loaded: Any, kwargs: dict[str, object]) -> None:
    """Same processors, same order, same random draws: the same tokens as transformers' own sampling."""
    for ids in (PROMPT, BATCH):
        _same(*_both(loaded, ids, max_new_tokens=30, do_sample=True, **kwargs))


def test_one_candidate_left_is_greedy(loaded: Any) -> None:
    greedy = loaded.generate(PROMPT, max_new_tokens=10, do_sample=False)
    for narrow in ({"top_k": 1}, {"top_p": 1e-6}):
        torch.manual_seed(3)
        assert torch.equal(loaded.generate(PROMPT, max_new_tokens=10, do_sample=True, **narrow), greedy)


def test_the_models_own_repetition_penalty_and_end_tokens_are_served(
    loaded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a generation_config.json like Qwen2.5's sets (repetition_penalty 1.05, two end-of-sequence tokens,
    sampling settings): every call honours it, on the fast path."""
    plain = loaded.generate(PROMPT, max_new_tokens=24, do_sample=False)
    config = loaded.generation_config
    for name, value in {"repetition_penalty": 1.05, "eos_token_id": [2, 391], "pad_token_id": 3}.items():
        monkeypatch.setattr(config, name, value)
    got, expected = _both(loaded, PROMPT, max_new_tokens=24, do_sample=False)
    _same(got, expected)
    monkeypatch.setattr(config, "repetition_penalty", 1.3)  # strong enough to change the tokens: not a no-op
    penalized, expected = _both(loaded, PROMPT, max_new_tokens=24, do_sample=False)
    _same(penalized, expected)
    assert not torch.equal(penalized, plain[:, : penalized.shape[1]])
    for name, value in {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20}.items():
        monkeypatch.setattr(config, name, value)
    _same(*_both(loaded, BATCH, max_new_tokens=24))


def test_a_left_padded_batch_of_different_lengths_equals_transformers(loaded: Any, tokenizer: Any) -> None:
    """Three prompts of different lengths, left-padded by the tokenizer: greedy, with the penalty, and sampled."""
    inputs = tokenizer(CHATS, return_tensors="pt", padding=True)
    assert inputs["attention_mask"].sum(1).unique().numel() == 3  # three lengths, so two rows carry padding
    assert not inputs["attention_mask"][:, -1].eq(0).any()  # on the left
    for kwargs in (
        {"do_sample": False},
        {"do_sample": False, "repetition_penalty": 1.3},
        {"do_sample": True, "top_k": 20, "repetition_penalty": 1.05},
    ):
        got, expected = _both(loaded, None, **inputs, max_new_tokens=20, **kwargs)
        _same(got, expected)
    # Each row decodes as it would alone: the padding is invisible (float32: exact against transformers' own run).
    alone = loaded.generate(**tokenizer(CHATS[1:2], return_tensors="pt"), max_new_tokens=20, do_sample=False)
    padded = loaded.generate(**inputs, max_new_tokens=20, do_sample=False)
    assert padded[1, -20:].tolist() == alone[0, -20:].tolist()


def test_a_mask_inferred_from_pad_tokens_is_served(loaded: Any) -> None:
    """No attention_mask, pad tokens in the prompts: transformers infers the mask from them, and so does the loop
    (it runs on what transformers prepared)."""
    ids = torch.tensor([[3, 3, 1, 17, 42, 99, 150], [5, 6, 7, 8, 9, 10, 11]])
    _same(*_both(loaded, ids, max_new_tokens=12, do_sample=False, pad_token_id=3))


@pytest.mark.parametrize(
    "options",
    [
        {"repetition_penalty": 1.3},
        {"repetition_penalty": 0.7},  # below 1: a reward
        {"encoder_repetition_penalty": 1.2},
        {"no_repeat_ngram_size": 2},
        {"encoder_no_repeat_ngram_size": 2},
        {"bad_words_ids": "greedy"},
        {"sequence_bias": "greedy"},
        {"suppress_tokens": "greedy"},
        {"begin_suppress_tokens": "greedy"},
        {"forced_bos_token_id": 5},
        {"forced_eos_token_id": 9},
        {"exponential_decay_length_penalty": (3, 1.5), "eos_token_id": 9},
        {"renormalize_logits": True},
        {"remove_invalid_values": True},
        {"watermarking_config": {"bias": 4.0, "greenlist_ratio": 0.5, "context_width": 1}},
        {"max_time": 1e-9},  # already over when the first token is checked: one token
        {"num_return_sequences": 3, "do_sample": True},
    ],
    ids="-".join,
)
def test_every_logits_processor_transformers_builds_is_served(loaded: Any, options: dict[str, object]) -> None:
    """The loop runs the processors and criteria transformers built for the call: each option decodes fast and
    gives transformers' tokens; the options that need tokens to act on take them from the greedy run."""
    from transformers import WatermarkingConfig

    greedy = loaded.generate(BATCH, max_new_tokens=12, do_sample=False)[:, BATCH.shape[1] :]
    first, second, third = (int(t) for t in greedy[0, :3])
    derived: dict[str, object] = {
        "bad_words_ids": [[first], [second, third]],
        "sequence_bias": [[[first], -20.0], [[second, third], 5.0]],
        "suppress_tokens": [first, second],
        "begin_suppress_tokens": [first],
    }
    kwargs = {name: derived[name] if value == "greedy" else value for name, value in options.items()}
    watermark = kwargs.get("watermarking_config")
    if isinstance(watermark, dict):
        kwargs["watermarking_config"] = WatermarkingConfig(**watermark)
    got, expected = _both(loaded, BATCH, max_new_tokens=12, **{"do_sample": False, **kwargs})
    _same(got, expected)
    if "max_time" in options:
        assert got.shape[1] == BATCH.shape[1] + 1
    if "bad_words_ids" in options:
        assert first not in got[0, BATCH.shape[1] :].tolist()


def test_the_callers_processors_criteria_and_prefix_function_are_served(loaded: Any) -> None:
    from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

    class Ban(LogitsProcessor):
        def __init__(self, token: int) -> None:
            self.token = token

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            scores[:, self.token] = -float("inf")  # in place, as processors may: the scores are ordinary tensors
            return scores

    class StopAfter(StoppingCriteria):
        def __init__(self, length: int) -> None:
            self.length = length

        def __call__(self, input_ids: torch.Tensor, scores: object, **kwargs: object) -> torch.Tensor:
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= self.length, dtype=torch.bool)

    greedy = loaded.generate(BATCH, max_new_tokens=12, do_sample=False)[:, BATCH.shape[1] :]
    got, expected = _both(
        loaded,
        BATCH,
        max_new_tokens=12,
        logits_processor=LogitsProcessorList([Ban(int(greedy[0, 0]))]),
        stopping_criteria=StoppingCriteriaList([StopAfter(BATCH.shape[1] + 6)]),
        prefix_allowed_tokens_fn=lambda row, ids: list(range(0, 512, 2)) if row == 1 else list(range(512)),
    )
    _same(got, expected)
    assert got.shape[1] == BATCH.shape[1] + 6
    assert all(t % 2 == 0 for t in got[1, BATCH.shape[1] :].tolist())


def test_stop_strings_with_the_tokenizer_stop_where_transformers_stops(loaded: Any, tokenizer: Any) -> None:
    inputs = tokenizer(CHATS[:1], return_tensors="pt")
    free = loaded.generate(**inputs, max_new_tokens=24, do_sample=False)
    text = tokenizer.decode(free[0, inputs["input_ids"].shape[1] :])
    stop = text[len(text) // 3 :][:3]  # a piece from the middle of what it says anyway
    assert stop.strip()
    got, expected = _both(
        loaded, None, **inputs, max_new_tokens=24, do_sample=False, stop_strings=[stop], tokenizer=tokenizer
    )
    _same(got, expected)
    assert got.shape[1] < free.shape[1]  # it did stop early
    assert stop in tokenizer.decode(got[0, inputs["input_ids"].shape[1] :])


def test_return_dict_in_generate_with_sequences_only(loaded: Any) -> None:
    from transformers.generation.utils import GenerateDecoderOnlyOutput

    got, expected = _both(loaded, BATCH, max_new_tokens=10, do_sample=False, return_dict_in_generate=True)
    assert isinstance(got, GenerateDecoderOnlyOutput)
    _same(got, expected)
    assert got.scores is None and got.logits is None and got.attentions is None and got.hidden_states is None


def test_num_return_sequences_when_sampling(loaded: Any, tokenizer: Any) -> None:
    inputs = tokenizer(CHATS[:2], return_tensors="pt", padding=True)
    got, expected = _both(loaded, None, **inputs, max_new_tokens=16, do_sample=True, num_return_sequences=3)
    _same(got, expected)
    assert got.shape[0] == 6
    assert len({tuple(row) for row in got[:3].tolist()}) > 1  # the copies draw their own tokens


def test_a_chat_template_passed_as_generate_inputs(loaded: Any, tokenizer: Any) -> None:
    """``generate(**tokenizer.apply_chat_template(..., return_dict=True, return_tensors="pt"))``: one chat, and a
    left-padded batch of two."""
    one = tokenizer.apply_chat_template(
        [{"role": "user", "content": CHATS[0]}], add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    assert set(one) >= {"input_ids", "attention_mask"}
    _same(*_both(loaded, None, **one, max_new_tokens=16, do_sample=False))
    two = tokenizer.apply_chat_template(
        [[{"role": "user", "content": chat}] for chat in CHATS[1:]],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
        padding=True,
    )
    assert bool((two["attention_mask"] == 0).any())
    _same(*_both(loaded, None, **two, max_new_tokens=16, do_sample=False, repetition_penalty=1.05))


def test_streamers_get_what_transformers_gives_them(loaded: Any) -> None:
    """The prompt as ``[1, T]``, then each token as ``[1]`` (transformers' shapes), and end()."""
    streamer, reference = CollectingStreamer(), CollectingStreamer()
    out = loaded.generate(PROMPT, max_new_tokens=5, streamer=streamer)
    assert loaded.generate.last_path == "fast"
    _reference(loaded, PROMPT, max_new_tokens=5, streamer=reference)
    assert streamer.shapes == reference.shapes == [tuple(PROMPT.shape)] + [(1,)] * 5
    assert streamer.values == reference.values
    assert [v[0] for v in streamer.values[1:]] == out[0, PROMPT.shape[1] :].tolist()
    assert streamer.ended and reference.ended


def test_a_text_iterator_streamer_read_from_another_thread(loaded: Any, tokenizer: Any) -> None:
    """The chat-app pattern: generate in a thread, read the text as it comes. The fast path's stream is
    transformers' stream, piece for piece."""
    from transformers import TextIteratorStreamer

    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": CHATS[2]}], add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    fast = loaded.__dict__["generate"]

    def stream(generate: Any) -> tuple[list[str], torch.Tensor]:
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, timeout=120)
        result: dict[str, torch.Tensor] = {}

        def run() -> None:
            result["out"] = generate(**inputs, max_new_tokens=24, do_sample=False, streamer=streamer)

        thread = threading.Thread(target=run)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # transformers' notes, raised in the thread
            thread.start()
            pieces = list(streamer)  # raises queue.Empty if the thread died without ending the stream
            thread.join()
        return pieces, result["out"]

    pieces, out = stream(loaded.generate)
    assert fast.last_path == "fast"
    expected_pieces, expected = stream(fast.original)
    assert torch.equal(out, expected)
    assert pieces == expected_pieces
    assert "".join(pieces) == tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def test_bf16_greedy_tokens_equal_transformers(quantized: QuantizedFactory) -> None:
    model, _ = load_quantized_auto(quantized(version="gemm", group_size=128), "torch_int4", device="cpu")
    hf: Any = model.model
    greedy = {"max_new_tokens": 16, "do_sample": False}
    assert torch.equal(hf.generate(PROMPT, **greedy), _reference(hf, PROMPT, **greedy))


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"num_beams": 2}, "num_beams=2"),
        ({"num_beams": 2, "do_sample": True}, "num_beams=2"),
        ({"output_scores": True, "return_dict_in_generate": True}, "output_scores=True"),
        ({"output_logits": True, "return_dict_in_generate": True}, "output_logits=True"),
        ({"guidance_scale": 1.5}, "guidance_scale=1.5"),
        ({"prompt_lookup_num_tokens": 2}, "prompt_lookup_num_tokens=2"),
        ({"assistant_model": "draft"}, "assistant_model="),
        ({"position_ids": "arange"}, "position_ids="),
        ({"cache_implementation": "sliding_window"}, "cache_implementation='sliding_window'"),
        ({"logits_to_keep": 1}, "model arguments logits_to_keep"),
    ],
    ids=lambda value: value if isinstance(value, str) else "-".join(value),
)
def test_what_the_fast_path_cannot_serve_goes_to_transformers(
    loaded: Any, tiny_model_dir: Path, kwargs: dict[str, object], reason: str
) -> None:
    from transformers import AutoModelForCausalLM

    fast = loaded.__dict__["generate"]
    fast._warned.clear()
    stand_ins: dict[str, object] = {"arange": torch.arange(PROMPT.shape[1])[None]}
    if "assistant_model" in kwargs:  # the unquantized model the checkpoint was made from drafts for it
        draft: Any = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
        stand_ins["draft"] = draft.eval()
    kwargs = {name: stand_ins.get(value, value) if isinstance(value, str) else value for name, value in kwargs.items()}
    torch.manual_seed(1)
    with pytest.warns(FallbackWarning, match=re.escape(reason)):
        out = loaded.generate(PROMPT, max_new_tokens=4, **kwargs)
    assert fast.last_path == f"transformers: {reason}"
    torch.manual_seed(1)
    _same(out, _reference(loaded, PROMPT, max_new_tokens=4, **kwargs))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)  # once per reason
        loaded.generate(PROMPT, max_new_tokens=4, **kwargs)


def test_stop_strings_without_a_tokenizer_get_transformers_error(loaded: Any) -> None:
    with (
        pytest.warns(FallbackWarning, match="stop_strings without tokenizer="),
        pytest.raises(ValueError, match="tokenizer"),
    ):
        loaded.generate(PROMPT, max_new_tokens=4, stop_strings=["a"])


def test_a_transformers_without_the_loop_api_decodes_with_its_own_generate(
    loaded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers before 4.56 cannot hand its loop over: every call goes to its generate, with the reason.
    (The version is the one thing faked: CI has one transformers installed.)"""
    import awq_autoselect.decode.fast as fast_module

    monkeypatch.setattr(fast_module, "dist_version", lambda name: "4.55.4")
    fast = FastGenerate(loaded, mode="eager")
    with pytest.warns(FallbackWarning, match=r"transformers 4\.55\.4, which cannot hand .* needs transformers 4\.56"):
        out = fast(PROMPT, max_new_tokens=6)
    assert fast.last_path.startswith("transformers: transformers 4.55.4")
    assert torch.equal(out, _reference(loaded, PROMPT, max_new_tokens=6))


def test_the_compiled_step_serves_a_padded_batch_with_a_penalty(loaded: Any, tokenizer: Any) -> None:
    """torch.compile of the decode step on the CPU (inductor's C++ backend) reading the per-row positions and the
    cache mask from its input tensors: transformers' tokens for a left-padded batch with a repetition penalty."""
    inputs = tokenizer(CHATS, return_tensors="pt", padding=True)
    fast = FastGenerate(loaded, mode="compile")  # on a CPU: no graph to capture, the compiled step runs eagerly
    got = fast(**inputs, max_new_tokens=10, do_sample=False, repetition_penalty=1.3)
    assert fast.last_path == "fast"
    decoder = next(iter(fast._decoders.values()))
    assert decoder.compiled
    _same(got, _reference(loaded, None, **inputs, max_new_tokens=10, do_sample=False, repetition_penalty=1.3))
    unpadded = fast(PROMPT.expand(3, -1), max_new_tokens=10, do_sample=False)  # the same compiled step, no padding
    assert next(iter(fast._decoders.values())) is decoder
    _same(unpadded, _reference(loaded, PROMPT.expand(3, -1), max_new_tokens=10, do_sample=False))


def test_load_installs_the_fast_path_by_default_and_can_be_told_not_to(quantized: QuantizedFactory) -> None:
    path = quantized(version="gemm", group_size=128)
    model: Any
    model, report = load_quantized_auto(path, device="cpu", fast_decode=False)
    assert report.decode == "transformers"
    assert "generate" not in model.model.__dict__
    model, report = load_quantized_auto(path, device="cpu")
    assert report.decode == "eager"  # on a CPU: the static cache, eagerly
    assert "generate:" in str(report)
    assert "first compile: none (eager decode steps)" in str(report)
    fast = install(model.model, "graph")  # graph mode on a CPU runs eagerly too: nothing to capture on
    greedy = {"max_new_tokens": 4, "do_sample": False}
    assert torch.equal(model.generate(input_ids=PROMPT, **greedy), fast.original(PROMPT, **greedy))
    uninstall(model.model)
    assert "generate" not in model.model.__dict__


def test_pipeline_on_the_inner_model_uses_the_fast_path(quantized: QuantizedFactory) -> None:
    from transformers import AutoTokenizer, pipeline

    path = quantized(version="gemm", group_size=128)
    model: Any
    model, _ = load_quantized_auto(path, device="cpu")
    tokenizer: Any = AutoTokenizer.from_pretrained(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # transformers' note about the generation config
        generator = pipeline("text-generation", model=model.model, tokenizer=tokenizer, device="cpu")
        text = generator("the quick brown fox", max_new_tokens=5, do_sample=False)
    assert isinstance(text, list)
    assert text[0]["generated_text"].startswith("the quick brown fox")
    assert model.model.generate.last_path == "fast"


def test_save_quantized_writes_the_loaded_checkpoint(quantized: QuantizedFactory, tmp_path: Path) -> None:
    from awq_autoselect.checkpoint import read_checkpoint

    path = quantized(version="gemv", group_size=128)
    model: Any
    model, report = load_quantized_auto(path, device="cpu")
    assert report.kernel is not None
    model.save_quantized(tmp_path / "saved")
    saved = read_checkpoint(tmp_path / "saved")
    assert saved.layout is read_checkpoint(path).layout  # the checkpoint's own layout, not torch_int4's repack
    reloaded: Any
    reloaded, _ = load_quantized_auto(tmp_path / "saved", device="cpu", fast_decode=False)
    with torch.no_grad():
        assert torch.equal(reloaded.model(PROMPT).logits, model.model(PROMPT).logits)


def test_bench_times_generate_and_the_hf_recipe(quantized: QuantizedFactory) -> None:
    from awq_autoselect.bench import Status, benchmark_versions

    report = benchmark_versions(
        quantized(version="gemm", group_size=128),
        ("torch_int4",),
        prompt_tokens=6,
        new_tokens=4,
        repeats=1,
        warmup=0,
        device="cpu",
        decode=("eager", "generate", "hf-static"),
    )
    result = report.result("torch_int4")
    assert [b.decode for b in result.batches] == ["eager", "generate", "hf-static"]
    for batch in result.batches:
        assert batch.status is Status.OK, batch.reason
        assert batch.tpot_ms is not None
        assert batch.tpot_ms.count == 3  # 4 new tokens: 1 from the prefill, 3 decode steps
    assert {row.decode for row in report.rows()} == {"eager", "generate", "hf-static"}


def test_the_default_decode_mode_follows_the_kernel_and_the_device() -> None:
    """Compiled where torch.compile can trace the kernel, a CUDA graph for AutoAWQ's extensions (Dynamo cannot
    see into them: on the H200 with the kernels built it raised at gemv_forward_cuda), eager off CUDA."""
    from awq_autoselect.catalogue import CATALOGUE, Kernel
    from awq_autoselect.loading.finish import default_decode as _default_decode

    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    for kernel, spec in CATALOGUE.items():
        assert spec.traceable is (spec.extension is None or spec.custom_op)
        assert _default_decode(kernel, cuda) == ("compile" if spec.traceable else "graph")
        assert _default_decode(kernel, cpu) == "eager"
    assert _default_decode(Kernel.TORCH_INT4, cuda) == "compile"
    assert _default_decode(Kernel.GEMV, cuda) == "graph"


def test_asking_to_compile_an_untraceable_kernel_decodes_from_the_graph_with_a_warning(
    quantized: QuantizedFactory,
) -> None:
    """What the loader installs for ``fast_decode="compile"`` when the chosen kernel is an AutoAWQ extension, on a
    CUDA device (the device is only named here: nothing runs on it)."""
    from awq_autoselect.catalogue import Kernel
    from awq_autoselect.checkpoint import read_checkpoint
    from awq_autoselect.loading.finish import finish as _finish

    path = quantized(version="gemm", group_size=128)
    model, _ = load_quantized_auto(path, "torch_int4", device="cpu", fast_decode=False)
    cuda = torch.device("cuda", 0)
    with pytest.warns(FallbackWarning, match="cannot trace gemv's layers"):
        mode = _finish(model, read_checkpoint(path), cuda, "compile", fused=False, kernel=Kernel.GEMV)
    assert mode == "graph"
    assert model.model.__dict__["generate"].mode == "graph"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        assert _finish(model, read_checkpoint(path), cuda, None, fused=False, kernel=Kernel.TORCH_INT4) == "compile"


def test_float_input_ids_are_refused_as_transformers_refuses_them(loaded: Any) -> None:
    with pytest.raises(Exception):  # noqa: B017, PT011 - transformers' own: the embedding wants integer indices
        _reference(loaded, PROMPT.float(), max_new_tokens=2)
    with pytest.raises(InvalidArgumentError, match=r"token ids are integers, got a torch\.float32 tensor"):
        loaded.generate(input_ids=PROMPT.float(), max_new_tokens=2)


def test_the_report_says_how_long_the_first_compile_took(quantized: QuantizedFactory) -> None:
    """The first generate() compiles the decode step (torch.compile runs on the CPU too), after the report was
    made: the fast path fills in the report's first_compile then, once."""
    model: Any
    model, report = load_quantized_auto(
        quantized(version="gemm", group_size=128),
        "torch_int4",
        device="cpu",
        dtype=torch.float32,
        fast_decode="compile",
    )
    first = report.first_compile
    assert report.decode == "compile"
    assert first.expected
    assert first.seconds is None
    assert "first compile: at the first generate() (not run yet)" in str(report)
    model.generate(input_ids=PROMPT, max_new_tokens=3)
    seconds = report.to_dict()["first_compile_seconds"]
    assert isinstance(seconds, float)
    assert seconds > 0
    assert f"first compile: {seconds:.2f} s, at the first generate()" in str(report)
    model.generate(input_ids=PROMPT, max_new_tokens=3)
    assert report.to_dict()["first_compile_seconds"] == seconds  # the first compile's, not a later call's
