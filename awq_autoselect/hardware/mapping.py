"""The device table every source produces, and CUDA's numbering applied to it.

NVML and ``nvidia-smi`` list physical GPUs in their own order and ignore ``CUDA_VISIBLE_DEVICES``; :func:`resolve`
applies CUDA's rules (``CUDA_DEVICE_ORDER``, UUID prefixes, MIG devices) to say which devices CUDA shows, in
which order, and where that cannot be known exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from awq_autoselect.capability import ComputeCapability

from .records import DetectionSource, GPUInfo
from .visible import DeviceId, DeviceIdKind, VisibleDevices

_T = TypeVar("_T")

__all__ = [
    "DeviceMapping",
    "MigDevice",
    "MigLookup",
    "PhysicalGpu",
    "Picked",
    "cuda_order",
    "describe",
    "resolve",
    "summary",
]


@dataclass(frozen=True)
class MigDevice:
    uuid: str
    memory: int | None
    gpu_instance: int | None
    compute_instance: int | None


@dataclass(frozen=True)
class PhysicalGpu:
    """A physical GPU as NVML (or nvidia-smi) lists it."""

    nvml_index: int
    name: str
    uuid: str | None
    pci_bus_id: str | None
    capability: ComputeCapability | None
    memory: int | None
    mig_enabled: bool = False
    migs: tuple[MigDevice, ...] = ()


# A device CUDA would show: a physical GPU, with the MIG device of it that is meant, if any.
Picked = tuple[PhysicalGpu, MigDevice | None]
# Looks up a full MIG UUID that the enumerated MIG devices did not contain (NVML can do that directly).
MigLookup = Callable[[str], tuple[PhysicalGpu, MigDevice] | None]


@dataclass
class DeviceMapping:
    gpus: list[GPUInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    exact: bool = True


def pci_key(bus_id: str) -> tuple[int, ...]:
    match = re.fullmatch(r"([0-9A-Fa-f]+):([0-9A-Fa-f]+):([0-9A-Fa-f]+)\.([0-9A-Fa-f]+)", bus_id)
    if match is None:
        raise ValueError(bus_id)
    return tuple(int(part, 16) for part in match.groups())


def cuda_order(physicals: Sequence[PhysicalGpu], device_order: str) -> list[PhysicalGpu]:
    """The order CUDA numbers devices in, where it can be known: PCI bus order under PCI_BUS_ID."""
    if device_order != "PCI_BUS_ID":
        return list(physicals)
    try:
        return sorted(physicals, key=lambda p: pci_key(p.pci_bus_id or ""))
    except ValueError:
        return list(physicals)  # a bus id is missing: NVML's order, which is PCI order in practice


def describe(physical: PhysicalGpu) -> str:
    return f"NVML GPU {physical.nvml_index} ({physical.name})"


def match_prefix(prefix: str, candidates: Sequence[tuple[str | None, _T]], what: str) -> tuple[list[_T], str]:
    """Every candidate whose UUID starts with ``prefix``, and what is wrong unless there is exactly one."""
    found = [(uuid, item) for uuid, item in candidates if uuid is not None and uuid.startswith(prefix)]
    if not found:
        return [], f"no {what} has a UUID starting with {prefix!r}"
    if len(found) > 1:
        uuids = ", ".join(uuid or "" for uuid, _ in found)
        return [item for _, item in found], (
            f"{prefix!r} is ambiguous: it starts the UUIDs of {len(found)} {what}s ({uuids}); give more digits"
        )
    return [found[0][1]], ""


def resolve(
    spec: VisibleDevices,
    physicals: Sequence[PhysicalGpu],
    device_order: str,
    source: DetectionSource,
    mig_lookup: MigLookup | None = None,
) -> DeviceMapping:
    """Apply CUDA's rules to a device table: which devices CUDA shows, in which order."""
    result = DeviceMapping()
    ordered = cuda_order(physicals, device_order)
    kinds = {(p.name, p.capability) for p in physicals}
    by_position = spec.entries is None or any(e.kind is DeviceIdKind.INDEX for e in spec.entries)
    if by_position and device_order != "PCI_BUS_ID" and len(kinds) > 1:
        result.exact = False
        models = ", ".join(sorted({p.name for p in physicals}))
        result.warnings.append(
            f"this machine has different GPU models ({models}) and CUDA_DEVICE_ORDER is FASTEST_FIRST (CUDA's "
            "default), whose order is an undocumented heuristic: which GPU is cuda:0 (and which GPUs integer "
            "entries of CUDA_VISIBLE_DEVICES select) may differ from what is reported here. Set "
            "CUDA_DEVICE_ORDER=PCI_BUS_ID, or list GPU UUIDs in CUDA_VISIBLE_DEVICES, for an exact mapping."
        )

    chosen: list[Picked] = []
    if spec.entries is None:
        chosen = [(p, None) for p in ordered]
    else:
        for position, entry in enumerate(spec.entries):
            picked, problem = pick(entry, ordered, mig_lookup)
            if picked is None:
                tail = ",".join(e.text for e in spec.entries[position:])
                result.warnings.append(
                    f"CUDA_VISIBLE_DEVICES: {problem}; CUDA ignores {tail!r} (an invalid entry ends the list)"
                )
                break
            if any(same_device(picked, seen) for seen in chosen):
                result.warnings.append(
                    f"CUDA_VISIBLE_DEVICES: {entry.text!r} names a device already listed; CUDA then shows no "
                    "device at all"
                )
                chosen = []
                break
            chosen.append(picked)

    chosen = apply_mig_rules(chosen, result)
    for cuda_index, (physical, mig) in enumerate(chosen):
        result.gpus.append(
            GPUInfo(
                index=cuda_index,
                name=physical.name,
                capability=physical.capability,
                total_memory=physical.memory if mig is None else mig.memory,
                uuid=physical.uuid,
                mig_uuid=None if mig is None else mig.uuid,
                pci_bus_id=physical.pci_bus_id,
                nvml_index=physical.nvml_index,
                source=source,
            )
        )
    return result


def same_device(a: Picked, b: Picked) -> bool:
    return a[0].nvml_index == b[0].nvml_index and (a[1] is None or b[1] is None or a[1].uuid == b[1].uuid)


def pick(entry: DeviceId, ordered: Sequence[PhysicalGpu], mig_lookup: MigLookup | None) -> tuple[Picked | None, str]:
    """The device an entry names, or None and why it names none."""
    if entry.kind is DeviceIdKind.INDEX:
        index = entry.index if entry.index is not None else -1
        if not 0 <= index < len(ordered):
            count = len(ordered)
            return None, f"index {index} is out of range ({count} GPU{'s' if count != 1 else ''} here)"
        return (ordered[index], None), ""
    if entry.kind is DeviceIdKind.GPU_UUID:
        gpus, problem = match_prefix(entry.text, [(p.uuid, p) for p in ordered], "GPU")
        return ((gpus[0], None), "") if not problem else (None, problem)
    if entry.kind is DeviceIdKind.MIG_LEGACY:
        parents, problem = match_prefix(entry.gpu_uuid or entry.text, [(p.uuid, p) for p in ordered], "GPU")
        if problem:
            return None, problem
        ids = (entry.gpu_instance, entry.compute_instance)
        for mig in parents[0].migs:
            if (mig.gpu_instance, mig.compute_instance) == ids or mig.uuid == entry.text:
                return (parents[0], mig), ""
        return (
            None,
            f"{describe(parents[0])} has no MIG device with GPU instance {ids[0]} and compute instance {ids[1]}",
        )
    migs, problem = match_prefix(entry.text, [(m.uuid, (p, m)) for p in ordered for m in p.migs], "MIG device")
    if not migs and mig_lookup is not None:
        found = mig_lookup(entry.text)
        if found is not None:
            return found, ""
    return (migs[0], "") if not problem else (None, problem)


def apply_mig_rules(chosen: list[Picked], result: DeviceMapping) -> list[Picked]:
    """A GPU in MIG mode is not usable whole, and CUDA enumerates at most one MIG device per process."""
    out: list[Picked] = []
    for physical, mig in chosen:
        if mig is None and physical.mig_enabled:
            result.exact = False
            if not physical.migs:
                result.warnings.append(
                    f"{describe(physical)} is in MIG mode, and none of its MIG devices could be listed (there are "
                    "none, or NVML may not show them): CUDA cannot use the GPU whole, so it is left out"
                )
                continue
            first = physical.migs[0]
            result.warnings.append(
                f"{describe(physical)} is in MIG mode: CUDA cannot use it whole and shows one of its MIG devices "
                f"instead (assumed here: the first, {first.uuid}; which one CUDA picks is undocumented). Name a MIG "
                "device in CUDA_VISIBLE_DEVICES (MIG-<uuid>, from `nvidia-smi -L`) for an exact mapping."
            )
            out.append((physical, first))
            continue
        out.append((physical, mig))
    migs = [item for item in out if item[1] is not None]
    if len(migs) > 1:
        kept = migs[0]
        dropped = ", ".join(m.uuid for _, m in migs[1:] if m is not None)
        result.warnings.append(
            f"CUDA enumerates only one MIG device per process (CUDA 11 and 12), so {dropped} "
            f"{'is' if len(migs) == 2 else 'are'} not visible; run one process per MIG device"
        )
        out = [item for item in out if item[1] is None or item is kept]
    return out


def summary(found: int, mapping: DeviceMapping, what: str) -> str:
    """``NVML lists 2 GPUs; 1 visible to CUDA``."""
    visible = len(mapping.gpus)
    return f"{what} lists {found} GPU{'s' if found != 1 else ''}; {visible} visible to CUDA"
