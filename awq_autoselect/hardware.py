"""Which NVIDIA GPUs this process would see as ``cuda:0, cuda:1, ...``, and their compute capability.

Invariant: **detection must not initialize a CUDA context.** A CUDA context costs hundreds of megabytes of GPU
memory and seconds of start-up, and once one exists a forked child can no longer use CUDA. So the first source
is NVML (nvidia-ml-py's ``pynvml``), which reads the driver without CUDA; torch is never imported on that path.
torch is only asked when the caller allows it (``use_torch=True``) or when this process has already initialized
CUDA through torch (so asking costs nothing); ``nvidia-smi`` comes last. Importing this module imports neither
pynvml nor torch.

NVML numbers GPUs its own way and ignores ``CUDA_VISIBLE_DEVICES``, so the CUDA index of each device is worked out
here, following CUDA's rules for that variable: integer indices, full or shortened ``GPU-`` UUIDs, ``MIG-``
identifiers, an invalid entry ending the list, repeated entries hiding every device, and ``CUDA_DEVICE_ORDER``.
Where CUDA's numbering cannot be known from outside CUDA (mixed GPU models under the default ``FASTEST_FIRST``
order, GPUs in MIG mode), the result says so in :attr:`Detection.warnings` and :attr:`Detection.mapping_exact`
instead of guessing. docs/detection.md describes every rule.

"No GPU" is a result, not an exception: :func:`detect_compute_capability` never raises for a missing driver,
library or device; the empty :class:`Detection` it returns says why.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from .capability import ComputeCapability
from .errors import InvalidDeviceSpecError

__all__ = [
    "Detection",
    "DetectionAttempt",
    "DetectionSource",
    "DeviceId",
    "DeviceIdKind",
    "GPUInfo",
    "VisibleDevices",
    "detect_compute_capability",
    "parse_cuda_visible_devices",
]


def __dir__() -> list[str]:
    return __all__


logger = logging.getLogger(__name__)

#: How long ``nvidia-smi`` may run before it is given up on (it can hang on a wedged driver).
NVIDIA_SMI_TIMEOUT_S = 10.0
#: An empty (failed) detection is reused for this long, so a hot loop does not re-run the slow fallbacks,
#: but a driver that comes up later is still found. Successful detections are kept until ``refresh=True``.
FAILURE_TTL_S = 5.0

_SMI_FIELDS = ("index", "name", "uuid", "pci.bus_id", "memory.total", "compute_cap")
_MIB = 1024 * 1024
_T = TypeVar("_T")


# --- values ----------------------------------------------------------------------------------------------


class DetectionSource(str, Enum):
    """Where a GPU's description came from."""

    NVML = "nvml"
    TORCH = "torch"
    NVIDIA_SMI = "nvidia-smi"


@dataclass(frozen=True)
class GPUInfo:
    """One device as this process's CUDA would number it.

    Attributes:
        index: the CUDA device index (``cuda:<index>``) as this process sees it, after ``CUDA_VISIBLE_DEVICES``.
        name: the product name (``NVIDIA H100 80GB HBM3``); for a MIG device, the parent GPU's name.
        capability: the compute capability; for a MIG device, the parent GPU's. ``None`` only when the source
            could not tell (``nvidia-smi`` older than the ``compute_cap`` field); never guessed from the name.
        total_memory: bytes of device memory; for a MIG device, the MIG instance's. ``None`` when unknown.
        uuid: ``GPU-...`` UUID of the physical GPU, when known.
        mig_uuid: the MIG device's identifier (``MIG-...``) when the device is a MIG instance.
        pci_bus_id: the physical GPU's PCI bus id in NVML's form (``00000000:01:00.0``), when known.
        nvml_index: the physical GPU's NVML (and ``nvidia-smi``) index, when known.
        source: where this description came from.
    """

    index: int
    name: str
    capability: ComputeCapability | None
    total_memory: int | None
    uuid: str | None
    mig_uuid: str | None
    pci_bus_id: str | None
    nvml_index: int | None
    source: DetectionSource

    @property
    def architecture(self) -> str:
        """The architecture's name (``Hopper``), or ``unknown``."""
        return "unknown" if self.capability is None else self.capability.architecture

    @property
    def is_mig(self) -> bool:
        """Whether the device is a MIG instance of a larger GPU."""
        return self.mig_uuid is not None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (capability as ``"9.0"``)."""
        return {
            "index": self.index,
            "name": self.name,
            "capability": None if self.capability is None else str(self.capability),
            "architecture": self.architecture,
            "total_memory": self.total_memory,
            "uuid": self.uuid,
            "mig_uuid": self.mig_uuid,
            "pci_bus_id": self.pci_bus_id,
            "nvml_index": self.nvml_index,
            "source": self.source.value,
        }


@dataclass(frozen=True)
class DetectionAttempt:
    """One source tried: whether it answered, and what it said or why it failed."""

    source: DetectionSource
    ok: bool
    detail: str
    seconds: float

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {"source": self.source.value, "ok": self.ok, "detail": self.detail, "seconds": self.seconds}


@dataclass(frozen=True)
class Detection:
    """The GPUs this process would see through CUDA, and how that was found out.

    Attributes:
        gpus: every visible device, in CUDA order (``gpus[0]`` is ``cuda:0``). Empty when there is no GPU.
        attempts: each source tried, in order, with its outcome.
        warnings: what the caller should know: entries of ``CUDA_VISIBLE_DEVICES`` that CUDA ignores, a numbering
            that could not be determined exactly, a capability that is unknown. Each is also logged.
        cuda_visible_devices: the value of ``CUDA_VISIBLE_DEVICES`` when detection ran (``None``: unset).
        device_order: ``"FASTEST_FIRST"`` (CUDA's default) or ``"PCI_BUS_ID"``, from ``CUDA_DEVICE_ORDER``.
        mapping_exact: whether the CUDA index of every device is certain. ``False`` when CUDA's numbering could
            not be reproduced (see :attr:`warnings`): the capabilities are right, which GPU is ``cuda:0`` may not be.
    """

    gpus: tuple[GPUInfo, ...]
    attempts: tuple[DetectionAttempt, ...]
    warnings: tuple[str, ...] = ()
    cuda_visible_devices: str | None = None
    device_order: str = "FASTEST_FIRST"
    mapping_exact: bool = True

    @property
    def gpu(self) -> GPUInfo | None:
        """``cuda:0``, or ``None`` without a GPU."""
        return self.gpus[0] if self.gpus else None

    @property
    def capability(self) -> ComputeCapability | None:
        """``cuda:0``'s compute capability, or ``None`` without a GPU (or when it is unknown)."""
        return self.gpus[0].capability if self.gpus else None

    @property
    def capabilities(self) -> tuple[ComputeCapability, ...]:
        """The distinct known capabilities of the visible GPUs, in CUDA order of first appearance."""
        seen: list[ComputeCapability] = []
        for gpu in self.gpus:
            if gpu.capability is not None and gpu.capability not in seen:
                seen.append(gpu.capability)
        return tuple(seen)

    @property
    def source(self) -> DetectionSource | None:
        """The source that answered, or ``None`` when none did."""
        for attempt in self.attempts:
            if attempt.ok:
                return attempt.source
        return None

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why there is no GPU (or no capability): each failed source's reason, then the warnings."""
        failed = tuple(f"{a.source.value}: {a.detail}" for a in self.attempts if not a.ok)
        return failed + self.warnings

    def __bool__(self) -> bool:
        return bool(self.gpus)

    def __str__(self) -> str:
        gpu = self.gpu
        if gpu is None:
            reasons = "; ".join(self.reasons) or "no source was tried"
            return f"no GPU: {reasons}"
        capability = "capability unknown" if gpu.capability is None else str(gpu.capability)
        more = f" (+{len(self.gpus) - 1} more)" if len(self.gpus) > 1 else ""
        mig = " [MIG]" if gpu.is_mig else ""
        return f"{capability} {gpu.name}{mig} via {gpu.source.value}{more}"

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict of everything above."""
        return {
            "gpus": [gpu.to_dict() for gpu in self.gpus],
            "capability": None if self.capability is None else str(self.capability),
            "attempts": [attempt.to_dict() for attempt in self.attempts],
            "warnings": list(self.warnings),
            "cuda_visible_devices": self.cuda_visible_devices,
            "device_order": self.device_order,
            "mapping_exact": self.mapping_exact,
        }


# --- CUDA_VISIBLE_DEVICES --------------------------------------------------------------------------------


class DeviceIdKind(str, Enum):
    """The forms an entry of ``CUDA_VISIBLE_DEVICES`` can take."""

    INDEX = "index"  # 0, 1, ...: CUDA's ordinal of the GPU, see CUDA_DEVICE_ORDER
    GPU_UUID = "gpu-uuid"  # GPU-8932f937-d72c-4106-c12f-20bd9faed9f6, or any unique prefix of it
    MIG_UUID = "mig-uuid"  # MIG-<uuid>, as `nvidia-smi -L` prints it (R470 and later)
    MIG_LEGACY = "mig-legacy"  # MIG-GPU-<uuid>/<GPU instance id>/<compute instance id> (R450, R460)


@dataclass(frozen=True)
class DeviceId:
    """One entry of ``CUDA_VISIBLE_DEVICES``, as CUDA reads it.

    Attributes:
        kind: the entry's form.
        text: the entry as written, without surrounding spaces.
        index: the device ordinal, for :attr:`DeviceIdKind.INDEX`.
        gpu_uuid: the parent GPU's ``GPU-...`` UUID, for :attr:`DeviceIdKind.MIG_LEGACY`.
        gpu_instance: the GPU instance id, for :attr:`DeviceIdKind.MIG_LEGACY`.
        compute_instance: the compute instance id, for :attr:`DeviceIdKind.MIG_LEGACY`.
    """

    kind: DeviceIdKind
    text: str
    index: int | None = None
    gpu_uuid: str | None = None
    gpu_instance: int | None = None
    compute_instance: int | None = None


@dataclass(frozen=True)
class VisibleDevices:
    """``CUDA_VISIBLE_DEVICES`` read the way CUDA reads it, before looking at any device.

    Attributes:
        raw: the variable's value; ``None`` when it is unset.
        entries: the entries CUDA honours, in order; ``None`` when every device is visible (variable unset);
            empty when no device is visible.
        problems: what CUDA would do silently that the user probably did not mean: entries ignored after an
            invalid one, a repeated entry (which hides every device), digits read from a malformed entry.
    """

    raw: str | None
    entries: tuple[DeviceId, ...] | None
    problems: tuple[str, ...] = ()

    @property
    def all_devices(self) -> bool:
        """Whether the variable is unset, so that every device is visible."""
        return self.entries is None


_LEADING_INT = re.compile(r"[+-]?\d+")
_MIG_LEGACY = re.compile(r"MIG-(GPU-[0-9A-Za-z-]+)/(\d+)/(\d+)")


def _entry_form(entry: str) -> DeviceIdKind:
    if entry.startswith("MIG-"):
        return DeviceIdKind.MIG_UUID
    if entry.startswith("GPU-"):
        return DeviceIdKind.GPU_UUID
    return DeviceIdKind.INDEX


def parse_cuda_visible_devices(value: str | None, *, strict: bool = False) -> VisibleDevices:
    """Read ``CUDA_VISIBLE_DEVICES`` with CUDA's rules (no device is looked at; see docs/detection.md).

    - unset (``None``): every device is visible; an empty or blank string: none is.
    - entries are separated by commas; spaces around an entry are ignored.
    - integer entries are read like C's ``strtoul``: ``"1gpu"`` is ``1``; an entry without leading digits, or a
      negative number, ends the list (CUDA's documented example: ``0,2,-1,1`` shows devices 0 and 2).
    - the first entry fixes the form: after ``GPU-...`` entries, anything not starting with ``GPU-`` ends the
      list, and likewise for ``MIG-...`` and for indices (this is how PyTorch models CUDA; mixing is undocumented).
    - a repeated entry makes CUDA show no device at all.

    Entries that name no existing device (an index out of range, an unknown or ambiguous UUID prefix) also end
    the list; that needs the device table and is done by :func:`detect_compute_capability`.

    Args:
        value: the variable's value, ``None`` when unset.
        strict: raise instead of recording a problem in :attr:`VisibleDevices.problems`.

    Returns:
        The entries CUDA honours, and the problems found.

    Raises:
        InvalidDeviceSpecError: only with ``strict=True``, when CUDA would silently ignore or reinterpret part of
            the value (an entry after an invalid one, a repeated entry, ``1gpu`` read as ``1``, mixed forms).
    """
    if value is None:
        return VisibleDevices(None, None)
    items = [item.strip() for item in value.split(",")]
    if not value.strip():
        return VisibleDevices(value, ())
    form = _entry_form(items[0])
    entries: list[DeviceId] = []
    problems: list[str] = []
    for position, item in enumerate(items):
        entry, note, deliberate = _parse_entry(item, form)
        if entry is None:
            ignored = [rest for rest in items[position + 1 :] if rest]
            if ignored:
                problems.append(f"{note}: CUDA ignores what follows ({','.join(ignored)})")
            elif not deliberate:
                problems.append(f"{note}, so CUDA ignores it")
            break
        if note:
            problems.append(note)
        if any(entry.text == seen.text or (entry.index is not None and entry.index == seen.index) for seen in entries):
            problems.append(f"{item!r} is listed twice, and then CUDA shows no device at all")
            entries = []
            break
        entries.append(entry)
    if strict and problems:
        raise InvalidDeviceSpecError(
            f"CUDA_VISIBLE_DEVICES={value!r}: {problems[0]}. Expected a comma-separated list of device indices "
            "('0,1'), GPU UUIDs or unique UUID prefixes ('GPU-8932f937'), or a MIG identifier ('MIG-<uuid>'); "
            "fix the variable or unset it."
        )
    return VisibleDevices(value, tuple(entries), tuple(problems))


def _parse_entry(item: str, form: DeviceIdKind) -> tuple[DeviceId | None, str, bool]:
    """One entry -> (the entry, or None where it ends the list; a note; whether such an end looks deliberate)."""
    if form is DeviceIdKind.INDEX:
        match = _LEADING_INT.match(item)
        if not item:
            return None, "an empty entry ends the list", True
        if match is None:
            if item.startswith(("GPU-", "MIG-")):
                return None, f"{item!r} follows an index, and CUDA does not mix indices with UUIDs", False
            return None, f"{item!r} is not a device index", False
        number = int(match.group())
        if number < 0:
            return None, f"{item!r} is negative and ends the list", True
        note = ""
        if match.end() < len(item):
            note = f"{item!r} is read as index {number} (CUDA reads only the leading digits)"
        return DeviceId(DeviceIdKind.INDEX, item, index=number), note, False
    if form is DeviceIdKind.GPU_UUID:
        if not item.startswith("GPU-"):
            return None, f"{item!r} follows a GPU UUID, and CUDA does not mix UUIDs with other forms", not item
        return DeviceId(DeviceIdKind.GPU_UUID, item), "", False
    if not item.startswith("MIG-"):
        return None, f"{item!r} follows a MIG identifier, and CUDA does not mix it with other forms", not item
    if item.startswith("MIG-GPU-"):
        legacy = _MIG_LEGACY.fullmatch(item)
        if legacy is None:
            return None, f"{item!r} is not of the form MIG-GPU-<uuid>/<GPU instance>/<compute instance>", False
        entry = DeviceId(
            DeviceIdKind.MIG_LEGACY,
            item,
            gpu_uuid=legacy.group(1),
            gpu_instance=int(legacy.group(2)),
            compute_instance=int(legacy.group(3)),
        )
        return entry, "", False
    return DeviceId(DeviceIdKind.MIG_UUID, item), "", False


# --- the device table every source produces, and the mapping to CUDA indices ----------------------------


@dataclass(frozen=True)
class _Mig:
    uuid: str
    memory: int | None
    gpu_instance: int | None
    compute_instance: int | None


@dataclass(frozen=True)
class _Physical:
    """A physical GPU as NVML (or nvidia-smi) lists it."""

    nvml_index: int
    name: str
    uuid: str | None
    pci_bus_id: str | None
    capability: ComputeCapability | None
    memory: int | None
    mig_enabled: bool = False
    migs: tuple[_Mig, ...] = ()


# A device CUDA would show: a physical GPU, with the MIG device of it that is meant, if any.
_Picked = tuple[_Physical, _Mig | None]
# Looks up a full MIG UUID that the enumerated MIG devices did not contain (NVML can do that directly).
_MigLookup = Callable[[str], tuple[_Physical, _Mig] | None]


@dataclass
class _Mapping:
    gpus: list[GPUInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    exact: bool = True


def _pci_key(bus_id: str) -> tuple[int, ...]:
    match = re.fullmatch(r"([0-9A-Fa-f]+):([0-9A-Fa-f]+):([0-9A-Fa-f]+)\.([0-9A-Fa-f]+)", bus_id)
    if match is None:
        raise ValueError(bus_id)
    return tuple(int(part, 16) for part in match.groups())


def _cuda_order(physicals: Sequence[_Physical], device_order: str) -> list[_Physical]:
    """The order CUDA numbers devices in, where it can be known: PCI bus order under PCI_BUS_ID."""
    if device_order != "PCI_BUS_ID":
        return list(physicals)
    try:
        return sorted(physicals, key=lambda p: _pci_key(p.pci_bus_id or ""))
    except ValueError:
        return list(physicals)  # a bus id is missing: NVML's order, which is PCI order in practice


def _describe(physical: _Physical) -> str:
    return f"NVML GPU {physical.nvml_index} ({physical.name})"


def _match_prefix(prefix: str, candidates: Sequence[tuple[str | None, _T]], what: str) -> tuple[list[_T], str]:
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


def _resolve(
    spec: VisibleDevices,
    physicals: Sequence[_Physical],
    device_order: str,
    source: DetectionSource,
    mig_lookup: _MigLookup | None = None,
) -> _Mapping:
    """Apply CUDA's rules to a device table: which devices CUDA shows, in which order."""
    result = _Mapping()
    ordered = _cuda_order(physicals, device_order)
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

    chosen: list[_Picked] = []
    if spec.entries is None:
        chosen = [(p, None) for p in ordered]
    else:
        for position, entry in enumerate(spec.entries):
            picked, problem = _pick(entry, ordered, mig_lookup)
            if picked is None:
                tail = ",".join(e.text for e in spec.entries[position:])
                result.warnings.append(
                    f"CUDA_VISIBLE_DEVICES: {problem}; CUDA ignores {tail!r} (an invalid entry ends the list)"
                )
                break
            if any(_same(picked, seen) for seen in chosen):
                result.warnings.append(
                    f"CUDA_VISIBLE_DEVICES: {entry.text!r} names a device already listed; CUDA then shows no "
                    "device at all"
                )
                chosen = []
                break
            chosen.append(picked)

    chosen = _apply_mig_rules(chosen, result)
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


def _same(a: _Picked, b: _Picked) -> bool:
    return a[0].nvml_index == b[0].nvml_index and (a[1] is None or b[1] is None or a[1].uuid == b[1].uuid)


def _pick(entry: DeviceId, ordered: Sequence[_Physical], mig_lookup: _MigLookup | None) -> tuple[_Picked | None, str]:
    """The device an entry names, or None and why it names none."""
    if entry.kind is DeviceIdKind.INDEX:
        index = entry.index if entry.index is not None else -1
        if not 0 <= index < len(ordered):
            count = len(ordered)
            return None, f"index {index} is out of range ({count} GPU{'s' if count != 1 else ''} here)"
        return (ordered[index], None), ""
    if entry.kind is DeviceIdKind.GPU_UUID:
        gpus, problem = _match_prefix(entry.text, [(p.uuid, p) for p in ordered], "GPU")
        return ((gpus[0], None), "") if not problem else (None, problem)
    if entry.kind is DeviceIdKind.MIG_LEGACY:
        parents, problem = _match_prefix(entry.gpu_uuid or entry.text, [(p.uuid, p) for p in ordered], "GPU")
        if problem:
            return None, problem
        ids = (entry.gpu_instance, entry.compute_instance)
        for mig in parents[0].migs:
            if (mig.gpu_instance, mig.compute_instance) == ids or mig.uuid == entry.text:
                return (parents[0], mig), ""
        return (
            None,
            f"{_describe(parents[0])} has no MIG device with GPU instance {ids[0]} and compute instance {ids[1]}",
        )
    migs, problem = _match_prefix(entry.text, [(m.uuid, (p, m)) for p in ordered for m in p.migs], "MIG device")
    if not migs and mig_lookup is not None:
        found = mig_lookup(entry.text)
        if found is not None:
            return found, ""
    return (migs[0], "") if not problem else (None, problem)


def _apply_mig_rules(chosen: list[_Picked], result: _Mapping) -> list[_Picked]:
    """A GPU in MIG mode is not usable whole, and CUDA enumerates at most one MIG device per process."""
    out: list[_Picked] = []
    for physical, mig in chosen:
        if mig is None and physical.mig_enabled:
            result.exact = False
            if not physical.migs:
                result.warnings.append(
                    f"{_describe(physical)} is in MIG mode, and none of its MIG devices could be listed (there are "
                    "none, or NVML may not show them): CUDA cannot use the GPU whole, so it is left out"
                )
                continue
            first = physical.migs[0]
            result.warnings.append(
                f"{_describe(physical)} is in MIG mode: CUDA cannot use it whole and shows one of its MIG devices "
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


# --- NVML --------------------------------------------------------------------------------------------------


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _normalise_bus_id(value: object) -> str | None:
    text = _text(value).strip().upper()
    return text or None


class _Nvml:
    """Calls into a pynvml module (the real one, or a test's stand-in). pynvml is untyped, hence ``Any``."""

    def __init__(self, module: Any) -> None:
        self.nvml = module
        self.error: type[Exception] = module.NVMLError

    def optional(self, name: str, *args: Any) -> Any:
        """The call's value, or None when NVML refuses it (e.g. ``NVMLError_NotSupported``)."""
        try:
            return getattr(self.nvml, name)(*args)
        except self.error as exc:
            logger.debug("%s failed: %s: %s", name, type(exc).__name__, exc)
            return None

    def physicals(self) -> list[_Physical]:
        nvml = self.nvml
        physicals = []
        for nvml_index in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(nvml_index)
            major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
            pci = self.optional("nvmlDeviceGetPciInfo", handle)
            mode = self.optional("nvmlDeviceGetMigMode", handle)  # NotSupported on GPUs without MIG
            mig_enabled = mode is not None and int(mode[0]) == 1
            physicals.append(
                _Physical(
                    nvml_index=nvml_index,
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    pci_bus_id=None if pci is None else _normalise_bus_id(pci.busId),
                    capability=ComputeCapability(int(major), int(minor)),
                    memory=self.memory(handle),
                    mig_enabled=mig_enabled,
                    migs=tuple(self.migs(handle)) if mig_enabled else (),
                )
            )
        return physicals

    def memory(self, handle: Any) -> int | None:
        info = self.optional("nvmlDeviceGetMemoryInfo", handle)
        return None if info is None else int(info.total)

    def migs(self, handle: Any) -> list[_Mig]:
        found: list[_Mig] = []
        for slot in range(int(self.optional("nvmlDeviceGetMaxMigDeviceCount", handle) or 0)):
            mig_handle = self.optional("nvmlDeviceGetMigDeviceHandleByIndex", handle, slot)  # empty slot: NotFound
            if mig_handle is not None:
                found.append(self.mig(mig_handle))
        return found

    def mig(self, mig_handle: Any) -> _Mig:
        gpu_instance = self.optional("nvmlDeviceGetGpuInstanceId", mig_handle)
        compute_instance = self.optional("nvmlDeviceGetComputeInstanceId", mig_handle)
        return _Mig(
            uuid=_text(self.nvml.nvmlDeviceGetUUID(mig_handle)),
            memory=self.memory(mig_handle),
            gpu_instance=None if gpu_instance is None else int(gpu_instance),
            compute_instance=None if compute_instance is None else int(compute_instance),
        )

    def lookup_mig(self, physicals: Sequence[_Physical], mig_uuid: str) -> tuple[_Physical, _Mig] | None:
        """A MIG device by full UUID, via its parent's handle (for one that enumerating did not list)."""
        mig_handle = self.optional("nvmlDeviceGetHandleByUUID", mig_uuid)
        if mig_handle is None:
            return None
        parent = self.optional("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", mig_handle)
        parent_index = None if parent is None else self.optional("nvmlDeviceGetIndex", parent)
        for physical in physicals:
            if parent_index is not None and physical.nvml_index == int(parent_index):
                return physical, self.mig(mig_handle)
        return None


def _try_nvml(spec: VisibleDevices, device_order: str) -> tuple[_Mapping | None, DetectionAttempt]:
    started = time.perf_counter()

    def attempt(ok: bool, detail: str) -> DetectionAttempt:
        return DetectionAttempt(DetectionSource.NVML, ok, detail, time.perf_counter() - started)

    try:
        import pynvml
    except ImportError as exc:
        return None, attempt(False, f"pynvml cannot be imported ({exc}); install nvidia-ml-py")
    try:
        nv = _Nvml(pynvml)
    except AttributeError:
        return None, attempt(False, "this pynvml has no NVMLError; install nvidia-ml-py")
    try:
        pynvml.nvmlInit()
    except nv.error as exc:  # NVMLError is not a RuntimeError: catch it by its own class
        return None, attempt(False, f"nvmlInit failed: {type(exc).__name__}: {exc}")
    except OSError as exc:
        return None, attempt(False, f"nvmlInit failed: {type(exc).__name__}: {exc}")
    try:
        physicals = nv.physicals()
        mapping = _resolve(
            spec, physicals, device_order, DetectionSource.NVML, lambda text: nv.lookup_mig(physicals, text)
        )
    except nv.error as exc:
        return None, attempt(False, f"NVML query failed: {type(exc).__name__}: {exc}")
    except (AttributeError, OSError) as exc:  # a pynvml too old for a function, or a broken library
        return None, attempt(False, f"NVML query failed: {type(exc).__name__}: {exc}; upgrade nvidia-ml-py")
    finally:
        try:
            pynvml.nvmlShutdown()
        except nv.error as exc:
            logger.debug("nvmlShutdown failed: %s: %s", type(exc).__name__, exc)
    return mapping, attempt(True, _summary(len(physicals), mapping, "NVML"))


def _summary(found: int, mapping: _Mapping, what: str) -> str:
    visible = len(mapping.gpus)
    return f"{what} lists {found} GPU{'s' if found != 1 else ''}; {visible} visible to CUDA"


# --- torch (only when allowed) ------------------------------------------------------------------------------


def _torch_allowed(use_torch: bool | None) -> tuple[bool, str]:
    if use_torch is not None:
        return use_torch, "skipped: use_torch=False"
    torch = sys.modules.get("torch")
    if torch is None:
        return False, "skipped: torch is not imported, and importing it is not detection's job (use_torch=True)"
    try:
        initialized = bool(torch.cuda.is_initialized())
    except AttributeError:
        return False, "skipped: torch has no torch.cuda"
    if not initialized:
        return False, "skipped: torch has not initialized CUDA in this process (use_torch=True allows it)"
    return True, ""


def _try_torch(spec: VisibleDevices) -> tuple[_Mapping | None, DetectionAttempt]:
    started = time.perf_counter()

    def attempt(ok: bool, detail: str) -> DetectionAttempt:
        return DetectionAttempt(DetectionSource.TORCH, ok, detail, time.perf_counter() - started)

    try:
        import torch
    except ImportError as exc:
        return None, attempt(False, f"torch cannot be imported ({exc})")
    if getattr(torch.version, "hip", None):
        return None, attempt(False, f"torch {torch.__version__} is a ROCm build; there is no CUDA capability")
    try:
        count = torch.cuda.device_count()
        if count == 0:  # a CPU-only build says 0 whatever the hardware: let nvidia-smi have a look
            cuda = getattr(torch.version, "cuda", None)
            return None, attempt(False, f"torch.cuda.device_count() is 0 (torch {torch.__version__}, CUDA {cuda})")
        mapping = _Mapping()
        mig_visible = bool(spec.entries) and spec.entries is not None and spec.entries[0].text.startswith("MIG-")
        for index in range(count):
            props = torch.cuda.get_device_properties(index)
            raw_uuid = str(getattr(props, "uuid", "") or "")
            mapping.gpus.append(
                GPUInfo(
                    index=index,
                    name=props.name,
                    capability=ComputeCapability(props.major, props.minor),
                    total_memory=int(props.total_memory),
                    uuid=f"GPU-{raw_uuid}" if raw_uuid and not mig_visible else None,
                    mig_uuid=f"MIG-{raw_uuid}" if raw_uuid and mig_visible else None,
                    pci_bus_id=_torch_bus_id(props),
                    nvml_index=None,
                    source=DetectionSource.TORCH,
                )
            )
    except (RuntimeError, AssertionError) as exc:  # torch raises these for "no driver" / "not compiled with CUDA"
        return None, attempt(False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return mapping, attempt(True, f"torch.cuda sees {count} device{'s' if count != 1 else ''}")


def _torch_bus_id(props: object) -> str | None:
    """The PCI bus id from torch's device properties (newer torch has the three parts), in NVML's form."""
    domain, bus, device = (getattr(props, name, None) for name in ("pci_domain_id", "pci_bus_id", "pci_device_id"))
    if isinstance(domain, int) and isinstance(bus, int) and isinstance(device, int):
        return f"{domain:08X}:{bus:02X}:{device:02X}.0"
    return None


# --- nvidia-smi ------------------------------------------------------------------------------------------------


def _run_smi(executable: str, arguments: Sequence[str]) -> tuple[int, str]:
    done = subprocess.run(
        [executable, *arguments], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False
    )
    return done.returncode, (done.stdout + done.stderr).strip()


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "(no output)"


def _smi_number(text: str) -> str | None:
    text = text.strip()
    return None if not text or text.startswith("[") or text.upper() in {"N/A", "NA"} else text


def _parse_smi_rows(output: str, fields: Sequence[str]) -> list[_Physical]:
    physicals = []
    for row in csv.reader(output.splitlines(), skipinitialspace=True):
        if not row:
            continue
        if len(row) != len(fields):
            raise ValueError(f"expected {len(fields)} columns, got {row!r}")
        values = dict(zip(fields, (cell.strip() for cell in row), strict=True))
        memory = _smi_number(values["memory.total"])
        capability = _smi_number(values.get("compute_cap", ""))
        physicals.append(
            _Physical(
                nvml_index=int(values["index"]),
                name=values["name"],
                uuid=_smi_number(values["uuid"]),
                pci_bus_id=None if _smi_number(values["pci.bus_id"]) is None else values["pci.bus_id"].upper(),
                capability=None if capability is None else ComputeCapability.parse(capability),
                memory=None if memory is None else int(float(memory)) * _MIB,
            )
        )
    return physicals


_SMI_GPU_LINE = re.compile(r"GPU\s+\d+:.*\(UUID:\s*(GPU-[^)\s]+)\)")
_SMI_MIG_LINE = re.compile(r"MIG\b.*\(UUID:\s*(MIG-[^)\s]+)\)")


def _attach_smi_migs(physicals: list[_Physical], listing: str) -> list[_Physical]:
    """Add the MIG devices that ``nvidia-smi -L`` lists under each GPU."""
    children: dict[str, list[_Mig]] = {}
    parent: str | None = None
    for line in listing.splitlines():
        gpu = _SMI_GPU_LINE.search(line)
        if gpu is not None:
            parent = gpu.group(1)
            continue
        mig = _SMI_MIG_LINE.search(line)
        if mig is not None and parent is not None:
            legacy = _MIG_LEGACY.fullmatch(mig.group(1))
            children.setdefault(parent, []).append(
                _Mig(
                    uuid=mig.group(1),
                    memory=None,
                    gpu_instance=None if legacy is None else int(legacy.group(2)),
                    compute_instance=None if legacy is None else int(legacy.group(3)),
                )
            )
    return [
        _Physical(p.nvml_index, p.name, p.uuid, p.pci_bus_id, p.capability, p.memory, True, tuple(children[p.uuid]))
        if p.uuid in children
        else p
        for p in physicals
    ]


def _try_smi(spec: VisibleDevices, device_order: str) -> tuple[_Mapping | None, DetectionAttempt]:
    started = time.perf_counter()

    def attempt(ok: bool, detail: str) -> DetectionAttempt:
        return DetectionAttempt(DetectionSource.NVIDIA_SMI, ok, detail, time.perf_counter() - started)

    executable = shutil.which("nvidia-smi")
    if executable is None:
        return None, attempt(False, "nvidia-smi is not on PATH")
    fields = list(_SMI_FIELDS)
    notes: list[str] = []
    query = ["--format=csv,noheader,nounits"]
    try:
        code, output = _run_smi(executable, [f"--query-gpu={','.join(fields)}", *query])
        if code != 0 and re.search(r"compute_cap.*not a valid field", output, re.IGNORECASE):
            fields.remove("compute_cap")  # R470 and older: the field does not exist; do not guess it from names
            notes.append("this nvidia-smi has no compute_cap field (R470 or older), so capability is unknown")
            code, output = _run_smi(executable, [f"--query-gpu={','.join(fields)}", *query])
        if code != 0:
            return None, attempt(False, f"nvidia-smi exited with {code}: {_first_line(output)}")
        physicals = _parse_smi_rows(output, fields)
        if spec.entries and spec.entries[0].kind in (DeviceIdKind.MIG_UUID, DeviceIdKind.MIG_LEGACY):
            code, listing = _run_smi(executable, ["-L"])  # --query-gpu lists no MIG devices; -L does
            if code == 0:
                physicals = _attach_smi_migs(physicals, listing)
            else:
                notes.append(f"nvidia-smi -L failed ({_first_line(listing)}), so MIG devices cannot be matched")
    except subprocess.TimeoutExpired:
        return None, attempt(False, f"nvidia-smi did not answer within {NVIDIA_SMI_TIMEOUT_S:g} s")
    except OSError as exc:
        return None, attempt(False, f"nvidia-smi could not run: {type(exc).__name__}: {exc}")
    except ValueError as exc:
        return None, attempt(False, f"nvidia-smi printed something unexpected: {exc}")
    mapping = _resolve(spec, physicals, device_order, DetectionSource.NVIDIA_SMI)
    if "compute_cap" not in fields and mapping.gpus:
        mapping.warnings.append(
            "compute capability unknown: this nvidia-smi has no compute_cap field (R470 or older), and it is not "
            "guessed from the GPU's name. Make NVML readable (install nvidia-ml-py), or pass use_torch=True."
        )
    detail = "; ".join([_summary(len(physicals), mapping, "nvidia-smi"), *notes])
    return mapping, attempt(True, detail)


# --- the entry point and its cache -----------------------------------------------------------------------


_CacheKey = tuple[str | None, str | None, bool | None]
_CACHE: dict[_CacheKey, tuple[Detection, float]] = {}
_LOCK = threading.Lock()


def _clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


def detect_compute_capability(*, use_torch: bool | None = None, refresh: bool = False) -> Detection:
    """Find the GPUs this process would see as ``cuda:0, cuda:1, ...`` and their compute capability.

    Never initializes a CUDA context (see the module docstring). Sources, in order, until one answers:

    1. NVML through ``pynvml`` (nvidia-ml-py), with ``CUDA_VISIBLE_DEVICES`` and ``CUDA_DEVICE_ORDER`` applied.
    2. torch, only when ``use_torch=True``, or when ``use_torch`` is None and this process has already imported
       torch and initialized CUDA with it (torch is never imported just to check).
    3. ``nvidia-smi --query-gpu=...``, with the same mapping as NVML.

    A successful result is cached per (``CUDA_VISIBLE_DEVICES``, ``CUDA_DEVICE_ORDER``, ``use_torch``) for the
    life of the process; a result without a GPU only for :data:`FAILURE_TTL_S` seconds. Thread-safe.

    Args:
        use_torch: allow (True), forbid (False) or, when None, allow only if torch already initialized CUDA.
            Allowing it lets torch initialize CUDA when NVML fails: that breaks the invariant above on purpose.
        refresh: detect again even if a cached result exists.

    Returns:
        A :class:`Detection`; empty (falsy), with :attr:`Detection.reasons`, when there is no usable GPU.
        Problems with ``CUDA_VISIBLE_DEVICES`` are reported in :attr:`Detection.warnings` (and logged), never
        raised: use :func:`parse_cuda_visible_devices` with ``strict=True`` to reject them.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    order = os.environ.get("CUDA_DEVICE_ORDER")
    key: _CacheKey = (visible, order, use_torch)
    with _LOCK:
        cached = _CACHE.get(key)
        now = time.monotonic()
        if cached is not None and not refresh and (cached[0] or now - cached[1] < FAILURE_TTL_S):
            return cached[0]
        detection = _detect(visible, order, use_torch)
        _CACHE[key] = (detection, time.monotonic())
    return detection


def _detect(visible: str | None, order_value: str | None, use_torch: bool | None) -> Detection:
    warnings: list[str] = []
    device_order = "PCI_BUS_ID" if order_value == "PCI_BUS_ID" else "FASTEST_FIRST"
    if order_value not in (None, "", "PCI_BUS_ID", "FASTEST_FIRST"):
        warnings.append(
            f"CUDA_DEVICE_ORDER={order_value!r} is neither FASTEST_FIRST nor PCI_BUS_ID; assuming CUDA's default, "
            "FASTEST_FIRST"
        )
    spec = parse_cuda_visible_devices(visible)
    warnings.extend(f"CUDA_VISIBLE_DEVICES: {problem}" for problem in spec.problems)
    hidden_on_purpose = f"CUDA_VISIBLE_DEVICES={visible!r} names no device, so CUDA sees no GPU"

    def done(mapping: _Mapping | None, attempts: list[DetectionAttempt]) -> Detection:
        gpus = () if mapping is None else tuple(mapping.gpus)
        all_warnings = warnings + ([] if mapping is None else mapping.warnings)
        detection = Detection(
            gpus=gpus,
            attempts=tuple(attempts),
            warnings=tuple(all_warnings),
            cuda_visible_devices=visible,
            device_order=device_order,
            mapping_exact=True if mapping is None else mapping.exact,
        )
        for attempt in attempts:
            logger.debug(
                "detection via %s: ok=%s (%.3f s): %s",
                attempt.source.value,
                attempt.ok,
                attempt.seconds,
                attempt.detail,
            )
        for warning in all_warnings:
            # Hiding every GPU on purpose (CUDA_VISIBLE_DEVICES="") is common: say it, but not as a warning.
            logger.log(logging.INFO if warning is hidden_on_purpose else logging.WARNING, "%s", warning)
        logger.debug("detection: %s", detection)
        return detection

    if spec.entries is not None and not spec.entries:
        if not spec.problems:
            warnings.append(hidden_on_purpose)
        return done(None, [])

    attempts: list[DetectionAttempt] = []
    mapping, attempt = _try_nvml(spec, device_order)
    attempts.append(attempt)
    if mapping is not None:
        return done(mapping, attempts)

    allowed, why_not = _torch_allowed(use_torch)
    if allowed:
        mapping, attempt = _try_torch(spec)
        attempts.append(attempt)
        if mapping is not None:
            return done(mapping, attempts)
    else:
        attempts.append(DetectionAttempt(DetectionSource.TORCH, False, why_not, 0.0))

    mapping, attempt = _try_smi(spec, device_order)
    attempts.append(attempt)
    return done(mapping, attempts)
