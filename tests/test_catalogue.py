"""catalogue.py: every kernel version has a frozen, hashable spec whose fields are its requirements."""

from __future__ import annotations

import dataclasses
import json

import pytest
from packaging.specifiers import SpecifierSet

from awq_autoselect.capability import ComputeCapability
from awq_autoselect.catalogue import (
    CATALOGUE,
    INT4_OPS,
    INT4_OPS_CPU,
    Kernel,
    KernelSpec,
    Priority,
    Regime,
    get_spec,
    parse_kernel,
)
from awq_autoselect.errors import UnknownVersionError
from tests.helpers import run_cli


def test_every_kernel_has_one_spec() -> None:
    assert list(CATALOGUE) == list(Kernel)
    assert all(spec.kernel is kernel for kernel, spec in CATALOGUE.items())


def test_specs_are_frozen_hashable_and_the_table_is_read_only() -> None:
    specs = set(CATALOGUE.values())
    assert len(specs) == len(Kernel)
    spec = CATALOGUE[Kernel.GEMV]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.summary = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        CATALOGUE[Kernel.GEMV] = spec  # type: ignore[index]


def test_requirements_are_fields_not_special_cases() -> None:
    spec = CATALOGUE[Kernel.TORCH_INT4]
    assert spec.torch == SpecifierSet(">=2.6")
    assert spec.ops_for("cuda") == INT4_OPS
    assert spec.ops_for("cpu") == INT4_OPS_CPU
    assert spec.ops_for("xpu") == ()
    assert spec.activation_dtype("cuda") == "bfloat16"
    assert CATALOGUE[Kernel.GEMV].activation_dtype("cuda") is None
    for other in CATALOGUE.values():
        assert isinstance(other.priority, Priority)
        assert other.torch is None or isinstance(other.torch, SpecifierSet)
        assert {device for device, _ in other.torch_ops} <= other.devices


@pytest.mark.parametrize(
    ("name", "kernel"),
    [
        ("GEMV-fast", Kernel.GEMV_FAST),
        ("gemvfast", Kernel.GEMV_FAST),
        ("ExLlama_V2", Kernel.EXLLAMAV2),
        ("tinygemm", Kernel.TORCH_INT4),
        ("naive", Kernel.GEMM_TORCH),
        ("triton", Kernel.GEMM_TRITON),
        (" GEMM ", Kernel.GEMM),
    ],
)
def test_parse_kernel_aliases(name: str, kernel: Kernel) -> None:
    assert parse_kernel(name) is kernel
    assert get_spec(name) is CATALOGUE[kernel]


@pytest.mark.parametrize("bad", ["gemx", "", "auto", "gemm2"])
def test_unknown_names(bad: str) -> None:
    with pytest.raises(UnknownVersionError, match="expected one of gemm"):
        parse_kernel(bad)


@pytest.mark.parametrize(
    ("kernel", "capability", "runs"),
    [
        (Kernel.GEMV, "7.5", True),
        (Kernel.GEMV, "7.0", False),
        (Kernel.GEMV, "9.0", True),
        (Kernel.GEMV, "12.0", False),  # prebuilt images stop at sm_90, no PTX
        (Kernel.GEMV_FAST, "7.5", False),
        (Kernel.MARLIN, "12.0", True),  # built by the user for the local GPU
        (Kernel.TORCH_INT4, "7.5", False),
    ],
)
def test_runs_on(kernel: Kernel, capability: str, runs: bool) -> None:
    ok, why = CATALOGUE[kernel].runs_on(ComputeCapability.parse(capability))
    assert ok is runs
    assert bool(why) is not runs


def test_priorities_cover_every_regime() -> None:
    for spec in CATALOGUE.values():
        assert all(isinstance(spec.priority.of(regime), int) for regime in Regime)


def test_cli_catalogue_prints_the_table() -> None:
    code, out, _ = run_cli("catalogue", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [row["kernel"] for row in rows] == [k.value for k in Kernel]
    by_name = {row["kernel"]: row for row in rows}
    assert by_name["gemv"]["priority"] == dataclasses.asdict(CATALOGUE[Kernel.GEMV].priority)
    assert isinstance(KernelSpec.__doc__, str)


def _autoawq_import_error() -> str | None:
    """Why AutoAWQ does not import in this environment, or None (it does)."""
    import importlib

    try:
        importlib.import_module("awq")
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.mark.parametrize("kernel", list(Kernel), ids=[k.value for k in Kernel])
def test_every_module_class_path_in_the_catalogue_imports_to_an_nn_module(kernel: Kernel) -> None:
    """KernelSpec.module_class is the one kernel -> class table (the trials build their layers from it, and
    ``catalogue --json`` prints it): every path must name a class that exists. A path inside AutoAWQ (or a module of
    ours that subclasses AutoAWQ's) can only import where AutoAWQ does; this environment is asked, not assumed."""
    import importlib

    import torch

    path = CATALOGUE[kernel].module_class
    module_name, _, class_name = path.rpartition(".")
    assert module_name.startswith(("awq.", "awq_autoselect.")), path
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        why = _autoawq_import_error()
        if why is not None and (exc.name or "").partition(".")[0] == "awq":
            pytest.skip(f"{path} lives in or builds on AutoAWQ, which does not import here ({why})")
        raise
    cls = getattr(module, class_name, None)
    assert isinstance(cls, type), f"{path}: {module_name} has no class {class_name}"
    assert issubclass(cls, torch.nn.Module), path
    assert f"{cls.__module__}.{cls.__qualname__}" == path  # named where it is defined, not where it is re-exported


def test_zero_minus_one_marks_the_kernels_whose_autoawq_layers_repack_zero_points_so() -> None:
    """The flag follows AutoAWQ's source: the layer modules that call unpack_reorder_pack (which stores zero - 1)."""
    import importlib
    import inspect

    for kernel, spec in CATALOGUE.items():
        if not spec.module_class.startswith("awq."):
            assert not spec.zero_minus_one, kernel
            continue
        module = importlib.import_module(spec.module_class.rsplit(".", 1)[0])
        assert ("unpack_reorder_pack" in inspect.getsource(module)) == spec.zero_minus_one, kernel


def test_autoawq_exllama_repacking_loses_a_zero_point_of_0_and_keeps_1_to_15() -> None:
    """Why the flag exists, on AutoAWQ's own code: GEMM qzeros repacked by unpack_reorder_pack, read back the way
    the ExLlama kernels read them (``(nibble + 1) & 0x0f``: KRN:awq_ext/exllama/cuda_func/q4_matmul.cu and
    q4_matrix.cu, KRN:awq_ext/exllamav2/cuda/q_gemm_kernel_gptq.cuh)."""
    import torch
    from awq.utils.packing_utils import reverse_awq_order, unpack_awq, unpack_reorder_pack

    gen = torch.Generator().manual_seed(0)
    qweight = torch.randint(-(2**31), 2**31 - 1, (256, 8), generator=gen, dtype=torch.int32)

    def exllama_zeros(zero_points: torch.Tensor) -> torch.Tensor:
        words = torch.zeros((2, 8), dtype=torch.int32)
        for slot, column in enumerate([0, 2, 4, 6, 1, 3, 5, 7]):  # AWQ's packing order within a word
            words |= (zero_points.view(2, 8, 8)[:, :, column] & 0xF) << (4 * slot)
        _, unpacked = reverse_awq_order(*unpack_awq(qweight, words, 4), 4)
        assert torch.equal(unpacked & 0xF, zero_points)  # the words hold these zero points
        _, repacked = unpack_reorder_pack(qweight, words, 4)
        nibbles = torch.stack([(repacked >> (4 * i)) & 0xF for i in range(8)], dim=-1).view(2, 64)
        return (nibbles + 1) & 0xF

    from_one = torch.randint(1, 16, (2, 64), generator=gen, dtype=torch.int32)
    assert torch.equal(exllama_zeros(from_one), from_one)
    with_zero = from_one.clone()
    with_zero[0, 0] = 0  # stored as -1
    read = exllama_zeros(with_zero)
    # pack_exllama sums the shifted nibbles: the -1 borrows from the next zero point of its word (the 0 itself
    # reads back, as 15 + 1 masked)
    assert int(read[0, 0]) == 0
    assert int(read[0, 1]) == (int(with_zero[0, 1]) - 1) & 0xF
    assert torch.equal(read[0, 8:], with_zero[0, 8:]) and torch.equal(read[1], with_zero[1])
