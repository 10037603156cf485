"""Tests for awq_autoselect.selection: table-driven over GPU generations, environments, checkpoints, workloads.

Planned environments come from ``Environment.assume`` (the public planning feature); the real checkpoint
tests use AutoAWQ checkpoints quantized at test time and this machine's real probe and detection.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from awq_autoselect.capability import ComputeCapability
from awq_autoselect.catalogue import CATALOGUE, Kernel, Layout
from awq_autoselect.checkpoint import CheckpointInfo, QuantConfig, QuantizedLayer, read_checkpoint
from awq_autoselect.environment import Environment, probe_environment
from awq_autoselect.environment.diagnose import classify_import_error
from awq_autoselect.errors import (
    InvalidArgumentError,
    InvalidCapabilityError,
    InvalidDeviceSpecError,
    NoCompatibleKernelError,
    UnknownVersionError,
    VersionUnavailableError,
)
from awq_autoselect.selection import (
    Candidate,
    Selection,
    Workload,
    layout_conversion,
    select_awq_version,
)
from awq_autoselect.selection.select import _rank
from awq_autoselect.workload import Regime

QuantizedFactory = Callable[..., Path]
DOCS = Path(__file__).resolve().parent.parent / "docs" / "selection.md"

AWQ_KERNELS = ["gemm", "gemv", "gemv_fast", "exllama", "exllamav2", "gemm_triton"]

# The planned environments of docs/selection.md's legend.
ENVIRONMENTS: dict[str, Callable[[], Environment]] = {
    "autoawq": lambda: Environment.assume(AWQ_KERNELS, torch_version="2.5.1"),
    "autoawq+marlin": lambda: Environment.assume([*AWQ_KERNELS, "marlin"], torch_version="2.5.1"),
    "torch": lambda: Environment.assume(["gemm_triton"], torch_version="2.11.0"),
    "torch-cpu": lambda: Environment.assume([], torch_version="2.11.0", torch_cuda_version=None),
    "ipex": lambda: Environment.assume(["ipex"], torch_version="2.8.0", torch_cuda_version=None),
}

WORKLOADS = {
    "decode": Workload(batch_size=1, prompt_tokens=128, new_tokens=512),
    "prefill": Workload(batch_size=1, prompt_tokens=2048, new_tokens=128),
    "batch": Workload(batch_size=16, prompt_tokens=256, new_tokens=256),
}

GENERATIONS = {
    "Pascal": "6.1",
    "Volta": "7.0",
    "Turing": "7.5",
    "Ampere A100": "8.0",
    "Ampere RTX 30": "8.6",
    "Ada": "8.9",
    "Hopper": "9.0",
    "Blackwell B200": "10.0",
    "Blackwell RTX 50": "12.0",
}


def _checkpoint(text: str) -> QuantConfig:
    """``"gemm g128"``, ``"marlin g128 sym"`` -> QuantConfig."""
    layout, group, *rest = text.split()
    return QuantConfig(group_size=int(group[1:]), zero_point="sym" not in rest, layout=Layout(layout))


def _viable(selection: Selection) -> set[Kernel]:
    return {c.kernel for c in selection.candidates if c.viable}


# --- Workload ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "prompt", "new", "regime"),
    [
        (1, 128, 128, Regime.DECODE),  # equal: decode (GEMV wins once output >~ prompt)
        (1, 16, 512, Regime.DECODE),
        (1, 129, 128, Regime.PREFILL),
        (1, 2048, 128, Regime.PREFILL),
        (7, 16, 512, Regime.DECODE),  # GEMV_fast's decode kernel still runs at batch 7
        (7, 2048, 16, Regime.PREFILL),
        (8, 16, 512, Regime.BATCH),  # GEMV switches kernels above 8 rows; GEMV_fast decode needs < 8
        (64, 2048, 1, Regime.BATCH),
        (1, 1, 0, Regime.PREFILL),
    ],
)
def test_workload_regime(batch: int, prompt: int, new: int, regime: Regime) -> None:
    assert Workload(batch, prompt, new).regime is regime


@pytest.mark.parametrize(
    "kwargs",
    [{"batch_size": 0}, {"prompt_tokens": 0}, {"new_tokens": -1}, {"batch_size": True}, {"batch_size": 1.5}],
)
def test_workload_rejects_bad_sizes(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError, match=next(iter(kwargs))):
        Workload(**kwargs)  # type: ignore[arg-type]


def test_workload_overrides() -> None:
    env = ENVIRONMENTS["torch"]()
    selection = select_awq_version(
        None, capability="9.0", environment=env, workload=WORKLOADS["decode"], batch_size=32, new_tokens=7
    )
    assert selection.workload == Workload(batch_size=32, prompt_tokens=128, new_tokens=7)
    assert selection.workload.regime is Regime.BATCH
    assert select_awq_version(None, capability="9.0", environment=env, prompt_tokens=4000).workload.regime is (
        Regime.PREFILL
    )


# --- the worked table of docs/selection.md -----------------------------------------------------------------


def _doc_rows() -> list[tuple[str, str, str, str, str, str]]:
    text = DOCS.read_text(encoding="utf-8")
    block = text.split("<!-- worked-table:start -->")[1].split("<!-- worked-table:end -->")[0]
    rows = []
    for line in block.strip().splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 6, line
        gpu, modules, checkpoint, workload, choice, then = cells
        rows.append((gpu, modules, checkpoint, workload, choice.strip("*"), then))
    assert len(rows) >= 20
    return rows


@pytest.mark.parametrize("row", _doc_rows(), ids=lambda row: "-".join(row[:4]).replace(" ", "_"))
def test_docs_worked_table(row: tuple[str, str, str, str, str, str]) -> None:
    gpu, modules, checkpoint, workload, choice, then = row
    selection = select_awq_version(
        _checkpoint(checkpoint),
        capability=None if gpu == "cpu" else gpu.split("+"),
        device="cpu" if gpu == "cpu" else None,
        environment=ENVIRONMENTS[modules](),
        workload=WORKLOADS[workload],
    )
    assert selection.kernel.value == choice
    expected_rest = [k for k in then.split(" > ") if k]
    assert [k.value for k in selection.chain[1:]] == expected_rest


# --- GPU generations x environments ------------------------------------------------------------------------

# Which kernels run on which GPU with every module installed and no checkpoint constraint (facts: the
# autoawq-kernels wheel images sm_75-sm_90 without PTX, awq_v2_ext sm_80-sm_90; Marlin, Triton and tinygemm
# need sm_80 and are compiled for the local GPU).
_AWQ_EXT = {Kernel.GEMM, Kernel.GEMV, Kernel.EXLLAMA, Kernel.EXLLAMAV2}
_SM80_LOCAL = {Kernel.MARLIN, Kernel.GEMM_TRITON, Kernel.TORCH_INT4}
_EXPECTED_ON_GPU = {
    "6.1": {Kernel.GEMM_TORCH},
    "7.0": {Kernel.GEMM_TORCH},
    "7.5": {Kernel.GEMM_TORCH, *_AWQ_EXT},
    "8.0": {Kernel.GEMM_TORCH, *_AWQ_EXT, Kernel.GEMV_FAST, *_SM80_LOCAL},
    "8.6": {Kernel.GEMM_TORCH, *_AWQ_EXT, Kernel.GEMV_FAST, *_SM80_LOCAL},
    "8.9": {Kernel.GEMM_TORCH, *_AWQ_EXT, Kernel.GEMV_FAST, *_SM80_LOCAL},
    "9.0": {Kernel.GEMM_TORCH, *_AWQ_EXT, Kernel.GEMV_FAST, *_SM80_LOCAL},
    "10.0": {Kernel.GEMM_TORCH, *_SM80_LOCAL},
    "12.0": {Kernel.GEMM_TORCH, *_SM80_LOCAL},
}


@pytest.mark.parametrize(("generation", "capability"), GENERATIONS.items())
def test_generation_all_installed(generation: str, capability: str) -> None:
    selection = select_awq_version(None, capability=capability, environment=Environment.assume())
    assert _viable(selection) == _EXPECTED_ON_GPU[capability], generation
    assert selection.device == "cuda"
    assert selection.capabilities == (ComputeCapability.parse(capability),)
    for kernel, reasons in selection.rejected.items():
        if kernel is Kernel.IPEX:
            assert reasons == ("runs on cpu, xpu only; the device is cuda",)
        elif CATALOGUE[kernel].experimental and ComputeCapability.parse(capability) >= (8, 0):
            assert reasons[0].startswith("experimental, not chosen automatically")
        else:
            assert any(capability in reason or ComputeCapability.parse(capability).sm in reason for reason in reasons)


@pytest.mark.parametrize(("generation", "capability"), GENERATIONS.items())
def test_generation_nothing_installed_current_torch(generation: str, capability: str) -> None:
    """A current CUDA torch with its triton and no autoawq-kernels: the situation on the lent H100/H200."""
    env = Environment.assume(["gemm_triton"], torch_version="2.11.0+cu130", torch_cuda_version="13.0")
    selection = select_awq_version(_checkpoint("gemm g128"), capability=capability, environment=env)
    sm80 = ComputeCapability.parse(capability) >= (8, 0)
    assert selection.kernel is (Kernel.TORCH_INT4 if sm80 else Kernel.GEMM_TORCH), generation
    expected = {Kernel.TORCH_INT4, Kernel.GEMM_TRITON, Kernel.GEMM_TORCH} if sm80 else {Kernel.GEMM_TORCH}
    assert _viable(selection) == expected
    assert "awq_ext: not assumed installed" in " ".join(selection.rejected[Kernel.GEMV])


def _broken_environment() -> Environment:
    """torch 2.11 + CUDA 13 with the autoawq-kernels 0.0.9 wheel installed: its real import errors, classified."""
    base = Environment.assume(["gemm_triton"], torch_version="2.11.0+cu130", torch_cuda_version="13.0")
    undefined = ImportError(
        "awq_ext.cpython-312-x86_64-linux-gnu.so: undefined symbol: "
        "_ZN3c104cuda29c10_cuda_check_implementationEiPKcS2_ib"
    )
    modules = dict(base.modules)
    for name in ("awq_ext", "awq_v2_ext", "exl_ext", "exlv2_ext"):
        modules[name] = classify_import_error(
            name, undefined, version="0.0.9", torch_version="2.11.0+cu130", torch_cuda="13.0", kernels_version="0.0.9"
        )
    return dataclasses.replace(
        base, modules=types.MappingProxyType(modules), assumed=False, autoawq_kernels_version="0.0.9"
    )


@pytest.mark.parametrize(("generation", "capability"), GENERATIONS.items())
def test_generation_broken_wheel(generation: str, capability: str) -> None:
    selection = select_awq_version(_checkpoint("gemv g128"), capability=capability, environment=_broken_environment())
    for kernel in (Kernel.GEMM, Kernel.GEMV, Kernel.GEMV_FAST, Kernel.EXLLAMA, Kernel.EXLLAMAV2):
        assert kernel not in selection.chain, generation
    reasons = " ".join(selection.rejected[Kernel.GEMV])
    if ComputeCapability.parse(capability) >= (7, 5) and capability not in ("10.0", "12.0"):
        # The GPU would run it; the only reason left is the torch ABI, and it says what to do.
        assert selection.rejected[Kernel.GEMV] == (selection.rejected[Kernel.GEMV][0],)
        assert "was built for torch 2.5.1; this is torch 2.11.0+cu130" in reasons
        assert "reinstall autoawq-kernels built for your torch" in reasons
    assert not selection.environment_assumed


def test_ipex_present_on_cpu() -> None:
    env = ENVIRONMENTS["ipex"]()
    selection = select_awq_version(_checkpoint("gemm g128"), device="cpu", environment=env)
    assert selection.chain == (Kernel.TORCH_INT4, Kernel.IPEX, Kernel.GEMM_TORCH)
    assert selection.capabilities == ()
    gemv_only = select_awq_version(_checkpoint("gemv g64"), device="cpu", environment=env, version="ipex")
    assert gemv_only.kernel is Kernel.IPEX
    assert gemv_only.candidate("ipex").conversion == (Layout.GEMV, Layout.GEMM)


def test_cpu_torch_without_int4_cpu_ops() -> None:
    env = Environment.assume([], torch_version="2.5.1", torch_cuda_version=None)
    selection = select_awq_version(_checkpoint("gemm g128"), device="cpu", environment=env)
    assert selection.chain == (Kernel.GEMM_TORCH,)
    reasons = selection.rejected[Kernel.TORCH_INT4]
    assert "needs torch >= 2.6; this is torch 2.5.1" in reasons
    assert any("_weight_int4pack_mm_for_cpu" in reason for reason in reasons)


# --- checkpoints: layout x group size x zero point ---------------------------------------------------------

_GROUP_OK = {
    Kernel.GEMM: {32, 64, 128},
    Kernel.GEMM_TRITON: {32, 64, 128},
    Kernel.GEMM_TORCH: {32, 64, 128},
    Kernel.GEMV: {64, 128},
    Kernel.GEMV_FAST: {128},
    Kernel.MARLIN: {128},
    Kernel.EXLLAMA: {32, 64, 128},
    Kernel.EXLLAMAV2: {32, 64, 128},
    Kernel.TORCH_INT4: {32, 64, 128},
}


@pytest.mark.parametrize("layout", list(Layout))
@pytest.mark.parametrize("group", [32, 64, 128])
@pytest.mark.parametrize("zero_point", [True, False])
def test_checkpoint_matrix(layout: Layout, group: int, zero_point: bool) -> None:
    quant = QuantConfig(group_size=group, zero_point=zero_point, layout=layout)
    selection = select_awq_version(quant, capability="8.6", environment=Environment.assume())
    expected = {
        kernel
        for kernel, groups in _GROUP_OK.items()
        if group in groups and not (kernel is Kernel.MARLIN and zero_point)
    }
    assert _viable(selection) == expected
    for candidate in selection.candidates:
        spec = CATALOGUE[candidate.kernel]
        if candidate.viable:
            expected_conversion = None if spec.layout is layout else (layout, spec.layout)
            assert candidate.conversion == expected_conversion
            if expected_conversion is not None:
                assert f"converts {layout.value} -> {spec.layout.value} at load, exact" in candidate.notes
            if not zero_point and candidate.kernel is not Kernel.MARLIN:
                assert "symmetric weights run with a constant zero point of 8 (exact)" in candidate.notes
    if zero_point:
        assert any("symmetric checkpoint" in r for r in selection.rejected[Kernel.MARLIN])
    if group != 128:
        assert any(f"group size {group} is not supported" in r for r in selection.rejected[Kernel.GEMV_FAST])
    # decode on an RTX 30 with everything installed: Marlin if it can, else GEMV_fast, else GEMV (64/128),
    # else ExLlamaV2
    top = (
        Kernel.MARLIN
        if not zero_point and group == 128
        else Kernel.GEMV_FAST
        if group == 128
        else Kernel.GEMV
        if group == 64
        else Kernel.EXLLAMAV2
    )
    assert selection.kernel is top


@pytest.mark.parametrize(
    ("source", "target", "zero_point", "ok"),
    [
        (Layout.GEMM, Layout.GEMV, True, True),
        (Layout.GEMV, Layout.GEMV_FAST, True, True),
        (Layout.GEMV_FAST, Layout.GEMM, True, True),
        (Layout.MARLIN, Layout.GEMM, False, True),
        (Layout.MARLIN, Layout.GEMV_FAST, False, True),
        (Layout.GEMM, Layout.MARLIN, False, True),
        (Layout.GEMM, Layout.MARLIN, True, False),
        (Layout.GEMV_FAST, Layout.MARLIN, True, False),
        (Layout.MARLIN, Layout.MARLIN, False, True),
    ],
)
def test_layout_conversion(source: Layout, target: Layout, zero_point: bool, ok: bool) -> None:
    converts, why = layout_conversion(source, target, zero_point=zero_point)
    assert converts is ok
    assert (why == "") is ok
    if not ok:
        assert "zero_point=False" in why


def test_bits_other_than_4_fit_nothing() -> None:
    with pytest.raises(NoCompatibleKernelError) as caught:
        select_awq_version(QuantConfig(bits=8), capability="9.0", environment=Environment.assume())
    assert set(caught.value.reasons) == {k.value for k in Kernel}
    for kernel in Kernel:
        if kernel is not Kernel.IPEX:
            assert "runs 4-bit weights only; the checkpoint has 8-bit weights" in caught.value.reasons[kernel.value]
    message = str(caught.value)
    assert "no AWQ kernel version can run the checkpoint (8-bit gemm, g128, asymmetric) on cuda 9.0" in message
    assert "gemm_torch: runs 4-bit weights only" in message


def test_per_channel_groups_resolve_to_in_features(quantized: QuantizedFactory) -> None:
    info = read_checkpoint(quantized())
    layer = info.layers[0]
    narrow = QuantizedLayer(layer.prefix, 128, layer.out_features, layer.layout, layer.has_bias, layer.nbytes)
    per_channel = QuantConfig(group_size=-1)
    env = Environment.assume()
    # Every layer 128 wide: GEMV and GEMV_fast run it as group size 128.
    fits = dataclasses.replace(info, quant=per_channel, layers=(narrow,))
    selection = select_awq_version(fits, capability="8.9", environment=env)
    assert {Kernel.GEMV, Kernel.GEMV_FAST} <= _viable(selection)
    assert "per-channel groups equal in_features here (128)" in selection.candidate("gemv").notes
    # The real tiny model has 256- and 512-wide layers: no 64/128 group for GEMV, no 512 for tinygemm.
    wide = dataclasses.replace(info, quant=per_channel)
    selection = select_awq_version(wide, capability="8.9", environment=env)
    assert Kernel.GEMV not in selection.chain
    assert Kernel.TORCH_INT4 not in selection.chain
    assert any("per-channel (-1) is not supported" in r for r in selection.rejected[Kernel.GEMV])
    assert {Kernel.GEMM, Kernel.EXLLAMAV2, Kernel.GEMM_TRITON, Kernel.EXLLAMA} <= _viable(selection)
    # Without layer shapes a per-channel checkpoint only passes kernels that list -1.
    selection = select_awq_version(per_channel, capability="8.9", environment=env)
    assert Kernel.GEMV not in selection.chain
    assert Kernel.GEMM in selection.chain


def test_layer_shapes_are_checked(quantized: QuantizedFactory) -> None:
    info = read_checkpoint(quantized())
    odd = QuantizedLayer("model.layers.0.mlp.odd_proj", 1000, 100, Layout.GEMM, False, 0)
    shaped = dataclasses.replace(info, layers=(*info.layers, odd))
    selection = select_awq_version(shaped, capability="9.0", environment=Environment.assume())
    total = len(shaped.layers)
    for kernel, need in [
        (Kernel.GEMM, "out_features % 64 == 0"),
        (Kernel.GEMV_FAST, "in_features % 64 == 0 and out_features % 4 == 0"),
        (Kernel.TORCH_INT4, "in_features % 128 == 0 and out_features % 8 == 0"),
        (Kernel.EXLLAMAV2, "in_features % 32 == 0 and out_features % 32 == 0"),
    ]:
        assert selection.rejected[kernel] == (
            f"needs {need}; 1 of {total} quantized layers do not fit, e.g. model.layers.0.mlp.odd_proj "
            "(in_features 1000, out_features 100)",
        )
    assert selection.kernel is Kernel.GEMV  # GEMV has no shape multiple in the catalogue
    assert selection.chain == (Kernel.GEMV, Kernel.EXLLAMA, Kernel.GEMM_TRITON, Kernel.GEMM_TORCH)
    # The same checkpoint read from its quantization config alone: shapes unknown, noted.
    unknown = select_awq_version(info.quant, capability="9.0", environment=Environment.assume())
    assert any(note.startswith("layer shapes not checked") for note in unknown.candidate("torch_int4").notes)
    assert "only the quantization config was given: layer shapes were not checked" in unknown.notes


# --- mixed GPUs --------------------------------------------------------------------------------------------


def test_mixed_ampere_turing_excludes_sm80_kernels() -> None:
    selection = select_awq_version(
        _checkpoint("gemm g128"), capability=["8.6", (7, 5)], environment=Environment.assume()
    )
    assert selection.capabilities == (ComputeCapability(8, 6), ComputeCapability(7, 5))
    for kernel in (Kernel.GEMV_FAST, Kernel.GEMM_TRITON, Kernel.TORCH_INT4):
        assert kernel not in selection.chain
        assert any(r.startswith("GPU 7.5 (Turing): needs compute capability >=") for r in selection.rejected[kernel])
    assert selection.kernel is Kernel.GEMV
    assert _viable(selection) == {Kernel.GEMM_TORCH, *_AWQ_EXT}


def test_mixed_hopper_blackwell_excludes_prebuilt_kernels() -> None:
    selection = select_awq_version(
        _checkpoint("gemm g128"), capability=("9.0", "12.0"), environment=Environment.assume()
    )
    for kernel in (*_AWQ_EXT, Kernel.GEMV_FAST):
        reasons = selection.rejected[kernel]
        assert len(reasons) == 1
        assert reasons[0].startswith("GPU 12.0 (Blackwell): the released")
        assert "no kernel image for sm_120" in reasons[0]
    assert selection.kernel is Kernel.TORCH_INT4
    assert _viable(selection) == {Kernel.GEMM_TORCH, *_SM80_LOCAL} - {Kernel.MARLIN}


def test_duplicate_capabilities_collapse() -> None:
    selection = select_awq_version(None, capability=["9.0", "9.0", 9.0], environment=Environment.assume())
    assert selection.capabilities == (ComputeCapability(9, 0),)


@pytest.mark.parametrize("bad", ["8", "abc", (8,), ["8.6", "x"]])
def test_bad_capability(bad: object) -> None:
    with pytest.raises(InvalidCapabilityError):
        select_awq_version(None, capability=bad, environment=Environment.assume())  # type: ignore[arg-type]


# --- explicit versions -------------------------------------------------------------------------------------


def test_explicit_viable_version_goes_first() -> None:
    env = ENVIRONMENTS["autoawq"]()
    selection = select_awq_version(_checkpoint("gemm g128"), version="GEMM", capability="8.6", environment=env)
    assert selection.kernel is Kernel.GEMM
    assert selection.requested == "gemm"
    auto = select_awq_version(_checkpoint("gemm g128"), capability="8.6", environment=env)
    assert selection.chain == (Kernel.GEMM, *(k for k in auto.chain if k is not Kernel.GEMM))
    assert not selection.fell_back
    assert selection.request_rejected == ()
    assert select_awq_version(
        _checkpoint("gemm g128"), version=Kernel.GEMV, capability="8.6", environment=env
    ).kernel is (Kernel.GEMV)


def test_explicit_version_not_viable_raises() -> None:
    env = ENVIRONMENTS["torch"]()
    with pytest.raises(VersionUnavailableError) as caught:
        select_awq_version(_checkpoint("gemv g32"), version="gemv", capability="7.5", environment=env)
    error = caught.value
    assert error.version == "gemv"
    assert len(error.reasons) == 2
    message = str(error)
    assert message.startswith("AWQ version 'gemv' cannot run here:")
    assert "needs compute capability >= 7.5" not in message  # 7.5 is enough
    assert "awq_ext: not assumed installed" in message
    assert "group size 32 is not supported (runs 64, 128)" in message
    assert "Viable here, best first: gemm_torch." in message


def test_explicit_version_not_viable_non_strict_falls_back() -> None:
    env = ENVIRONMENTS["torch"]()
    selection = select_awq_version(
        _checkpoint("gemm g128"), version="gemv_fast", capability="9.0", environment=env, strict=False
    )
    assert selection.kernel is Kernel.TORCH_INT4
    assert selection.requested == "gemv_fast"
    assert selection.fell_back
    assert selection.request_rejected == selection.rejected[Kernel.GEMV_FAST]
    assert any("awq_v2_ext" in r for r in selection.request_rejected)
    text = selection.explain()
    assert "requested: gemv_fast, not viable here, so the automatic choice is used:" in text


@pytest.mark.parametrize("name", ["gemx", "", "gemm2"])
def test_unknown_version(name: str) -> None:
    with pytest.raises(UnknownVersionError, match="unknown AWQ kernel version"):
        select_awq_version(None, version=name, capability="9.0", environment=Environment.assume())


def test_auto_is_case_insensitive() -> None:
    selection = select_awq_version(None, version=" AUTO ", capability="9.0", environment=Environment.assume())
    assert selection.requested == "auto"
    assert selection.kernel is Kernel.MARLIN


# --- nothing fits ------------------------------------------------------------------------------------------


def test_unknown_device_type_is_an_argument_error() -> None:
    with pytest.raises(InvalidDeviceSpecError, match="device 'npu': expected 'cuda'"):
        select_awq_version(_checkpoint("gemm g128"), device="npu", environment=Environment.assume())


def test_cuda_with_cpu_only_torch_fits_nothing() -> None:
    env = ENVIRONMENTS["torch-cpu"]()
    with pytest.raises(NoCompatibleKernelError) as caught:
        select_awq_version(_checkpoint("gemm g128"), capability="8.6", environment=env)
    assert caught.value.reasons["gemm_torch"] == (
        "torch 2.11.0 is a CPU-only build: install a CUDA build of torch to use the GPU",
    )


def test_no_torch_fits_nothing() -> None:
    env = dataclasses.replace(
        Environment.assume([]), torch_version=None, torch_error="torch is not installed", assumed=False
    )
    with pytest.raises(NoCompatibleKernelError) as caught:
        select_awq_version(_checkpoint("gemm g128"), device="cpu", environment=env)
    assert caught.value.reasons["gemm_torch"] == ("torch does not import here (torch is not installed): install torch",)


# --- devices and detection ---------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cuda:x", "gpu 0", "cuda:-1", ":0"])
def test_malformed_device(device: str) -> None:
    with pytest.raises(InvalidDeviceSpecError, match="expected 'cuda', 'cuda:N', 'cpu'"):
        select_awq_version(None, device=device, environment=Environment.assume())


def test_device_index_with_explicit_capability() -> None:
    selection = select_awq_version(None, device="CUDA:1", capability="8.9", environment=Environment.assume())
    assert selection.device == "cuda"
    assert selection.capabilities == (ComputeCapability(8, 9),)


def test_capability_ignored_off_cuda() -> None:
    selection = select_awq_version(None, device="cpu", capability="9.0", environment=Environment.assume())
    assert selection.device == "cpu"
    assert selection.capabilities == ()
    assert selection.kernel is Kernel.TORCH_INT4


def test_detection_on_this_machine(quantized: QuantizedFactory) -> None:
    from awq_autoselect.hardware import detect_compute_capability

    if detect_compute_capability().gpus:
        pytest.skip("this machine has a GPU; the no-GPU path cannot be observed")
    selection = select_awq_version(quantized(), environment=Environment.assume())
    assert selection.device == "cpu"
    assert selection.capabilities == ()
    assert any(note.startswith("no GPU detected (") for note in selection.notes)
    # Asking for CUDA anyway: the capability is unknown, so only kernels that need none remain.
    cuda = select_awq_version(quantized(), device="cuda", environment=Environment.assume())
    assert cuda.chain == (Kernel.GEMM_TORCH,)
    unknown = "the GPU's compute capability is unknown: pass capability=, e.g. '8.6'"
    assert unknown in cuda.rejected[Kernel.GEMV]


# --- ranking -----------------------------------------------------------------------------------------------


def test_ties_prefer_no_conversion_then_catalogue_order() -> None:
    def candidate(kernel: Kernel, score: int, converts: bool, viable: bool = True) -> Candidate:
        conversion = (Layout.GEMV, Layout.GEMM) if converts else None
        return Candidate(kernel, viable, () if viable else ("no",), score, (), conversion)

    ranked = _rank(
        [
            candidate(Kernel.GEMM, 50, converts=True),
            candidate(Kernel.GEMV, 50, converts=False),
            candidate(Kernel.EXLLAMA, 50, converts=True),
            candidate(Kernel.MARLIN, 100, converts=False, viable=False),
            candidate(Kernel.GEMM_TORCH, 10, converts=False),
            candidate(Kernel.GEMM_TRITON, 60, converts=True),
        ]
    )
    assert [c.kernel for c in ranked] == [
        Kernel.GEMM_TRITON,
        Kernel.GEMV,  # same score as GEMM and EXLLAMA, but needs no conversion
        Kernel.GEMM,  # catalogue order before EXLLAMA
        Kernel.EXLLAMA,
        Kernel.GEMM_TORCH,
        Kernel.MARLIN,  # rejected last, whatever its score
    ]


@pytest.mark.parametrize(
    ("workload", "kernel"),
    [("decode", Kernel.GEMV_FAST), ("prefill", Kernel.EXLLAMAV2), ("batch", Kernel.GEMV_FAST)],
)
def test_workload_steers_choice_with_autoawq(workload: str, kernel: Kernel) -> None:
    selection = select_awq_version(
        _checkpoint("gemm g128"), capability="8.9", environment=ENVIRONMENTS["autoawq"](), workload=WORKLOADS[workload]
    )
    assert selection.kernel is kernel
    scores = [c.score for c in selection.candidates if c.viable]
    assert scores == sorted(scores, reverse=True)


def test_gemv_sinks_for_batches() -> None:
    env = Environment.assume(["gemv", "gemm"], torch_version="2.5.1")
    decode = select_awq_version(_checkpoint("gemv g128"), capability="8.6", environment=env)
    batch = select_awq_version(_checkpoint("gemv g128"), capability="8.6", environment=env, batch_size=8)
    assert decode.chain == (Kernel.GEMV, Kernel.GEMM, Kernel.GEMM_TORCH)
    assert batch.chain == (Kernel.GEMM, Kernel.GEMM_TORCH, Kernel.GEMV)


def test_notes_carry_caveats_and_silent_failures() -> None:
    selection = select_awq_version(_checkpoint("gemm g128"), capability="8.6", environment=Environment.assume())
    gemv = selection.candidate("gemv")
    assert gemv.viable
    assert "silent-failure risk: " + str(CATALOGUE[Kernel.GEMV].silent_failure) in gemv.notes
    for caveat in CATALOGUE[Kernel.GEMV].caveats:
        assert caveat in gemv.notes
    gemm = selection.candidate(Kernel.GEMM)
    assert any(note.startswith("AutoAWQ's fused layers also need flash-attn >= 2.6") for note in gemm.notes)
    marlin = selection.candidate("marlin")
    assert not marlin.viable
    assert marlin.notes == ()


# --- output ------------------------------------------------------------------------------------------------


def test_explain_and_to_dict() -> None:
    selection = select_awq_version(
        _checkpoint("gemv g64"), capability=["8.6", "7.5"], environment=ENVIRONMENTS["autoawq"](), batch_size=2
    )
    text = selection.explain()
    assert str(selection) == text
    first = text.splitlines()[0]
    assert first == (
        "selected: gemv for decode (batch 2, 128 prompt + 128 new tokens, graph decode) on cuda 8.6 (Ampere), "
        "7.5 (Turing) "
        "[planned environment]"
    )
    assert "checkpoint: gemv layout, 4-bit, group size 64, zero point (asymmetric)" in text
    assert "chain: " + " > ".join(k.value for k in selection.chain) in text
    for candidate in selection.candidates:
        assert candidate.kernel.value in text
        for reason in candidate.reasons:
            assert reason in text
    data = selection.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["kernel"] == "gemv"
    assert data["capabilities"] == ["8.6", "7.5"]
    assert data["workload"] == {
        "batch_size": 2,
        "prompt_tokens": 128,
        "new_tokens": 128,
        "decode": "graph",
        "regime": "decode",
    }
    candidates = data["candidates"]
    assert isinstance(candidates, list)
    assert len(candidates) == len(CATALOGUE)
    assert data["quant"] == _checkpoint("gemv g64").to_dict()


def test_importing_selection_does_not_import_torch() -> None:
    code = "import sys, awq_autoselect.selection; sys.exit(int(any(m in sys.modules for m in ('torch', 'awq'))))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- real checkpoints, real probe --------------------------------------------------------------------------


def test_real_checkpoint_real_environment_cpu(quantized: QuantizedFactory, unchanged: Callable[[Path], None]) -> None:
    path = quantized()
    unchanged(path)
    env = probe_environment()
    selection = select_awq_version(path, device="cpu", environment=env)
    int4_cpu = env.module("torch.int4pack").features >= {"_weight_int4pack_mm_for_cpu"}
    assert selection.chain == ((Kernel.TORCH_INT4,) if int4_cpu else ()) + (Kernel.GEMM_TORCH,)
    assert selection.quant == read_checkpoint(path).quant
    assert not selection.environment_assumed
    assert selection.rejected[Kernel.GEMV] == ("runs on cuda only; the device is cpu",)
    # The same checkpoint as CheckpointInfo, as config.json's dict, and as its quantization_config.
    info = read_checkpoint(path)
    config = json.loads((path / "config.json").read_text())
    for form in (info, str(path), config, config["quantization_config"]):
        assert select_awq_version(form, device="cpu", environment=env).chain == selection.chain
    with pytest.raises(VersionUnavailableError, match="'gemv' cannot run here"):
        select_awq_version(path, version="gemv", device="cpu", environment=env)


def test_real_marlin_checkpoint(quantized: QuantizedFactory) -> None:
    path = quantized(version="marlin", zero_point=False)
    info = read_checkpoint(path)
    assert info.layout is Layout.MARLIN
    planned = select_awq_version(path, capability="9.0", environment=ENVIRONMENTS["autoawq+marlin"]())
    assert planned.kernel is Kernel.MARLIN
    assert planned.candidate("marlin").conversion is None
    here = select_awq_version(path, device="cpu", environment=probe_environment())
    assert here.kernel in (Kernel.TORCH_INT4, Kernel.GEMM_TORCH)
    assert here.candidate(here.kernel).conversion == (Layout.MARLIN, Layout.GEMM)
    assert "symmetric weights run with a constant zero point of 8 (exact)" in here.candidate(here.kernel).notes


def test_missing_checkpoint_path(tmp_path: Path) -> None:
    from awq_autoselect.errors import CheckpointNotFoundError

    with pytest.raises(CheckpointNotFoundError):
        select_awq_version(tmp_path / "nope", device="cpu", environment=Environment.assume())


def test_no_checkpoint_is_noted() -> None:
    selection = select_awq_version(None, device="cpu", environment=Environment.assume())
    assert selection.quant is None
    assert selection.notes == (
        "no checkpoint given: bits, zero point, group size, layout and layer shapes were not checked",
    )
    assert all(c.conversion is None for c in selection.candidates)


def test_checkpoint_info_is_used_as_is(quantized: QuantizedFactory) -> None:
    info = read_checkpoint(quantized())
    assert isinstance(info, CheckpointInfo)
    selection = select_awq_version(info, capability="8.0", environment=ENVIRONMENTS["torch"]())
    assert selection.kernel is Kernel.TORCH_INT4
    assert not any("shapes" in note for note in selection.notes)


# --- on the lent GPU ---------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_gpu_real_detection_and_probe(quantized: QuantizedFactory) -> None:
    from awq_autoselect.hardware import detect_compute_capability

    detection = detect_compute_capability()
    assert detection.gpus
    env = probe_environment()
    selection = select_awq_version(quantized(), environment=env)
    assert selection.device == "cuda"
    assert selection.capabilities == detection.capabilities
    if not env.available("awq_ext") and all(cc >= (8, 0) for cc in selection.capabilities):
        # A current torch (no usable autoawq-kernels) on sm_80+: tinygemm for decode, Triton for prefill.
        assert selection.kernel is Kernel.TORCH_INT4
        prefill = select_awq_version(quantized(), environment=env, prompt_tokens=2048, new_tokens=16)
        assert prefill.kernel is Kernel.GEMM_TRITON
    for kernel in selection.chain:
        assert selection.candidate(kernel).viable


@pytest.mark.gpu
def test_gpu_explicit_device_index() -> None:
    from awq_autoselect.hardware import detect_compute_capability

    detection = detect_compute_capability()
    selection = select_awq_version(None, device="cuda:0", environment=probe_environment())
    assert selection.capabilities == ((detection.gpus[0].capability,) if detection.gpus[0].capability else ())
    with pytest.raises(InvalidDeviceSpecError, match="this process sees"):
        select_awq_version(None, device=f"cuda:{len(detection.gpus)}", environment=probe_environment())


def test_regex_of_docs_table_is_complete() -> None:
    """Every kernel the worked table names exists, so a renamed kernel cannot silently drop rows."""
    names = {k.value for k in Kernel}
    for row in _doc_rows():
        for word in re.findall(r"[a-z_0-9]+", row[4] + " " + row[5]):
            assert word in names


# --- zero points of 0: ExLlama and ExLlamaV2 cannot store them ---------------------------------------------------


def test_kernels_that_store_zero_minus_one_are_rejected_for_a_checkpoint_with_a_zero_point_of_0(
    quantized: QuantizedFactory, tmp_path: Path, unchanged: Callable[[Path], None]
) -> None:
    from tests.helpers import copy_checkpoint, zero_one_zero_point

    exposed = {kernel for kernel, spec in CATALOGUE.items() if spec.zero_minus_one}
    assert exposed == {Kernel.EXLLAMA, Kernel.EXLLAMAV2}
    env = ENVIRONMENTS["autoawq"]()
    original = quantized(version="gemm", group_size=128)
    unchanged(original)
    clean = select_awq_version(original, capability="8.6", environment=env)
    assert exposed <= _viable(clean)  # AutoAWQ's own quantization of this model left no zero point at 0
    assert not any("zero - 1" in note for kernel in exposed for note in clean.candidate(kernel).notes)

    edited = copy_checkpoint(original, tmp_path / "edited")
    layer = zero_one_zero_point(edited)
    selection = select_awq_version(edited, capability="8.6", environment=env)
    assert _viable(selection) == _viable(clean) - exposed
    for kernel in exposed:
        (reason,) = selection.rejected[kernel]
        assert "zero - 1" in reason and "unpack_reorder_pack" in reason
        assert "; in this checkpoint 1 of " in reason
        assert f"zero points are 0 (first in {layer}): use another kernel" in reason
    assert "zero - 1" in selection.explain()
    with pytest.raises(VersionUnavailableError, match="zero - 1"):
        select_awq_version(edited, version="exllamav2", capability="8.6", environment=env)

    planned = select_awq_version(_checkpoint("gemm g128"), capability="8.6", environment=env)
    for kernel in exposed:  # no directory: the rule cannot be checked, and says so
        notes = planned.candidate(kernel).notes
        assert any(note.startswith("zero points not checked (no checkpoint directory)") for note in notes)


def test_zero_points_that_cannot_be_counted_reject_the_kernels_that_need_the_count(
    quantized: QuantizedFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import copy_checkpoint

    path = copy_checkpoint(quantized(version="gemm", group_size=128), tmp_path / "fresh")  # nothing memoized
    monkeypatch.setitem(sys.modules, "numpy", None)  # import numpy raises ImportError
    selection = select_awq_version(path, capability="8.6", environment=ENVIRONMENTS["autoawq"]())
    for kernel in (Kernel.EXLLAMA, Kernel.EXLLAMAV2):
        (reason,) = selection.rejected[kernel]
        assert "numpy (to check them) is missing: pip install numpy" in reason
    assert Kernel.GEMV in _viable(selection)


def test_an_experimental_kernel_runs_only_when_asked_for_by_name() -> None:
    env = Environment.assume(["gemm_triton"], torch_version="2.11.0+cu130", torch_cuda_version="13.0")
    auto = select_awq_version(_checkpoint("gemm g128"), capability="9.0", environment=env)
    assert Kernel.GEMV_TRITON not in auto.chain
    (reason,) = auto.rejected[Kernel.GEMV_TRITON]
    assert reason.startswith("experimental, not chosen automatically: still slower than torch_int4")
    assert "version='gemv_triton'" in reason
    named = select_awq_version(_checkpoint("gemm g128"), version="gemv_triton", capability="9.0", environment=env)
    assert named.chain[0] is Kernel.GEMV_TRITON
    assert Kernel.GEMV_TRITON not in named.rejected
