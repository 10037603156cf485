"""What detection finds: GPUs as CUDA numbers them, and how each source fared. No heavy imports."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from awq_autoselect.capability import ComputeCapability

__all__ = ["Detection", "DetectionAttempt", "DetectionSource", "GPUInfo"]


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
