"""The Triton int4 dequantization (awq_autoselect.kernels.int4_dequant) against the torch version, bit for bit.

On CPU the kernel runs under Triton's interpreter (``TRITON_INTERPRET=1``, read when the kernel is decorated, so
a test sets it and the module decorates a separate interpreted kernel); the weights come from the real
conversion (``TorchInt4Linear.from_unpacked``) plus scales spread over many binades to stress the rounding. The
``gpu`` tests run the compiled kernel at 7B shapes and the module's dense path on CUDA.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name

from awq_autoselect.errors import ConversionError, InvalidArgumentError, MissingDependencyError
from awq_autoselect.kernels import int4_dequant as _int4_dequant
from awq_autoselect.kernels.int4_dequant import (
    DenseBuilder,
    dequantize_tiles,
    dequantize_tiles_torch,
    dequantize_tiles_triton,
    triton_failure,
)
from awq_autoselect.kernels.torch_int4 import TorchInt4Linear, inner_k_tiles_for, pack_tiles
from tests.helpers import ops_called, random_weight

# (out_features, in_features, group_size): every innerKTiles (8: K % 128 == 0, 4: K % 64, 2: K % 32) with every
# group size that divides K, and a 7B input width.
SHAPES = [
    *((32, 512, g) for g in (32, 64, 128, 256)),
    (16, 192, 32),
    (16, 192, 64),
    (32, 96, 32),
    (16, 11008, 128),
]


@pytest.fixture
def interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the kernel under Triton's interpreter for this test."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture
def fresh_state(monkeypatch: pytest.MonkeyPatch) -> _int4_dequant._TritonState:
    """A process state with no failure recorded, restored after the test."""
    state = _int4_dequant._TritonState()
    monkeypatch.setattr(_int4_dequant, "_STATE", state)
    return state


def module_tensors(
    n: int, k: int, group_size: int, *, dtype: torch.dtype = torch.bfloat16, symmetric: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(qtiles, scales_and_zeros) of a random AWQ weight converted by the module itself."""
    weight = random_weight(n, k, group_size, seed=n + k + group_size, symmetric=symmetric)
    module = TorchInt4Linear.from_unpacked(weight, dtype=dtype)
    return module.qtiles, module.scales_and_zeros


def spread_tensors(n: int, k: int, group_size: int, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tiles and (scale, zero) pairs of both signs over 16 binades: rounding of every kind, ties included."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=gen, dtype=torch.uint8)
    magnitude = torch.exp2(torch.randint(-12, 4, (k // group_size, n, 2), generator=gen).float())
    pairs = (torch.randn((k // group_size, n, 2), generator=gen) * magnitude).to(dtype)
    return pack_tiles(q, inner_k_tiles_for(k)), pairs


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.int16), b.view(torch.int16))


def ties(qtiles: torch.Tensor, scales_and_zeros: torch.Tensor, n: int, k: int, group_size: int) -> int:
    """How many float32 values lie exactly halfway between two bfloat16 values (where the rounding mode shows)."""
    exact = dequantize_tiles_torch(qtiles, scales_and_zeros.float(), n, k, group_size)  # float32, one rounding
    return int(((exact.view(torch.int32) & 0xFFFF) == 0x8000).sum())


# --------------------------------------------------------------------------------------------------------------
# the kernel under Triton's interpreter


@pytest.mark.usefixtures("interpreter")
def test_the_interpreter_runs_the_kernel() -> None:
    _, interpreted = _int4_dequant._kernel()
    assert interpreted


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize(("n", "k", "group_size"), SHAPES)
def test_kernel_matches_torch_bit_for_bit_on_converted_weights(n: int, k: int, group_size: int) -> None:
    qtiles, pairs = module_tensors(n, k, group_size)
    expected = dequantize_tiles_torch(qtiles, pairs, n, k, group_size)
    assert same_bits(dequantize_tiles(qtiles, pairs, n, k, group_size, backend="triton"), expected)


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize(("dtype", "symmetric"), [(torch.float16, False), (torch.bfloat16, True)])
def test_kernel_matches_torch_for_half_scales_and_symmetric_weights(dtype: torch.dtype, symmetric: bool) -> None:
    qtiles, pairs = module_tensors(32, 512, 64, dtype=dtype, symmetric=symmetric)
    assert pairs.dtype == dtype
    if symmetric:
        assert not bool(pairs[..., 1].any())
    expected = dequantize_tiles_torch(qtiles, pairs, 32, 512, 64)
    assert same_bits(dequantize_tiles_triton(qtiles, pairs, 32, 512, 64), expected)


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("n", "k", "group_size"), [(32, 512, 32), (16, 192, 64), (24, 96, 32)])
def test_kernel_rounds_like_torch_over_many_binades(dtype: torch.dtype, n: int, k: int, group_size: int) -> None:
    qtiles, pairs = spread_tensors(n, k, group_size, dtype, seed=n * k)
    if dtype == torch.bfloat16:
        assert ties(qtiles, pairs, n, k, group_size) > 0  # round-half-to-even is exercised
    expected = dequantize_tiles_torch(qtiles, pairs, n, k, group_size)
    assert same_bits(dequantize_tiles_triton(qtiles, pairs, n, k, group_size), expected)


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize(("block_n", "block_k"), [(1, 8), (8, 64), (8, 256), (32, 512), (16, 128)])
def test_partial_blocks_are_masked(block_n: int, block_k: int) -> None:
    # 24 rows and 96 inputs leave partial blocks in both directions for all but the smallest blocks.
    qtiles, pairs = spread_tensors(24, 96, 32, torch.bfloat16, seed=block_n + block_k)
    expected = dequantize_tiles_torch(qtiles, pairs, 24, 96, 32)
    out = dequantize_tiles_triton(qtiles, pairs, 24, 96, 32, block_n=block_n, block_k=block_k)
    assert same_bits(out, expected)


@pytest.mark.usefixtures("interpreter")
# The interpreter computes with numpy, which warns where float32 overflows or meets inf * 0; the GPU does not.
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_bit_rounding_keeps_nan_and_infinity() -> None:
    qtiles, pairs = spread_tensors(8, 64, 32, torch.bfloat16, seed=9)
    pairs[0, 0, 0] = float("nan")
    pairs[1, 1, 1] = float("inf")
    pairs[1, 2, 0] = 3e38  # (q - 8) * scale overflows bfloat16 for |q - 8| >= 2
    expected = dequantize_tiles_torch(qtiles, pairs, 8, 64, 32)
    out = dequantize_tiles_triton(qtiles, pairs, 8, 64, 32)
    assert bool(out[0, :32].isnan().all())
    assert torch.equal(out.isnan(), expected.isnan())
    assert torch.equal(out.nan_to_num(0.0), expected.nan_to_num(0.0))


# --------------------------------------------------------------------------------------------------------------
# the compiled kernel, without a GPU: Triton compiles ahead of time for a named target (its wheel ships ptxas)


@pytest.mark.parametrize("capability", [80, 90])
@pytest.mark.parametrize(
    ("scale_type", "pairs", "group_size", "round_by_bits"),
    [("bf16", 4, 128, False), ("fp16", 1, 32, False), ("bf16", 2, 256, True)],
)
def test_kernel_compiles_for_cuda(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capability: int,
    scale_type: str,
    pairs: int,
    group_size: int,
    round_by_bits: bool,
) -> None:
    triton = pytest.importorskip("triton")
    compiler = pytest.importorskip("triton.compiler")
    backends = pytest.importorskip("triton.backends.compiler")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    kernel, interpreted = _int4_dequant._kernel()
    assert not interpreted
    out_type = "*i16" if round_by_bits else f"*{scale_type}"
    runtime = {"tiles_ptr": "*i32", "scales_and_zeros_ptr": f"*{scale_type}", "out_ptr": out_type}
    runtime |= {"n_rows": "i32", "n_cols": "i32"}
    constants = {"PAIRS": pairs, "GROUP": group_size, "BLOCK_N": 16, "BLOCK_M": 32, "ROUND_BY_BITS": round_by_bits}
    source = compiler.ASTSource(
        fn=kernel,
        signature=runtime | dict.fromkeys(constants, "constexpr"),
        constexprs={(5 + i,): value for i, value in enumerate(constants.values())},
        attrs={(i,): [["tt.divisibility", 16]] for i in range(5)},
    )
    compiled = triton.compile(
        source,
        target=backends.GPUTarget("cuda", capability, 32),
        options={"num_warps": 4, "enable_fp_fusion": True},
    )
    ptx = compiled.asm["ptx"]
    assert "st.global.v4.b32" in ptx  # 16-byte stores: rows of the block written contiguously
    if not round_by_bits:
        ptx_type = {"bf16": "bf16x2", "fp16": "f16x2"}[scale_type]
        assert f"cvt.rn.{ptx_type}.f32" in ptx  # the hardware's round-to-nearest-even


# --------------------------------------------------------------------------------------------------------------
# dispatch and fallback


def test_builder_on_cpu_gives_the_torch_bits_and_sees_new_values() -> None:
    qtiles, pairs = module_tensors(32, 512, 128)
    builder = DenseBuilder(qtiles, pairs, 32, 512, 128)
    assert same_bits(builder(), dequantize_tiles_torch(qtiles, pairs, 32, 512, 128))
    other_tiles, other_pairs = module_tensors(32, 512, 128, symmetric=True)
    qtiles.copy_(other_tiles)  # the builder holds the tensors, not their values
    pairs.copy_(other_pairs)
    assert same_bits(builder(), dequantize_tiles_torch(other_tiles, other_pairs, 32, 512, 128))
    assert builder() is not builder()  # a new tensor each call


def test_builder_checks_the_tensors_once_when_made() -> None:
    qtiles, pairs = module_tensors(32, 512, 128)
    with pytest.raises(ConversionError, match="do not hold"):
        DenseBuilder(qtiles, pairs, 64, 512, 128)
    with pytest.raises(ConversionError, match="scales_and_zeros"):
        DenseBuilder(qtiles, pairs[:2], 32, 512, 128)


def test_module_dense_path_follows_a_reload_new_tensors_and_a_dtype_change() -> None:
    first = TorchInt4Linear.from_unpacked(random_weight(32, 512, 128, seed=1), dense_threshold=4)
    second = TorchInt4Linear.from_unpacked(random_weight(32, 512, 128, seed=2), dense_threshold=4)
    x = torch.randn((8, 512), generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    before = first(x)  # builds the first module's dense builder
    first.load_state_dict(second.state_dict())  # copied into the same tensors
    assert torch.equal(first(x), second(x))
    assert not torch.equal(first(x), before)
    third = TorchInt4Linear.from_unpacked(random_weight(32, 512, 128, seed=3), dense_threshold=4)
    first.qtiles = third.qtiles  # new tensors assigned directly: no _apply, no load_state_dict
    first.scales_and_zeros = third.scales_and_zeros
    assert torch.equal(first(x), third(x))
    first.to(torch.float32)  # new scale tensors: a new builder, float32 weights
    expected = F.linear(x.float(), dequantize_tiles_torch(first.qtiles, first.scales_and_zeros, 32, 512, 128))
    assert torch.equal(first(x.float()), expected)


def test_a_failed_direct_launch_is_said_once_and_remembered(
    caplog: pytest.LogCaptureFixture, fresh_state: _int4_dequant._TritonState
) -> None:
    caplog.set_level(logging.DEBUG, logger=_int4_dequant.__name__)
    _int4_dequant._direct_failed(IndexError("tuple index out of range"))
    _int4_dequant._direct_failed(TypeError("another"))
    assert fresh_state.direct_failure == "IndexError: tuple index out of range"
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "normal launch" in caplog.records[0].getMessage()


def test_auto_on_cpu_runs_the_torch_version() -> None:
    qtiles, pairs = module_tensors(32, 512, 128)
    ran = ops_called(lambda: dequantize_tiles(qtiles, pairs, 32, 512, 128))
    assert "aten::addcmul" in ran
    expected = dequantize_tiles_torch(qtiles, pairs, 32, 512, 128)
    assert same_bits(dequantize_tiles(qtiles, pairs, 32, 512, 128), expected)
    assert same_bits(dequantize_tiles(qtiles, pairs, 32, 512, 128, backend="torch"), expected)


def test_module_dequantize_gives_the_torch_result() -> None:
    weight = random_weight(32, 256, 64, seed=11)
    module = TorchInt4Linear.from_unpacked(weight)
    expected = dequantize_tiles_torch(module.qtiles, module.scales_and_zeros, 32, 256, 64)
    assert same_bits(module.dequantize(), expected)


def test_a_failed_launch_falls_back_once_and_is_remembered(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fresh_state: _int4_dequant._TritonState
) -> None:
    # A real failure: the compiled kernel cannot launch here (no GPU driver, CPU tensors).
    pytest.importorskip("triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    qtiles, pairs = module_tensors(16, 256, 128)
    caplog.set_level(logging.DEBUG, logger=_int4_dequant.__name__)
    assert triton_failure() is None
    assert _int4_dequant._try_triton(qtiles, pairs, 16, 256, 128) is None
    reason = triton_failure()
    assert reason is not None
    assert reason.startswith("the Triton kernel failed on cpu (")
    assert len(caplog.records) == 1
    assert _int4_dequant._try_triton(qtiles, pairs, 16, 256, 128) is None  # not tried again
    assert triton_failure() == reason
    assert len(caplog.records) == 1
    assert fresh_state.failure == reason


def test_inputs_the_kernel_cannot_take_go_to_torch_with_one_debug_line(
    caplog: pytest.LogCaptureFixture, fresh_state: _int4_dequant._TritonState
) -> None:
    qtiles, pairs = module_tensors(16, 256, 128, dtype=torch.float32)
    caplog.set_level(logging.DEBUG, logger=_int4_dequant.__name__)
    for _ in range(3):
        assert _int4_dequant._try_triton(qtiles, pairs, 16, 256, 128) is None
    assert len(caplog.records) == 1
    assert "float32" in caplog.records[0].getMessage()
    assert fresh_state.failure is None  # a refusal is not a failure


def test_backend_triton_without_triton_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, fresh_state: _int4_dequant._TritonState
) -> None:
    # The one fake here: this machine has triton, so its absence is simulated the way the import guard records it.
    monkeypatch.setattr(_int4_dequant, "triton", None)
    monkeypatch.setattr(_int4_dequant, "_TRITON_IMPORT_ERROR", "triton does not import (ModuleNotFoundError: x)")
    qtiles, pairs = module_tensors(16, 256, 128)
    with pytest.raises(MissingDependencyError, match="install triton"):
        dequantize_tiles(qtiles, pairs, 16, 256, 128, backend="triton")
    assert _int4_dequant._try_triton(qtiles, pairs, 16, 256, 128) is None
    assert fresh_state.failure is None


# --------------------------------------------------------------------------------------------------------------
# input checks


def test_bad_inputs_are_refused_with_the_reason() -> None:
    qtiles, pairs = module_tensors(16, 256, 128)
    cases: list[tuple[torch.Tensor, torch.Tensor, int, int, int, str]] = [
        (qtiles.to(torch.int64), pairs, 16, 256, 128, "expected int32 tinygemm tiles"),
        (qtiles[..., :1].contiguous().expand(2, 2, 32, 3), pairs, 16, 256, 128, "expected int32"),
        (qtiles, pairs, 32, 256, 128, "do not hold"),
        (qtiles, pairs, 16, 512, 128, "do not hold"),
        (qtiles, pairs, 16, 256, 96, "positive divisor"),
        (qtiles, pairs, 16, 256, 0, "positive divisor"),
        (qtiles, pairs[:1], 16, 256, 128, "expected floating scales_and_zeros"),
        (qtiles, pairs.to(torch.int16), 16, 256, 128, "expected floating"),
        (qtiles, pairs.to("meta"), 16, 256, 128, "one device"),
    ]
    for tiles, sz, n, k, g, message in cases:
        for backend in ("auto", "torch", "triton"):
            with pytest.raises(ConversionError, match=message):
                dequantize_tiles(tiles, sz, n, k, g, backend=backend)


def test_the_triton_backend_refuses_float32_and_bad_blocks() -> None:
    pytest.importorskip("triton")
    qtiles, pairs = module_tensors(16, 256, 128, dtype=torch.float32)
    with pytest.raises(ConversionError, match="float32 products are inexact"):
        dequantize_tiles(qtiles, pairs, 16, 256, 128, backend="triton")
    bf16 = pairs.to(torch.bfloat16)
    fine = torch.zeros((64, 16, 2), dtype=torch.bfloat16)  # group size 4: chunks of 8 inputs would span two groups
    with pytest.raises(ConversionError, match="not a multiple of 8"):
        dequantize_tiles(qtiles, fine, 16, 256, 4, backend="triton")
    assert same_bits(dequantize_tiles(qtiles, fine, 16, 256, 4), dequantize_tiles_torch(qtiles, fine, 16, 256, 4))
    for kwargs in ({"block_n": 12}, {"block_k": 4}, {"block_k": 96}, {"block_n": 0}):
        with pytest.raises(InvalidArgumentError, match=r"block_[nk]=\d+: expected a power of two >= \d+; pass e\.g\."):
            dequantize_tiles_triton(qtiles, bf16, 16, 256, 128, **kwargs)


def test_an_unknown_backend_is_an_invalid_argument_that_names_the_choices() -> None:
    """A bad argument is InvalidArgumentError (the CLI's exit 2), still a ValueError for older callers."""
    qtiles, pairs = module_tensors(16, 256, 128, dtype=torch.bfloat16)
    with pytest.raises(InvalidArgumentError, match=r"backend='cuda': expected 'auto', 'triton' or 'torch'") as info:
        dequantize_tiles(qtiles, pairs, 16, 256, 128, backend="cuda")  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


# --------------------------------------------------------------------------------------------------------------
# GPU: the compiled kernel


@pytest.fixture(scope="module")
def cuda() -> torch.device:
    if not torch.cuda.is_available():
        pytest.fail("the gpu tests need a CUDA GPU; run them with `pytest -m gpu` on the GPU machine")
    return torch.device("cuda", 0)


def cuda_tensors(
    n: int, k: int, group_size: int, cuda: torch.device, *, dtype: torch.dtype = torch.bfloat16
) -> tuple[torch.Tensor, torch.Tensor]:
    weight = random_weight(n, k, group_size, seed=n + k + group_size, device=str(cuda))
    module = TorchInt4Linear.from_unpacked(weight, device=cuda)  # aten's own CUDA pack
    return module.qtiles, module.scales_and_zeros.to(dtype)


GPU_CASES = [
    *((4096, 4096, g) for g in (32, 64, 128, 256)),
    (4096, 11008, 128),
    (11008, 4096, 128),
    (4096, 11008, 32),
    (256, 192, 64),  # innerKTiles 4
    (256, 96, 32),  # innerKTiles 2
]


@pytest.mark.gpu
@pytest.mark.parametrize(("n", "k", "group_size"), GPU_CASES)
def test_cuda_kernel_matches_torch_bit_for_bit(cuda: torch.device, n: int, k: int, group_size: int) -> None:
    qtiles, pairs = cuda_tensors(n, k, group_size, cuda)
    expected = dequantize_tiles_torch(qtiles, pairs, n, k, group_size)
    assert same_bits(dequantize_tiles(qtiles, pairs, n, k, group_size, backend="triton"), expected)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_kernel_rounds_like_torch_over_many_binades(cuda: torch.device, dtype: torch.dtype) -> None:
    qtiles, pairs = spread_tensors(4096, 11008, 128, dtype, seed=1)
    qtiles, pairs = qtiles.to(cuda), pairs.to(cuda)
    expected = dequantize_tiles_torch(qtiles, pairs, 4096, 11008, 128)
    assert same_bits(dequantize_tiles_triton(qtiles, pairs, 4096, 11008, 128), expected)


@pytest.mark.gpu
def test_cuda_hardware_rounding_equals_the_interpreters_bit_rounding(cuda: torch.device) -> None:
    # What the CPU tests check (ROUND_BY_BITS) is what the GPU computes with cvt.rn.bf16.f32.
    qtiles, pairs = spread_tensors(4096, 4096, 64, torch.bfloat16, seed=2)
    qtiles, pairs = qtiles.to(cuda), pairs.to(cuda)
    hardware = _int4_dequant._launch(qtiles, pairs, 4096, 4096, 64, round_by_bits=False)
    by_bits = _int4_dequant._launch(qtiles, pairs, 4096, 4096, 64, round_by_bits=True)
    assert same_bits(hardware, by_bits)


@pytest.mark.gpu
@pytest.mark.parametrize(("n", "k"), [(4096, 4096), (11008, 4096), (4096, 11008)])
def test_module_dense_path_uses_the_kernel_and_equals_linear_with_the_torch_weight(
    cuda: torch.device, n: int, k: int
) -> None:
    weight = random_weight(n, k, 128, seed=n - k, bias=True, device=str(cuda))
    module = TorchInt4Linear.from_unpacked(weight, device=cuda, dense_threshold=1)
    x = torch.randn((300, k), generator=torch.Generator().manual_seed(3)).to(cuda, torch.bfloat16)
    ran = ops_called(lambda: module(x))
    assert "aten::linear" in ran
    assert "aten::addcmul" not in ran  # the torch dequantization did not run: the kernel did
    assert triton_failure() is None
    dense = dequantize_tiles_torch(module.qtiles, module.scales_and_zeros, n, k, 128)
    assert module.bias is not None
    expected = F.linear(x, dense).add_(module.bias)  # what forward computes, with the torch weight
    assert torch.equal(module(x), expected)


@pytest.mark.gpu
def test_module_dense_path_replays_in_a_cuda_graph(cuda: torch.device) -> None:
    module = TorchInt4Linear.from_unpacked(random_weight(4096, 4096, 128, seed=5), device=cuda, dense_threshold=1)
    x = torch.randn((256, 4096), device=cuda).to(torch.bfloat16)
    eager = module(x)  # compiles the kernel outside the capture
    side = torch.cuda.Stream(device=cuda)  # type: ignore[no-untyped-call]
    side.wait_stream(torch.cuda.current_stream(cuda))
    with torch.cuda.stream(side):
        module(x)
    torch.cuda.current_stream(cuda).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = module(x)
    graph.replay()
    torch.cuda.synchronize(cuda)
    assert torch.equal(captured, eager)
    assert triton_failure() is None


@pytest.mark.gpu
@pytest.mark.parametrize(("n", "k"), [(12288, 4096), (4096, 11008)])
def test_builder_launches_directly_with_the_same_bits(
    cuda: torch.device, n: int, k: int, caplog: pytest.LogCaptureFixture
) -> None:
    qtiles, pairs = spread_tensors(n, k, 128, torch.bfloat16, seed=n + k)
    qtiles, pairs = qtiles.to(cuda), pairs.to(cuda)
    expected = dequantize_tiles_torch(qtiles, pairs, n, k, 128)
    builder = DenseBuilder(qtiles, pairs, n, k, 128)
    caplog.set_level(logging.DEBUG, logger=_int4_dequant.__name__)
    assert same_bits(builder(), expected)  # first call: the checked launch, which binds the direct one
    bound = builder._direct
    assert bound is not None
    ran = ops_called(builder)
    assert "aten::addcmul" not in ran
    assert same_bits(builder(), expected)
    assert builder._direct is bound  # the direct launch worked (a failing one is dropped for good)
    assert _int4_dequant._STATE.direct_failure is None
    assert not [r for r in caplog.records if "failed" in r.getMessage()], caplog.text
    other_tiles, other_pairs = spread_tensors(n, k, 128, torch.bfloat16, seed=n - k)
    qtiles.copy_(other_tiles)
    pairs.copy_(other_pairs)
    assert same_bits(builder(), dequantize_tiles_torch(qtiles, pairs, n, k, 128))
    assert triton_failure() is None


def _bound(builder: DenseBuilder) -> object:
    return builder._direct


@pytest.mark.gpu
def test_builder_whose_direct_launch_fails_goes_back_to_the_normal_launch_for_good(
    cuda: torch.device, fresh_state: _int4_dequant._TritonState, caplog: pytest.LogCaptureFixture
) -> None:
    qtiles, pairs = cuda_tensors(4096, 4096, 128, cuda)
    builder = DenseBuilder(qtiles, pairs, 4096, 4096, 128)
    expected = builder()
    assert builder._direct is not None

    def broken(*args: object) -> None:
        raise TypeError("launcher signature changed")

    builder._direct = broken
    caplog.set_level(logging.DEBUG, logger=_int4_dequant.__name__)
    for _ in range(3):
        assert same_bits(builder(), expected)
    assert _bound(builder) is None  # not bound again: every later call launches normally
    assert fresh_state.direct_failure == "TypeError: launcher signature changed"
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1, caplog.text
    assert triton_failure() is None  # the kernel itself still runs
