"""GPU tests for torch_int4 and CUDA-graph decoding: aten's CUDA tinygemm, cuBLAS, real graph capture and replay.

Run on a machine with an NVIDIA GPU of compute capability 8.0+: ``pytest -m gpu tests/test_torch_int4_gpu.py``.
They check what the CPU tests cannot: that :func:`pack_tiles` is bit for bit aten's CUDA packer (so the CPU
tests of the layout speak for the GPU), that the CUDA kernel stays within the documented error bound at 7B
shapes, that dispatch by rows takes both paths, and that a replayed CUDA graph decodes the same tokens as eager.
The test that tries AutoAWQ's Triton GEMM under capture runs last: a failed capture must not poison the others.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from awq_autoselect import FallbackWarning, formats
from awq_autoselect.decode.static import StaticDecoder, generate_with_cuda_graph
from awq_autoselect.kernels.gemm import TritonGEMMLinear, swap_gemm_backend
from awq_autoselect.kernels.torch_int4 import (
    DENSE_THRESHOLD,
    TorchInt4Linear,
    convert_model_to_torch_int4,
    inner_k_tiles_for,
    pack_tiles,
    unpack_tiles,
    weight_error_bound,
)
from tests.helpers import (
    QuantizedFactory,
    build_gemm_model,
    hf_greedy,
    identity_rows,
    ops_called,
    output_bound,
    random_weight,
)

pytestmark = pytest.mark.gpu

# 7B Llama layers as (out_features, in_features): q/k/v/o, gate/up, down, a fused qkv; group 128, and the two
# input widths with groups 64 and 32 too.
SHAPES_7B = [(4096, 4096), (11008, 4096), (4096, 11008), (12288, 4096)]
BOUND_CASES = [(n, k, 128) for n, k in SHAPES_7B] + [(4096, k, g) for k in (4096, 11008) for g in (64, 32)]


@pytest.fixture(scope="module")
def cuda() -> torch.device:
    if not torch.cuda.is_available():
        pytest.fail("the gpu tests need a CUDA GPU; run them with `pytest -m gpu` on the GPU machine")
    if torch.cuda.get_device_capability(0) < (8, 0):
        pytest.fail("tinygemm needs compute capability 8.0+; this GPU is older")
    return torch.device("cuda", 0)


# --------------------------------------------------------------------------------------------------------------
# layout


@pytest.mark.parametrize(
    ("n", "k"), [(8, 32), (16, 64), (16, 96), (64, 256), (256, 11008), (4096, 4096), (11008, 4096)]
)
def test_pack_tiles_is_aten_cuda_pack_bit_for_bit(cuda: torch.device, n: int, k: int) -> None:
    q = torch.randint(0, 16, (n, k), generator=torch.Generator().manual_seed(n + k), dtype=torch.uint8).to(cuda)
    tiles = inner_k_tiles_for(k)
    halves = ((q[:, 0::2] << 4) | q[:, 1::2]).contiguous()
    aten = torch.ops.aten._convert_weight_to_int4pack(halves, tiles)
    assert torch.equal(pack_tiles(q, tiles), aten)
    assert torch.equal(unpack_tiles(aten, n, k), q)


def test_module_moves_between_cpu_and_cuda(cuda: torch.device) -> None:
    weight = random_weight(256, 1024, 128, seed=1, bias=True)
    on_cpu = TorchInt4Linear.from_unpacked(weight)
    on_cuda = TorchInt4Linear.from_unpacked(weight, device=cuda)
    assert torch.equal(on_cpu.qtiles.to(cuda), on_cuda.qtiles)  # built by pack_tiles vs by aten
    moved = TorchInt4Linear.from_unpacked(weight).to(cuda)
    x = torch.randn((3, 1024), device=cuda).to(torch.bfloat16)
    assert torch.equal(moved(x), on_cuda(x))
    back = moved.to("cpu")
    reference = x.cpu().float() @ formats.dequantize(weight).t() + weight.bias.float()  # type: ignore[union-attr]
    assert bool(((back(x.cpu()).float() - reference).abs() <= output_bound(x.cpu(), weight, reference) + 2**-8).all())


def test_half_on_cuda_keeps_bfloat16_state(cuda: torch.device) -> None:
    module = TorchInt4Linear.from_unpacked(random_weight(256, 512, 64, seed=2), device=cuda)
    module.half()
    assert module.scales_and_zeros.dtype == torch.bfloat16
    x = torch.randn((2, 512), device=cuda, dtype=torch.float16)
    assert module(x).dtype == torch.float16


# --------------------------------------------------------------------------------------------------------------
# numerics at 7B shapes


@pytest.mark.parametrize(("n", "k", "group_size"), BOUND_CASES)
def test_cuda_kernel_is_within_the_documented_bound(cuda: torch.device, n: int, k: int, group_size: int) -> None:
    weight = random_weight(n, k, group_size, seed=n + k + group_size, device=str(cuda))
    module = TorchInt4Linear.from_unpacked(weight, dense_threshold=10**9)  # tinygemm for every row count
    reference = formats.dequantize(weight)
    bound = weight_error_bound(weight.intweight, weight.zeros, weight.scales, group_size)
    assert bool(((module.dequantize().float() - reference).abs() <= bound).all())
    columns = torch.randperm(k, generator=torch.Generator().manual_seed(2))[:64].to(cuda)
    read = module(identity_rows(columns, k)).float()
    assert bool(((read - reference[:, columns].t()).abs() <= bound[:, columns].t()).all())


@pytest.mark.parametrize(("n", "k"), [(4096, 4096), (4096, 11008)])
@pytest.mark.parametrize("rows", [1, 8, 16, 33, DENSE_THRESHOLD - 1, DENSE_THRESHOLD, 300])
def test_forward_dispatches_by_rows_and_both_paths_are_within_bound(
    cuda: torch.device, n: int, k: int, rows: int
) -> None:
    weight = random_weight(n, k, 128, seed=rows, bias=True, device=str(cuda))
    module = TorchInt4Linear.from_unpacked(weight)
    x = torch.randn((rows, k), generator=torch.Generator().manual_seed(rows)).to(cuda, torch.bfloat16)
    dense = rows >= DENSE_THRESHOLD
    ran = ops_called(lambda: module(x))
    assert ("aten::_weight_int4pack_mm" in ran) is not dense
    assert ("aten::linear" in ran) is dense
    reference = x.float() @ formats.dequantize(weight).t() + weight.bias.float()  # type: ignore[union-attr]
    bound = output_bound(x, weight, reference, dense_on_cuda=dense)
    assert bool(((module(x).float() - reference).abs() <= bound).all())


def test_module_forward_replays_in_a_cuda_graph(cuda: torch.device) -> None:
    module = TorchInt4Linear.from_unpacked(random_weight(4096, 4096, 128, seed=3), device=cuda)
    x = torch.randn((1, 4096), device=cuda).to(torch.bfloat16)
    side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        module(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = module(x)
    x.copy_(torch.randn((1, 4096), device=cuda).to(torch.bfloat16))
    graph.replay()
    assert torch.equal(out, module(x))


# --------------------------------------------------------------------------------------------------------------
# CUDA-graph decoding


def greedy(model: torch.nn.Module, ids: torch.Tensor, new: int, *, graph: bool) -> tuple[torch.Tensor, StaticDecoder]:
    decoder = StaticDecoder(model, batch_size=ids.shape[0], max_cache_len=ids.shape[1] + new, use_cuda_graph=graph)
    tokens = [decoder.prefill(ids).argmax(-1, keepdim=True)]
    for _ in range(new - 1):
        tokens.append(decoder.decode_step(tokens[-1]).argmax(-1, keepdim=True))
    return torch.cat([ids, *tokens], dim=1), decoder


PROMPT = [[1, 17, 42, 99, 150, 301, 7, 255]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_graph_decode_equals_eager_and_generate(cuda: torch.device, tiny_model_dir: Path, dtype: torch.dtype) -> None:
    from transformers import AutoModelForCausalLM

    model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    model.to(cuda, dtype).eval()
    ids = torch.tensor(PROMPT * 2, device=cuda)
    graphed, decoder = greedy(model, ids, 16, graph=True)  # warnings are errors: a FallbackWarning fails here
    assert decoder.graph_enabled
    assert decoder.fallback_reason is None
    assert decoder._graph is not None
    eager, eager_decoder = greedy(model, ids, 16, graph=False)
    assert eager_decoder._graph is None
    assert torch.equal(graphed, eager)
    expected = hf_greedy(model, ids, 16)
    if dtype == torch.float32:
        assert torch.equal(graphed, expected)
    assert torch.equal(generate_with_cuda_graph(model, ids, 16), graphed)


def test_graph_survives_a_second_prompt(cuda: torch.device, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    model.to(cuda, torch.float32).eval()
    decoder = StaticDecoder(model, max_cache_len=24)
    eager = StaticDecoder(model, max_cache_len=24, use_cuda_graph=False)
    for prompt in ([[5, 6, 7]], [[300, 2, 9, 14, 77]]):
        ids = torch.tensor(prompt, device=cuda)
        a, b = decoder.prefill(ids), eager.prefill(ids)
        for _ in range(6):
            a, b = decoder.decode_step(a.argmax(-1, keepdim=True)), eager.decode_step(b.argmax(-1, keepdim=True))
            assert torch.equal(a.argmax(-1), b.argmax(-1))
            torch.testing.assert_close(a, b)
    assert decoder._graph is not None


def test_unknown_static_cache_decodes_eagerly_on_cuda(
    cuda: torch.device, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers
    from transformers import AutoModelForCausalLM

    from tests.helpers import UnknownStaticCache

    model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    model.to(cuda, torch.float32).eval()
    ids = torch.tensor(PROMPT * 2, device=cuda)
    expected, _ = greedy(model, ids, 12, graph=True)
    monkeypatch.setattr(transformers, "StaticCache", UnknownStaticCache)
    with pytest.warns(FallbackWarning, match="decoding with the dynamic cache"):
        dynamic, decoder = greedy(model, ids, 12, graph=True)
    assert decoder.graph_enabled is False
    assert torch.equal(dynamic, expected)


@pytest.fixture(scope="module")
def gemm_checkpoint(quantized: QuantizedFactory) -> Path:
    return quantized(version="gemm", group_size=64)


def test_torch_int4_model_decodes_with_a_graph_like_eager(cuda: torch.device, gemm_checkpoint: Path) -> None:
    model = build_gemm_model(gemm_checkpoint, device=str(cuda))
    assert convert_model_to_torch_int4(model) == 14
    ids = torch.tensor(PROMPT, device=cuda)
    graphed, decoder = greedy(model, ids, 16, graph=True)
    assert decoder._graph is not None
    assert decoder.fallback_reason is None
    eager, _ = greedy(model, ids, 16, graph=False)
    assert torch.equal(graphed, eager)


def test_converted_model_on_cuda_matches_float32_reference(cuda: torch.device, gemm_checkpoint: Path) -> None:
    from awq_autoselect.kernels.gemm import TorchGEMMLinear

    ids = torch.tensor(PROMPT, device=cuda)
    reference_model = build_gemm_model(gemm_checkpoint, device=str(cuda), dtype=torch.float32)
    swap_gemm_backend(reference_model, TorchGEMMLinear)
    model = build_gemm_model(gemm_checkpoint, device=str(cuda))
    convert_model_to_torch_int4(model)
    with torch.no_grad():
        reference = reference_model(ids).logits.float()
        out = model(ids).logits.float()
    assert float(torch.linalg.vector_norm(out - reference) / torch.linalg.vector_norm(reference)) < 2e-2


def test_triton_gemm_captures_or_falls_back_with_a_reason(
    cuda: torch.device, gemm_checkpoint: Path, record_property: Callable[[str, object], None]
) -> None:
    model = build_gemm_model(gemm_checkpoint, device=str(cuda))
    swap_gemm_backend(model, TritonGEMMLinear)
    ids = torch.tensor(PROMPT, device=cuda)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FallbackWarning)
        graphed, decoder = greedy(model, ids, 8, graph=True)
    fallbacks = [w for w in caught if issubclass(w.category, FallbackWarning)]
    record_property("triton_gemm_graph", decoder.fallback_reason or "captured")
    if decoder._graph is None:
        assert decoder.fallback_reason is not None
        assert decoder.fallback_reason.startswith("CUDA graph capture failed")
        assert fallbacks
    else:
        assert decoder.fallback_reason is None
        assert not fallbacks
    eager, _ = greedy(model, ids, 8, graph=False)
    assert torch.equal(graphed, eager)
