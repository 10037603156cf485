"""Detection through ``nvidia-smi``, the last resort: its CSV query, and ``-L`` for MIG devices."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import time
from collections.abc import Sequence

from awq_autoselect.capability import ComputeCapability

from .mapping import DeviceMapping, MigDevice, PhysicalGpu, resolve, summary
from .records import DetectionAttempt, DetectionSource
from .visible import MIG_LEGACY_PATTERN, DeviceIdKind, VisibleDevices

#: How long ``nvidia-smi`` may run before it is given up on (it can hang on a wedged driver).
NVIDIA_SMI_TIMEOUT_S = 10.0

SMI_FIELDS = ("index", "name", "uuid", "pci.bus_id", "memory.total", "compute_cap")
_MIB = 1024 * 1024

__all__ = ["NVIDIA_SMI_TIMEOUT_S", "run_smi", "smi_driver_version", "try_smi"]


def run_smi(executable: str, arguments: Sequence[str]) -> tuple[int, str]:
    done = subprocess.run(
        [executable, *arguments], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False
    )
    return done.returncode, (done.stdout + done.stderr).strip()


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "(no output)"


def smi_number(text: str) -> str | None:
    text = text.strip()
    return None if not text or text.startswith("[") or text.upper() in {"N/A", "NA"} else text


def parse_smi_rows(output: str, fields: Sequence[str]) -> list[PhysicalGpu]:
    physicals = []
    for row in csv.reader(output.splitlines(), skipinitialspace=True):
        if not row:
            continue
        if len(row) != len(fields):
            raise ValueError(f"expected {len(fields)} columns, got {row!r}")
        values = dict(zip(fields, (cell.strip() for cell in row), strict=True))
        memory = smi_number(values["memory.total"])
        capability = smi_number(values.get("compute_cap", ""))
        physicals.append(
            PhysicalGpu(
                nvml_index=int(values["index"]),
                name=values["name"],
                uuid=smi_number(values["uuid"]),
                pci_bus_id=None if smi_number(values["pci.bus_id"]) is None else values["pci.bus_id"].upper(),
                capability=None if capability is None else ComputeCapability.parse(capability),
                memory=None if memory is None else int(float(memory)) * _MIB,
            )
        )
    return physicals


_SMI_GPU_LINE = re.compile(r"GPU\s+\d+:.*\(UUID:\s*(GPU-[^)\s]+)\)")
_SMI_MIG_LINE = re.compile(r"MIG\b.*\(UUID:\s*(MIG-[^)\s]+)\)")


def attach_smi_migs(physicals: list[PhysicalGpu], listing: str) -> list[PhysicalGpu]:
    """Add the MIG devices that ``nvidia-smi -L`` lists under each GPU."""
    children: dict[str, list[MigDevice]] = {}
    parent: str | None = None
    for line in listing.splitlines():
        gpu = _SMI_GPU_LINE.search(line)
        if gpu is not None:
            parent = gpu.group(1)
            continue
        mig = _SMI_MIG_LINE.search(line)
        if mig is not None and parent is not None:
            legacy = MIG_LEGACY_PATTERN.fullmatch(mig.group(1))
            children.setdefault(parent, []).append(
                MigDevice(
                    uuid=mig.group(1),
                    memory=None,
                    gpu_instance=None if legacy is None else int(legacy.group(2)),
                    compute_instance=None if legacy is None else int(legacy.group(3)),
                )
            )
    return [
        PhysicalGpu(p.nvml_index, p.name, p.uuid, p.pci_bus_id, p.capability, p.memory, True, tuple(children[p.uuid]))
        if p.uuid in children
        else p
        for p in physicals
    ]


def try_smi(spec: VisibleDevices, device_order: str) -> tuple[DeviceMapping | None, DetectionAttempt]:
    started = time.perf_counter()

    def attempt(ok: bool, detail: str) -> DetectionAttempt:
        return DetectionAttempt(DetectionSource.NVIDIA_SMI, ok, detail, time.perf_counter() - started)

    executable = shutil.which("nvidia-smi")
    if executable is None:
        return None, attempt(False, "nvidia-smi is not on PATH")
    fields = list(SMI_FIELDS)
    notes: list[str] = []
    query = ["--format=csv,noheader,nounits"]
    try:
        code, output = run_smi(executable, [f"--query-gpu={','.join(fields)}", *query])
        if code != 0 and re.search(r"compute_cap.*not a valid field", output, re.IGNORECASE):
            fields.remove("compute_cap")  # R470 and older: the field does not exist; do not guess it from names
            notes.append("this nvidia-smi has no compute_cap field (R470 or older), so capability is unknown")
            code, output = run_smi(executable, [f"--query-gpu={','.join(fields)}", *query])
        if code != 0:
            return None, attempt(False, f"nvidia-smi exited with {code}: {first_line(output)}")
        physicals = parse_smi_rows(output, fields)
        if spec.entries and spec.entries[0].kind in (DeviceIdKind.MIG_UUID, DeviceIdKind.MIG_LEGACY):
            code, listing = run_smi(executable, ["-L"])  # --query-gpu lists no MIG devices; -L does
            if code == 0:
                physicals = attach_smi_migs(physicals, listing)
            else:
                notes.append(f"nvidia-smi -L failed ({first_line(listing)}), so MIG devices cannot be matched")
    except subprocess.TimeoutExpired:
        return None, attempt(False, f"nvidia-smi did not answer within {NVIDIA_SMI_TIMEOUT_S:g} s")
    except OSError as exc:
        return None, attempt(False, f"nvidia-smi could not run: {type(exc).__name__}: {exc}")
    except ValueError as exc:
        return None, attempt(False, f"nvidia-smi printed something unexpected: {exc}")
    mapping = resolve(spec, physicals, device_order, DetectionSource.NVIDIA_SMI)
    if "compute_cap" not in fields and mapping.gpus:
        mapping.warnings.append(
            "compute capability unknown: this nvidia-smi has no compute_cap field (R470 or older), and it is not "
            "guessed from the GPU's name. Make NVML readable (install nvidia-ml-py), or pass use_torch=True."
        )
    detail = "; ".join([summary(len(physicals), mapping, "nvidia-smi"), *notes])
    return mapping, attempt(True, detail)


def smi_driver_version() -> str | None:
    """The driver version ``nvidia-smi`` reports, or ``None``."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return None
    try:
        code, output = run_smi(executable, ["--query-gpu=driver_version", "--format=csv,noheader"])
    except (OSError, subprocess.SubprocessError):
        return None
    lines = output.strip().splitlines()
    return lines[0].strip() if code == 0 and lines else None
