"""The fast decode path on CPU: fused projections (exact), FastGenerate behind generate(), the default on load.

On a CPU the fast path runs its static cache eagerly (CUDA graphs need CUDA); every token it produces is checked
against transformers' own eager generate on the same model. The compiled step (torch.compile) is checked on CPU
too. Real checkpoints, quantized by AutoAWQ at test time.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from awq_autoselect import FallbackWarning, load_quantized_auto
from awq_autoselect.decode.fast import FastGenerate, install, uninstall
from awq_autoselect.decode.static import StaticDecoder
from awq_autoselect.errors import InvalidArgumentError
from awq_autoselect.kernels.fusion import FusedProjection, fuse_projections
from awq_autoselect.kernels.torch_int4 import TorchInt4Linear
from tests.helpers import CollectingStreamer, QuantizedFactory

PROMPT = torch.tensor([[1, 17, 42, 99, 150, 301, 7]])
BATCH = torch.tensor([[1, 17, 42, 99, 150, 301, 7], [5, 6, 7, 8, 9, 10, 11]])


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
    return hf


def _reference(model: Any, ids: torch.Tensor, **kwargs: Any) -> Any:
    fast = model.__dict__["generate"]
    assert isinstance(fast, FastGenerate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' own notes about masks and pad tokens
        return fast.original(ids, **kwargs)


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
        expected = _reference(loaded, ids, do_sample=False, **kwargs)
        got = loaded.generate(ids, do_sample=False, **kwargs)
        assert loaded.generate.last_path == "fast"
        assert torch.equal(got, expected), (kwargs, got.tolist(), expected.tolist())


def test_an_attention_mask_of_ones_is_served_and_padding_is_not(loaded: Any) -> None:
    ones = torch.ones_like(BATCH)
    assert torch.equal(
        loaded.generate(BATCH, attention_mask=ones, max_new_tokens=5),
        _reference(loaded, BATCH, attention_mask=ones, max_new_tokens=5),
    )
    assert loaded.generate.last_path == "fast"
    padded = ones.clone()
    padded[1, :2] = 0
    with pytest.warns(FallbackWarning, match="attention_mask with padding"):
        out = loaded.generate(BATCH, attention_mask=padded, max_new_tokens=5, pad_token_id=0)
    assert loaded.generate.last_path.startswith("transformers")
    assert torch.equal(out, _reference(loaded, BATCH, attention_mask=padded, max_new_tokens=5, pad_token_id=0))


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"num_beams": 2}, "num_beams=2"),
        ({"repetition_penalty": 1.3}, "repetition_penalty=1.3"),
        ({"output_scores": True, "return_dict_in_generate": True}, "output_scores=True"),
    ],
)
def test_what_the_fast_path_cannot_serve_goes_to_transformers(
    loaded: Any, kwargs: dict[str, object], reason: str
) -> None:
    fast = loaded.__dict__["generate"]
    fast._warned.clear()
    with pytest.warns(FallbackWarning, match=reason):
        out = loaded.generate(PROMPT, max_new_tokens=4, **kwargs)
    assert fast.last_path == f"transformers: {reason}"
    expected = _reference(loaded, PROMPT, max_new_tokens=4, **kwargs)
    if isinstance(out, torch.Tensor):
        assert torch.equal(out, expected)
    else:
        assert torch.equal(out.sequences, expected.sequences)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": 0.8, "top_k": 20},
        {"temperature": 1.3, "top_k": 0, "top_p": 0.9},
        {"top_k": 5, "top_p": 0.5, "min_new_tokens": 5},
        {},  # transformers' defaults when sampling: top_k 50
    ],
)
def test_seeded_sampling_draws_what_transformers_draws(loaded: Any, kwargs: dict[str, object]) -> None:
    """Same processors, same order, same random draws: the same tokens as transformers' own sampling."""
    for ids in (PROMPT, BATCH):
        torch.manual_seed(7)
        got = loaded.generate(ids, max_new_tokens=30, do_sample=True, **kwargs)
        assert loaded.generate.last_path == "fast"
        torch.manual_seed(7)
        assert torch.equal(got, _reference(loaded, ids, max_new_tokens=30, do_sample=True, **kwargs))


def test_one_candidate_left_is_greedy(loaded: Any) -> None:
    greedy = loaded.generate(PROMPT, max_new_tokens=10, do_sample=False)
    for narrow in ({"top_k": 1}, {"top_p": 1e-6}):
        torch.manual_seed(3)
        assert torch.equal(loaded.generate(PROMPT, max_new_tokens=10, do_sample=True, **narrow), greedy)


def test_bf16_greedy_tokens_equal_transformers(quantized: QuantizedFactory) -> None:
    model, _ = load_quantized_auto(quantized(version="gemm", group_size=128), "torch_int4", device="cpu")
    hf: Any = model.model
    greedy = {"max_new_tokens": 16, "do_sample": False}
    assert torch.equal(hf.generate(PROMPT, **greedy), _reference(hf, PROMPT, **greedy))


def test_streamers_receive_the_prompt_then_every_token(loaded: Any) -> None:
    streamer = CollectingStreamer()
    out = loaded.generate(PROMPT, max_new_tokens=5, streamer=streamer)
    assert streamer.values[0] == PROMPT[0].tolist()
    assert [v[0] for v in streamer.values[1:]] == out[0, PROMPT.shape[1] :].tolist()
    assert streamer.ended


def test_the_compiled_step_gives_the_eager_tokens(loaded: Any) -> None:
    """torch.compile of the decode step on the CPU (inductor's C++ backend): the same greedy tokens."""
    expected = _reference(loaded, PROMPT, max_new_tokens=8, do_sample=False)
    decoder = StaticDecoder(loaded, max_cache_len=32, use_cuda_graph=False, compile=True)
    with torch.inference_mode():
        token = decoder.prefill(PROMPT).argmax(-1, keepdim=True)
        tokens = [token]
        for _ in range(7):
            token = decoder.decode_step(token).argmax(-1, keepdim=True)
            tokens.append(token)
    assert decoder.compiled
    assert torch.equal(torch.cat([PROMPT, *tokens], dim=1), expected)


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
    from awq_autoselect.loading.load import _default_decode

    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    for kernel, spec in CATALOGUE.items():
        assert spec.traceable is (spec.extension is None)
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
    from awq_autoselect.loading.load import _finish

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
