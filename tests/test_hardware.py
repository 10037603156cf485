"""Tests for awq_autoselect.hardware: CUDA_VISIBLE_DEVICES rules, NVML mapping, fallbacks, caching.

This machine has no GPU and no libnvidia-ml, so NVML is replaced by a stand-in ``pynvml`` module (``FakeNvml``)
that models whole machines and raises the same exception classes as the real one (names checked against the
installed nvidia-ml-py below), and ``nvidia-smi`` by a small shell script on PATH. The real pynvml is used where
it can be: its failure on this machine (NVMLError_LibraryNotFound). tests/test_hardware_gpu.py runs the same
paths against a real GPU.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from awq_autoselect import hardware
from awq_autoselect.capability import ComputeCapability
from awq_autoselect.errors import InvalidDeviceSpecError
from awq_autoselect.hardware import (
    Detection,
    DetectionSource,
    DeviceIdKind,
    detect_compute_capability,
    parse_cuda_visible_devices,
    smi,
)
from awq_autoselect.hardware import detect as detect_module

GIB = 1024**3
REPO = Path(__file__).resolve().parents[1]

# --- the machines ---------------------------------------------------------------------------------------


@dataclass
class FakeMig:
    uuid: str
    memory: int
    gpu_instance: int
    compute_instance: int
    profile: str


@dataclass
class FakeGPU:
    name: str
    uuid: str
    bus_id: str
    capability: tuple[int, int]
    memory: int
    mig: bool | None = False  # None: the GPU cannot do MIG (NVMLError_NotSupported)
    migs: list[FakeMig] = field(default_factory=list)


@dataclass
class Machine:
    gpus: list[FakeGPU]
    init_error: str | None = None  # e.g. "DriverNotLoaded": nvmlInit raises NVMLError_DriverNotLoaded
    query_error: str | None = None  # nvmlDeviceGetCudaComputeCapability raises this
    migs_listable: bool = True  # False: nvmlDeviceGetMigDeviceHandleByIndex raises NVMLError_NoPermission
    inits: int = 0
    shutdowns: int = 0


H100 = FakeGPU(
    "NVIDIA H100 80GB HBM3", "GPU-5b3c1a2e-7f10-4c1d-9e8a-0d3c2b1a4f5e", "00000000:19:00.0", (9, 0), 80 * GIB
)
A100 = FakeGPU(
    "NVIDIA A100-SXM4-80GB", "GPU-a1000000-1111-2222-3333-444444444444", "00000000:07:00.0", (8, 0), 80 * GIB
)
T4_A = FakeGPU("Tesla T4", "GPU-7e4a0000-aaaa-bbbb-cccc-000000000001", "00000000:3B:00.0", (7, 5), 15 * GIB, mig=None)
T4_B = FakeGPU("Tesla T4", "GPU-7e4b0000-aaaa-bbbb-cccc-000000000002", "00000000:86:00.0", (7, 5), 15 * GIB, mig=None)
MIG_A = FakeMig("MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f", 20 * GIB, 1, 0, "3g.20gb")
MIG_B = FakeMig("MIG-cba663e8-9bed-5b7c-a2e0-9ea1a0b1b0c1", 10 * GIB, 5, 0, "2g.10gb")
A100_MIG = FakeGPU(
    "NVIDIA A100-SXM4-40GB",
    "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77",
    "00000000:07:00.0",
    (8, 0),
    40 * GIB,
    mig=True,
    migs=[MIG_A, MIG_B],
)
A100_WHOLE = FakeGPU(
    "NVIDIA A100-SXM4-40GB", "GPU-0f0e0d0c-1111-2222-3333-444444444444", "00000000:0F:00.0", (8, 0), 40 * GIB
)


def single_h100() -> Machine:
    return Machine([H100])


def mixed() -> Machine:
    return Machine([A100, T4_A, T4_B])


def mig_machine() -> Machine:
    return Machine([A100_MIG, A100_WHOLE])


# --- a stand-in for pynvml ---------------------------------------------------------------------------------

ERROR_CODES = {
    "Uninitialized": 1,
    "InvalidArgument": 2,
    "NotSupported": 3,
    "NoPermission": 4,
    "NotFound": 6,
    "DriverNotLoaded": 9,
    "LibraryNotFound": 12,
    "FunctionNotFound": 13,
    "GpuIsLost": 15,
}
MESSAGES = {
    "DriverNotLoaded": "Driver Not Loaded",
    "LibraryNotFound": "NVML Shared Library Not Found",
    "GpuIsLost": "GPU is lost",
}
FUNCTIONS = (
    "nvmlInit",
    "nvmlShutdown",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetHandleByUUID",
    "nvmlDeviceGetName",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetPciInfo",
    "nvmlDeviceGetCudaComputeCapability",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetMigMode",
    "nvmlDeviceGetMaxMigDeviceCount",
    "nvmlDeviceGetMigDeviceHandleByIndex",
    "nvmlDeviceGetDeviceHandleFromMigDeviceHandle",
    "nvmlDeviceGetIndex",
    "nvmlDeviceGetGpuInstanceId",
    "nvmlDeviceGetComputeInstanceId",
)


@dataclass(frozen=True)
class Handle:
    gpu: int
    mig: int | None = None


def fake_pynvml(machine: Machine) -> types.ModuleType:
    """A module with pynvml's names that answers for ``machine``."""
    module = types.ModuleType("pynvml")

    class NVMLError(Exception):  # like the real one: an Exception, not a RuntimeError
        def __init__(self, value: int) -> None:
            super().__init__(value)
            self.value = value

        def __str__(self) -> str:
            return next((MESSAGES.get(n, n) for n, c in ERROR_CODES.items() if c == self.value), "Unknown Error")

    module.NVMLError = NVMLError  # type: ignore[attr-defined]
    for error_name, code in ERROR_CODES.items():

        def init(self: NVMLError, code: int = code) -> None:
            NVMLError.__init__(self, code)

        setattr(module, f"NVMLError_{error_name}", type(f"NVMLError_{error_name}", (NVMLError,), {"__init__": init}))

    def fail(error_name: str) -> Exception:
        error: Exception = getattr(module, f"NVMLError_{error_name}")()
        return error

    def gpu_of(handle: Handle) -> FakeGPU:
        return machine.gpus[handle.gpu]

    def mig_of(handle: Handle) -> FakeMig:
        assert handle.mig is not None
        return machine.gpus[handle.gpu].migs[handle.mig]

    def nvml_init() -> None:
        machine.inits += 1
        if machine.init_error:
            raise fail(machine.init_error)

    def shutdown() -> None:
        machine.shutdowns += 1

    def by_index(index: int) -> Handle:
        if not 0 <= index < len(machine.gpus):
            raise fail("InvalidArgument")
        return Handle(index)

    def by_uuid(uuid: str) -> Handle:
        for g, gpu in enumerate(machine.gpus):
            if gpu.uuid == uuid:
                return Handle(g)
            for m, mig in enumerate(gpu.migs):
                if mig.uuid == uuid:
                    return Handle(g, m)
        raise fail("NotFound")

    def name(handle: Handle) -> str:
        gpu = gpu_of(handle)
        return gpu.name if handle.mig is None else f"{gpu.name} MIG {mig_of(handle).profile}"

    def uuid(handle: Handle) -> str:
        return gpu_of(handle).uuid if handle.mig is None else mig_of(handle).uuid

    def pci(handle: Handle) -> types.SimpleNamespace:
        return types.SimpleNamespace(busId=gpu_of(handle).bus_id.encode())  # old pynvml gives bytes

    def capability(handle: Handle) -> tuple[int, int]:
        if machine.query_error:
            raise fail(machine.query_error)
        if handle.mig is not None:
            raise fail("NotSupported")  # so the code has to use the parent GPU's capability
        return gpu_of(handle).capability

    def memory(handle: Handle) -> types.SimpleNamespace:
        total = gpu_of(handle).memory if handle.mig is None else mig_of(handle).memory
        return types.SimpleNamespace(total=total, free=total, used=0)

    def mig_mode(handle: Handle) -> list[int]:
        gpu = gpu_of(handle)
        if gpu.mig is None:
            raise fail("NotSupported")
        return [int(gpu.mig), int(gpu.mig)]

    def max_migs(handle: Handle) -> int:
        if gpu_of(handle).mig is None:
            raise fail("NotSupported")
        return 7

    def mig_by_index(handle: Handle, slot: int) -> Handle:
        if not machine.migs_listable:
            raise fail("NoPermission")
        if slot >= len(gpu_of(handle).migs):
            raise fail("NotFound")
        return Handle(handle.gpu, slot)

    def parent(handle: Handle) -> Handle:
        if handle.mig is None:
            raise fail("InvalidArgument")
        return Handle(handle.gpu)

    def index(handle: Handle) -> int:
        return handle.gpu

    def gpu_instance(handle: Handle) -> int:
        return mig_of(handle).gpu_instance

    def compute_instance(handle: Handle) -> int:
        return mig_of(handle).compute_instance

    functions = (
        nvml_init,
        shutdown,
        lambda: len(machine.gpus),
        by_index,
        by_uuid,
        name,
        uuid,
        pci,
        capability,
        memory,
        mig_mode,
        max_migs,
        mig_by_index,
        parent,
        index,
        gpu_instance,
        compute_instance,
    )
    for function_name, function in zip(FUNCTIONS, functions, strict=True):
        setattr(module, function_name, function)
    return module


# --- a stand-in for nvidia-smi ------------------------------------------------------------------------------


def smi_rows(machine: Machine, *, with_capability: bool = True) -> str:
    rows = []
    for index, gpu in enumerate(machine.gpus):
        cells = [str(index), gpu.name, gpu.uuid, gpu.bus_id, str(gpu.memory // (1024 * 1024))]
        if with_capability:
            cells.append(f"{gpu.capability[0]}.{gpu.capability[1]}")
        rows.append(", ".join(cells))
    return "\n".join(rows) + "\n"


def smi_listing(machine: Machine) -> str:
    lines = []
    for index, gpu in enumerate(machine.gpus):
        lines.append(f"GPU {index}: {gpu.name} (UUID: {gpu.uuid})")
        lines += [f"  MIG {m.profile}     Device  {i}: (UUID: {m.uuid})" for i, m in enumerate(gpu.migs)]
    return "\n".join(lines) + "\n"


def install_smi(
    directory: Path,
    monkeypatch: pytest.MonkeyPatch,
    machine: Machine,
    *,
    r470: bool = False,
    broken: bool = False,
    hang: bool = False,
) -> Path:
    """Write an ``nvidia-smi`` shell script into ``directory`` and put it first on PATH; it logs its arguments."""
    log = directory / "calls.log"
    query = smi_rows(machine, with_capability=not r470)
    before = ""
    if hang:
        before = "exec /bin/sleep 5"
    elif broken:
        before = "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9"
    old_field = """echo 'Field "compute_cap" is not a valid field to query.'; echo; exit 2""" if r470 else ""
    script = f"""#!/bin/sh
echo "$*" >> '{log}'
{before}
case "$*" in
  *compute_cap*)
    {old_field}
    printf '%s' '{query}' ;;
  *--query-gpu*) printf '%s' '{query}' ;;
  -L) printf '%s' '{smi_listing(machine)}' ;;
  *) echo "unexpected arguments: $*"; exit 1 ;;
esac
"""
    executable = directory / "nvidia-smi"
    executable.write_text(script)
    executable.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    return log


# --- fixtures -----------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No CUDA variables, no nvidia-smi on PATH, an empty detection cache before and after (no fake GPU leaks)."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    detect_module.clear_cache()
    yield
    detect_module.clear_cache()


def use_machine(monkeypatch: pytest.MonkeyPatch, machine: Machine) -> Machine:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(machine))
    return machine


def detect(
    monkeypatch: pytest.MonkeyPatch,
    visible: str | None = None,
    order: str | None = None,
    use_torch: bool | None = False,
) -> Detection:
    for name, value in (("CUDA_VISIBLE_DEVICES", visible), ("CUDA_DEVICE_ORDER", order)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    return detect_compute_capability(use_torch=use_torch, refresh=True)


# --- the stand-ins are honest ----------------------------------------------------------------------------------


def test_fake_pynvml_matches_the_real_module_names() -> None:
    import pynvml

    assert not issubclass(pynvml.NVMLError, RuntimeError)
    for error_name, code in ERROR_CODES.items():
        real = getattr(pynvml, f"NVMLError_{error_name}")
        assert issubclass(real, pynvml.NVMLError)
        assert real().value == code
    for function_name in FUNCTIONS:
        assert callable(getattr(pynvml, function_name)), function_name
    fake = fake_pynvml(single_h100())
    assert not issubclass(fake.NVMLError, RuntimeError)
    assert str(fake.NVMLError_LibraryNotFound()) == str(pynvml.NVMLError_LibraryNotFound())


# --- CUDA_VISIBLE_DEVICES, read alone ---------------------------------------------------------------------

PARSE_CASES = [
    # value, entries CUDA honours, a problem expected (substring) or None
    (None, None, None),
    ("", (), None),
    ("  ", (), None),
    ("0", ("0",), None),
    ("1,0", ("1", "0"), None),
    (" 0 , 1 ", ("0", "1"), None),
    ("0,1,", ("0", "1"), None),
    ("-1", (), None),
    ("0,2,-1,1", ("0", "2"), "'-1' is negative"),
    ("0,abc,1", ("0",), "'abc' is not a device index"),
    ("0,abc", ("0",), "'abc' is not a device index"),
    ("abc", (), "'abc' is not a device index"),
    ("0,,1", ("0",), "empty entry"),
    ("1gpu,2", ("1gpu", "2"), "read as index 1"),
    ("+1", ("+1",), None),
    ("0,0", (), "listed twice"),
    ("0,00", (), "listed twice"),
    ("0,GPU-5b3c", ("0",), "does not mix"),
    ("GPU-5b3c", ("GPU-5b3c",), None),
    ("GPU-5b3c,GPU-a100", ("GPU-5b3c", "GPU-a100"), None),
    ("GPU-5b3c,1", ("GPU-5b3c",), "does not mix"),
    ("GPU-5b3c,GPU-5b3c", (), "listed twice"),
    ("MIG-c6d4f1ef", ("MIG-c6d4f1ef",), None),
    ("MIG-GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77/1/0", ("MIG-GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77/1/0",), None),
    ("MIG-GPU-5d5ba0d6/1", (), "not of the form"),
    ("MIG-c6d4f1ef,0", ("MIG-c6d4f1ef",), "does not mix"),
]


@pytest.mark.parametrize(("value", "expected", "problem"), PARSE_CASES)
def test_parse_cuda_visible_devices(value: str | None, expected: tuple[str, ...] | None, problem: str | None) -> None:
    spec = parse_cuda_visible_devices(value)
    texts = None if spec.entries is None else tuple(entry.text for entry in spec.entries)
    assert texts == expected
    assert spec.all_devices is (value is None)
    if problem is None:
        assert spec.problems == ()
        parse_cuda_visible_devices(value, strict=True)  # nothing surprising: strict accepts it
    else:
        assert any(problem in p for p in spec.problems), spec.problems
        with pytest.raises(InvalidDeviceSpecError, match="CUDA_VISIBLE_DEVICES="):
            parse_cuda_visible_devices(value, strict=True)


def test_parse_reads_each_form() -> None:
    (index,) = parse_cuda_visible_devices("1gpu").entries or ()
    assert (index.kind, index.index) == (DeviceIdKind.INDEX, 1)
    (legacy,) = parse_cuda_visible_devices("MIG-GPU-5d5ba0d6-d33d/7/2").entries or ()
    assert legacy.kind is DeviceIdKind.MIG_LEGACY
    assert (legacy.gpu_uuid, legacy.gpu_instance, legacy.compute_instance) == ("GPU-5d5ba0d6-d33d", 7, 2)
    (mig,) = parse_cuda_visible_devices("MIG-c6d4").entries or ()
    assert mig.kind is DeviceIdKind.MIG_UUID
    (gpu,) = parse_cuda_visible_devices("GPU-5b3c").entries or ()
    assert gpu.kind is DeviceIdKind.GPU_UUID


# --- NVML: one GPU ----------------------------------------------------------------------------------------


def test_single_h100_through_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = use_machine(monkeypatch, single_h100())
    detection = detect(monkeypatch)
    assert detection
    gpu = detection.gpu
    assert gpu is not None
    assert gpu.index == 0
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.capability == ComputeCapability(9, 0)
    assert gpu.architecture == "Hopper"
    assert gpu.total_memory == 80 * GIB
    assert gpu.uuid == H100.uuid
    assert gpu.mig_uuid is None
    assert gpu.pci_bus_id == "00000000:19:00.0"
    assert gpu.nvml_index == 0
    assert gpu.source is DetectionSource.NVML
    assert detection.capability == (9, 0)
    assert detection.capabilities == (ComputeCapability(9, 0),)
    assert detection.source is DetectionSource.NVML
    assert detection.mapping_exact
    assert detection.warnings == ()
    assert str(detection) == "9.0 NVIDIA H100 80GB HBM3 via nvml"
    assert (machine.inits, machine.shutdowns) == (1, 1)
    assert [a.source for a in detection.attempts] == [DetectionSource.NVML]
    json.dumps(detection.to_dict())
    assert detection.to_dict()["capability"] == "9.0"


# --- NVML: mapping CUDA indices on a mixed machine (A100 + two T4) ------------------------------------------

A, TA, TB = 0, 1, 2  # NVML indices of A100, T4_A, T4_B


class MixedCase(NamedTuple):
    visible: str | None  # CUDA_VISIBLE_DEVICES
    order: str | None  # CUDA_DEVICE_ORDER
    expected: list[int]  # NVML indices of cuda:0, cuda:1, ...
    exact: bool  # Detection.mapping_exact
    warning: str | None  # a substring of a warning, or None for no warning


MIXED_CASES = [
    MixedCase(None, "PCI_BUS_ID", [A, TA, TB], True, None),
    MixedCase(None, None, [A, TA, TB], False, "CUDA_DEVICE_ORDER=PCI_BUS_ID"),
    MixedCase(None, "FASTEST_FIRST", [A, TA, TB], False, "undocumented heuristic"),
    MixedCase("2,1", "PCI_BUS_ID", [TB, TA], True, None),
    MixedCase("1", "PCI_BUS_ID", [TA], True, None),
    MixedCase("1", None, [TA], False, "CUDA_DEVICE_ORDER=PCI_BUS_ID"),
    MixedCase(T4_B.uuid, None, [TB], True, None),  # a UUID names one GPU whatever the order
    MixedCase(f"{T4_B.uuid},{A100.uuid}", None, [TB, A], True, None),
    MixedCase("GPU-7e4b", None, [TB], True, None),  # a unique prefix
    MixedCase("GPU-7e4", None, [], True, "ambiguous"),  # starts both T4 UUIDs
    MixedCase("GPU-a1,GPU-7e4,GPU-7e4a", None, [A], True, "ambiguous"),  # the ambiguous entry ends the list
    MixedCase("GPU-ffff", None, [], True, "no GPU has a UUID starting with 'GPU-ffff'"),
    MixedCase(f"GPU-a1,{A100.uuid}", None, [], True, "already listed"),  # two spellings of one GPU: no device at all
    MixedCase("0,5,1", "PCI_BUS_ID", [A], True, "index 5 is out of range"),
    MixedCase("0,abc,1", "PCI_BUS_ID", [A], True, "'abc' is not a device index"),
    MixedCase("0,-1,1", "PCI_BUS_ID", [A], True, "negative"),
    MixedCase("1,1", "PCI_BUS_ID", [], True, "listed twice"),
    MixedCase("2gpu", "PCI_BUS_ID", [TB], True, "read as index 2"),
    MixedCase("-1", "PCI_BUS_ID", [], True, "names no device"),
    MixedCase("0", "pci_bus_id", [A], False, "neither FASTEST_FIRST nor PCI_BUS_ID"),  # CUDA's spelling is exact
]


@pytest.mark.parametrize("case", MIXED_CASES, ids=lambda case: f"{case.visible}-{case.order}")
def test_mixed_machine_mapping(monkeypatch: pytest.MonkeyPatch, case: MixedCase) -> None:
    visible, order, expected, exact, warning = case
    use_machine(monkeypatch, mixed())
    detection = detect(monkeypatch, visible, order)
    assert [gpu.nvml_index for gpu in detection.gpus] == expected
    assert [gpu.index for gpu in detection.gpus] == list(range(len(expected)))
    assert detection.mapping_exact is exact
    assert detection.cuda_visible_devices == visible
    assert detection.device_order == ("PCI_BUS_ID" if order == "PCI_BUS_ID" else "FASTEST_FIRST")
    if warning is None:
        assert detection.warnings == ()
    else:
        assert any(warning in w for w in detection.warnings), detection.warnings
    if not expected:
        assert not detection
        assert str(detection).startswith("no GPU: ")


def test_mixed_machine_reports_each_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    use_machine(monkeypatch, mixed())
    detection = detect(monkeypatch, "2,0", "PCI_BUS_ID")
    assert [gpu.capability for gpu in detection.gpus] == [(7, 5), (8, 0)]
    assert detection.capability == (7, 5)  # cuda:0 is the T4 here
    assert detection.capabilities == ((7, 5), (8, 0))
    assert str(detection) == "7.5 Tesla T4 via nvml (+1 more)"


def test_mixed_order_warning_is_logged(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    use_machine(monkeypatch, mixed())
    with caplog.at_level(logging.WARNING, logger="awq_autoselect.hardware"):
        detect(monkeypatch)
    assert any("CUDA_DEVICE_ORDER=PCI_BUS_ID" in record.getMessage() for record in caplog.records)


def test_pci_bus_id_order_sorts_by_bus_not_by_nvml_index(monkeypatch: pytest.MonkeyPatch) -> None:
    use_machine(monkeypatch, Machine([T4_B, A100, T4_A]))  # NVML listing them out of bus order
    by_bus = detect(monkeypatch, None, "PCI_BUS_ID")
    assert [gpu.name for gpu in by_bus.gpus] == ["NVIDIA A100-SXM4-80GB", "Tesla T4", "Tesla T4"]
    assert [gpu.nvml_index for gpu in by_bus.gpus] == [1, 2, 0]
    assert detect(monkeypatch, "0", "PCI_BUS_ID").gpus[0].uuid == A100.uuid


def test_identical_gpus_need_no_order(monkeypatch: pytest.MonkeyPatch) -> None:
    second = FakeGPU(H100.name, "GPU-5b3c0000-0000-0000-0000-000000000002", "00000000:2A:00.0", (9, 0), 80 * GIB)
    use_machine(monkeypatch, Machine([H100, second]))
    detection = detect(monkeypatch, "1")
    assert detection.mapping_exact
    assert detection.warnings == ()
    assert [gpu.uuid for gpu in detection.gpus] == [second.uuid]


# --- NVML: MIG ------------------------------------------------------------------------------------------------

MIG_CASES = [
    # CUDA_VISIBLE_DEVICES, the MIG device expected as cuda:0 (None: no GPU), warning expected (substring)
    (MIG_B.uuid, MIG_B, None),
    ("MIG-cba6", MIG_B, None),  # a unique prefix of a MIG UUID
    ("MIG-c", None, "ambiguous"),
    (f"MIG-GPU-{A100_MIG.uuid[4:]}/5/0", MIG_B, None),  # the R450/R460 form
    (f"MIG-GPU-{A100_MIG.uuid[4:]}/1/0", MIG_A, None),
    (f"MIG-GPU-{A100_MIG.uuid[4:]}/3/0", None, "no MIG device with GPU instance 3"),
    ("MIG-ffffffff", None, "no MIG device has a UUID starting with"),
    (f"{MIG_A.uuid},{MIG_B.uuid}", MIG_A, "only one MIG device per process"),
]


@pytest.mark.parametrize(("visible", "expected", "warning"), MIG_CASES)
def test_mig_devices(
    monkeypatch: pytest.MonkeyPatch, visible: str, expected: FakeMig | None, warning: str | None
) -> None:
    use_machine(monkeypatch, mig_machine())
    detection = detect(monkeypatch, visible)
    if warning is None:
        assert detection.warnings == ()
    else:
        assert any(warning in w for w in detection.warnings), detection.warnings
    if expected is None:
        assert not detection
        return
    assert len(detection.gpus) == 1
    gpu = detection.gpus[0]
    assert gpu.mig_uuid == expected.uuid
    assert gpu.is_mig
    assert gpu.name == A100_MIG.name  # the parent's name ...
    assert gpu.capability == (8, 0)  # ... and capability (NVML refuses it on the MIG handle here)
    assert gpu.total_memory == expected.memory  # the MIG instance's memory, not the GPU's 40 GiB
    assert gpu.uuid == A100_MIG.uuid
    assert gpu.nvml_index == 0
    assert detection.mapping_exact
    assert str(detection) == "8.0 NVIDIA A100-SXM4-40GB [MIG] via nvml"


def test_mig_device_found_by_uuid_when_it_cannot_be_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = mig_machine()
    machine.migs_listable = False  # nvmlDeviceGetMigDeviceHandleByIndex: NVMLError_NoPermission
    use_machine(monkeypatch, machine)
    detection = detect(monkeypatch, MIG_B.uuid)  # via nvmlDeviceGetHandleByUUID + ...FromMigDeviceHandle
    gpu = detection.gpu
    assert gpu is not None
    assert (gpu.mig_uuid, gpu.capability, gpu.total_memory, gpu.nvml_index) == (MIG_B.uuid, (8, 0), 10 * GIB, 0)


def test_gpu_in_mig_mode_without_mig_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    use_machine(monkeypatch, mig_machine())
    detection = detect(monkeypatch)
    assert [(gpu.nvml_index, gpu.mig_uuid) for gpu in detection.gpus] == [(0, MIG_A.uuid), (1, None)]
    assert not detection.mapping_exact
    assert any("is in MIG mode" in w for w in detection.warnings)
    assert detection.capabilities == ((8, 0),)


def test_gpu_in_mig_mode_whose_mig_devices_cannot_be_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = mig_machine()
    machine.migs_listable = False
    use_machine(monkeypatch, machine)
    detection = detect(monkeypatch, "0,1")
    assert [gpu.nvml_index for gpu in detection.gpus] == [1]
    assert any("none of its MIG devices" in w for w in detection.warnings)


# --- NVML unavailable: no driver, no library, no module, a failing query ---------------------------------------


@pytest.mark.parametrize(
    ("error", "message"),
    [("DriverNotLoaded", "Driver Not Loaded"), ("LibraryNotFound", "NVML Shared Library Not Found")],
)
def test_no_driver_gives_an_empty_detection(monkeypatch: pytest.MonkeyPatch, error: str, message: str) -> None:
    machine = use_machine(monkeypatch, Machine([H100], init_error=error))
    detection = detect(monkeypatch, use_torch=None)
    assert not detection
    assert detection.gpu is None
    assert detection.capability is None
    assert detection.capabilities == ()
    assert detection.source is None
    nvml, torch_attempt, smi = detection.attempts
    assert (nvml.source, nvml.ok) == (DetectionSource.NVML, False)
    assert f"NVMLError_{error}: {message}" in nvml.detail
    assert (torch_attempt.source, torch_attempt.ok) == (DetectionSource.TORCH, False)
    assert "skipped" in torch_attempt.detail
    assert (smi.source, smi.ok, smi.detail) == (DetectionSource.NVIDIA_SMI, False, "nvidia-smi is not on PATH")
    assert str(detection).startswith(f"no GPU: nvml: nvmlInit failed: NVMLError_{error}")
    assert (machine.inits, machine.shutdowns) == (1, 0)  # no shutdown after a failed init
    json.dumps(detection.to_dict())


def test_nvml_error_during_queries_still_shuts_down(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = use_machine(monkeypatch, Machine([H100], query_error="GpuIsLost"))
    detection = detect(monkeypatch)
    assert not detection
    assert "NVMLError_GpuIsLost: GPU is lost" in detection.attempts[0].detail
    assert (machine.inits, machine.shutdowns) == (1, 1)


def test_pynvml_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    detection = detect(monkeypatch)
    assert not detection
    assert "install nvidia-ml-py" in detection.attempts[0].detail


def test_empty_cuda_visible_devices_does_not_ask_nvml(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    machine = use_machine(monkeypatch, single_h100())
    with caplog.at_level(logging.INFO, logger="awq_autoselect.hardware"):
        detection = detect(monkeypatch, "")
    assert [r.levelno for r in caplog.records if "names no device" in r.getMessage()] == [logging.INFO]
    assert not detection
    assert detection.attempts == ()
    assert machine.inits == 0
    assert str(detection) == "no GPU: CUDA_VISIBLE_DEVICES='' names no device, so CUDA sees no GPU"


def test_index_out_of_range_is_a_result_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    use_machine(monkeypatch, single_h100())
    detection = detect(monkeypatch, "3")
    assert not detection
    assert detection.attempts[0].ok  # NVML answered; CUDA just sees nothing
    assert "NVML lists 1 GPU; 0 visible to CUDA" in detection.attempts[0].detail
    assert any("index 3 is out of range (1 GPU here)" in reason for reason in detection.reasons)


# --- torch: only when allowed ---------------------------------------------------------------------------------


def fake_torch(initialized: bool) -> types.ModuleType:
    """torch as seen from a process that has (or has not) initialized CUDA on one H100."""
    torch = types.ModuleType("torch")
    props = types.SimpleNamespace(
        name="NVIDIA H100 80GB HBM3",
        major=9,
        minor=0,
        total_memory=79 * GIB,
        uuid=H100.uuid[4:],
        pci_domain_id=0,
        pci_bus_id=0x19,
        pci_device_id=0,
    )
    torch.version = types.SimpleNamespace(hip=None)  # type: ignore[attr-defined]
    torch.__version__ = "2.11.0+cu130"  # type: ignore[attr-defined]
    torch.cuda = types.SimpleNamespace(  # type: ignore[attr-defined]
        is_initialized=lambda: initialized,
        device_count=lambda: 1,
        get_device_properties=lambda index: props,
    )
    return torch


@pytest.mark.parametrize(
    ("use_torch", "initialized", "used"), [(None, True, True), (None, False, False), (False, True, False)]
)
def test_torch_is_used_only_when_allowed(
    monkeypatch: pytest.MonkeyPatch, use_torch: bool | None, initialized: bool, used: bool
) -> None:
    use_machine(monkeypatch, Machine([H100], init_error="DriverNotLoaded"))
    monkeypatch.setitem(sys.modules, "torch", fake_torch(initialized))
    detection = detect(monkeypatch, use_torch=use_torch)
    torch_attempt = detection.attempts[1]
    assert torch_attempt.source is DetectionSource.TORCH
    assert torch_attempt.ok is used
    if used:
        gpu = detection.gpu
        assert gpu is not None
        assert (gpu.capability, gpu.source, gpu.uuid, gpu.pci_bus_id) == (
            (9, 0),
            DetectionSource.TORCH,
            H100.uuid,
            "00000000:19:00.0",
        )
        assert len(detection.attempts) == 2  # nvidia-smi not needed
    else:
        assert not detection
        assert detection.attempts[2].source is DetectionSource.NVIDIA_SMI


def test_torch_not_imported_is_not_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    use_machine(monkeypatch, Machine([H100], init_error="DriverNotLoaded"))
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    detection = detect(monkeypatch, use_torch=None)
    assert "torch" not in sys.modules
    assert "torch is not imported" in detection.attempts[1].detail


def test_real_cpu_torch_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """use_torch=True on this CPU build: torch answers that CUDA sees no device (the real torch, no CUDA)."""
    use_machine(monkeypatch, Machine([H100], init_error="LibraryNotFound"))
    detection = detect(monkeypatch, use_torch=True)
    assert not detection
    torch_attempt = detection.attempts[1]
    assert (torch_attempt.source, torch_attempt.ok) == (DetectionSource.TORCH, False)
    assert "torch.cuda.device_count() is 0" in torch_attempt.detail
    assert detection.attempts[2].source is DetectionSource.NVIDIA_SMI  # a CPU build's 0 is not the last word


# --- nvidia-smi ------------------------------------------------------------------------------------------------


def test_nvidia_smi_fallback_applies_the_same_mapping(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_machine(monkeypatch, Machine([], init_error="DriverNotLoaded"))
    machine = mixed()
    log = install_smi(tmp_path, monkeypatch, machine)
    detection = detect(monkeypatch, "GPU-7e4b,0")  # 0 after a UUID ends the list
    assert [gpu.uuid for gpu in detection.gpus] == [T4_B.uuid]
    gpu = detection.gpus[0]
    assert (gpu.capability, gpu.name, gpu.source) == ((7, 5), "Tesla T4", DetectionSource.NVIDIA_SMI)
    assert gpu.total_memory == 15 * GIB
    assert gpu.pci_bus_id == "00000000:86:00.0"
    assert gpu.nvml_index == 2
    assert any("does not mix" in w for w in detection.warnings)
    assert detection.attempts[-1].ok
    assert "nvidia-smi lists 3 GPUs; 1 visible to CUDA" in detection.attempts[-1].detail
    (call,) = log.read_text().splitlines()
    assert call == "--query-gpu=index,name,uuid,pci.bus_id,memory.total,compute_cap --format=csv,noheader,nounits"
    assert str(detection) == "7.5 Tesla T4 via nvidia-smi"


def test_nvidia_smi_r470_without_compute_cap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_machine(monkeypatch, Machine([], init_error="DriverNotLoaded"))
    log = install_smi(tmp_path, monkeypatch, single_h100(), r470=True)
    detection = detect(monkeypatch)
    assert detection  # a GPU is there ...
    gpu = detection.gpu
    assert gpu is not None
    assert gpu.capability is None  # ... but its capability is not guessed from "H100"
    assert gpu.architecture == "unknown"
    assert detection.capability is None
    assert detection.capabilities == ()
    assert gpu.name == H100.name
    assert "no compute_cap field (R470 or older)" in detection.attempts[-1].detail
    assert any("compute capability unknown" in w for w in detection.warnings)
    assert str(detection) == "capability unknown NVIDIA H100 80GB HBM3 via nvidia-smi"
    first, retry = log.read_text().splitlines()
    assert "compute_cap" in first
    assert "compute_cap" not in retry


def test_nvidia_smi_failure_is_a_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_machine(monkeypatch, Machine([], init_error="DriverNotLoaded"))
    install_smi(tmp_path, monkeypatch, single_h100(), broken=True)
    detection = detect(monkeypatch)
    assert not detection
    assert "nvidia-smi exited with 9: NVIDIA-SMI has failed" in detection.attempts[-1].detail


def test_nvidia_smi_timeout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_machine(monkeypatch, Machine([], init_error="DriverNotLoaded"))
    install_smi(tmp_path, monkeypatch, single_h100(), hang=True)
    monkeypatch.setattr(smi, "NVIDIA_SMI_TIMEOUT_S", 0.3)
    detection = detect(monkeypatch)
    assert not detection
    assert "did not answer within 0.3 s" in detection.attempts[-1].detail


@pytest.mark.parametrize("visible", [MIG_B.uuid, "MIG-cba6", f"MIG-GPU-{A100_MIG.uuid[4:]}/5/0"])
def test_nvidia_smi_finds_mig_devices_with_list(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, visible: str) -> None:
    use_machine(monkeypatch, Machine([], init_error="DriverNotLoaded"))
    machine = mig_machine()
    if visible.startswith("MIG-GPU-"):  # an R450/R460 driver lists MIG devices in the old form
        machine.gpus[0].migs = [
            FakeMig(f"MIG-{A100_MIG.uuid}/{m.gpu_instance}/{m.compute_instance}", m.memory, 0, 0, m.profile)
            for m in (MIG_A, MIG_B)
        ]
    log = install_smi(tmp_path, monkeypatch, machine)
    detection = detect(monkeypatch, visible)
    gpu = detection.gpu
    assert gpu is not None
    assert gpu.mig_uuid == machine.gpus[0].migs[1].uuid
    assert (gpu.name, gpu.capability, gpu.uuid, gpu.total_memory) == (A100_MIG.name, (8, 0), A100_MIG.uuid, None)
    assert log.read_text().splitlines()[-1] == "-L"


# --- caching ---------------------------------------------------------------------------------------------------


def test_success_is_cached_per_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = use_machine(monkeypatch, mixed())
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    first = detect_compute_capability(use_torch=False)
    assert detect_compute_capability(use_torch=False) is first
    assert machine.inits == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # another key: detected again
    second = detect_compute_capability(use_torch=False)
    assert machine.inits == 2
    assert second.capability == (7, 5)
    assert detect_compute_capability(use_torch=None) is not second  # use_torch is part of the key
    assert machine.inits == 3
    refreshed = detect_compute_capability(use_torch=False, refresh=True)
    assert machine.inits == 4
    assert refreshed is not second
    assert refreshed.gpus == second.gpus


def test_failure_is_not_cached_for_long(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = use_machine(monkeypatch, Machine([H100], init_error="DriverNotLoaded"))
    failed = detect_compute_capability(use_torch=False)
    assert not failed
    assert detect_compute_capability(use_torch=False) is failed  # reused for a moment ...
    assert broken.inits == 1
    monkeypatch.setattr(detect_module, "FAILURE_TTL_S", 0.0)  # ... but not once FAILURE_TTL_S has passed
    working = use_machine(monkeypatch, single_h100())  # the driver came up
    found = detect_compute_capability(use_torch=False)
    assert found.capability == (9, 0)
    assert working.inits == 1
    assert detect_compute_capability(use_torch=False) is found  # a success is kept, whatever the TTL


def test_refresh_bypasses_a_cached_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    use_machine(monkeypatch, Machine([H100], init_error="DriverNotLoaded"))
    assert not detect_compute_capability(use_torch=False)
    use_machine(monkeypatch, single_h100())
    assert detect_compute_capability(use_torch=False, refresh=True).capability == (9, 0)


def test_concurrent_callers_detect_once(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = use_machine(monkeypatch, single_h100())
    results: list[Detection] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(detect_compute_capability(use_torch=False))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert all(result is results[0] for result in results)
    assert (machine.inits, machine.shutdowns) == (1, 1)


# --- the real pynvml on this machine, in a fresh process ----------------------------------------------------------


def nvml_library_present() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def run_python(code: str, tmp_path: Path, **env: str) -> dict[str, Any]:
    environment = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}
    environment.update(env)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=True, cwd=tmp_path
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


REAL_DETECTION = """
import json, sys
import awq_autoselect.hardware as hardware
imported_at_import = sorted(m for m in ("torch", "pynvml", "awq") if m in sys.modules)
detection = hardware.detect_compute_capability()
print(json.dumps({"imported_at_import": imported_at_import, "torch": "torch" in sys.modules,
                  "bool": bool(detection), "detection": detection.to_dict(), "text": str(detection)}))
"""


@pytest.mark.skipif(nvml_library_present(), reason="libnvidia-ml is present: tests/test_hardware_gpu.py covers this")
def test_real_pynvml_without_library_in_a_fresh_process(tmp_path: Path) -> None:
    result = run_python(REAL_DETECTION, tmp_path, PATH=str(tmp_path))
    assert result["imported_at_import"] == []
    assert result["torch"] is False
    assert result["bool"] is False
    detection = result["detection"]
    assert detection["gpus"] == []
    nvml = detection["attempts"][0]
    assert (nvml["source"], nvml["ok"]) == ("nvml", False)
    assert "NVMLError_LibraryNotFound: NVML Shared Library Not Found" in nvml["detail"]
    assert result["text"].startswith("no GPU: nvml: nvmlInit failed: NVMLError_LibraryNotFound")


def test_module_api() -> None:
    assert set(dir(hardware)) == set(hardware.__all__)
    for name in hardware.__all__:
        assert hasattr(hardware, name)


def test_timing_script_runs_without_gpu(tmp_path: Path) -> None:
    """scripts/detect_timing.py on CPU: reports no GPU, and that detection imported no torch."""
    out = tmp_path / "timing.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "detect_timing.py"), "--runs", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert "detect_compute_capability" in done.stdout
    report = json.loads(out.read_text())
    nvml = report["cases"]["nvml_detect"]
    assert len(nvml["samples_s"]) == 1
    assert nvml["torch_imported"] == [False]
    assert nvml["cuda_initialized"] == [False]
    assert nvml["results"][0].startswith("no GPU")
    assert report["cases"]["torch_capability"]["errors"]  # CPU torch: no CUDA device
