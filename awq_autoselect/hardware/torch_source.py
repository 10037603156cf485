"""Detection through torch: only when the caller allows it, or when this process already initialized CUDA."""

from __future__ import annotations

import sys
import time

from awq_autoselect.capability import ComputeCapability

from .mapping import DeviceMapping
from .records import DetectionAttempt, DetectionSource, GPUInfo
from .visible import VisibleDevices

__all__ = ["torch_allowed", "try_torch"]


def torch_allowed(use_torch: bool | None) -> tuple[bool, str]:
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


def try_torch(spec: VisibleDevices) -> tuple[DeviceMapping | None, DetectionAttempt]:
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
        mapping = DeviceMapping()
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
                    pci_bus_id=torch_bus_id(props),
                    nvml_index=None,
                    source=DetectionSource.TORCH,
                )
            )
    except (RuntimeError, AssertionError) as exc:  # torch raises these for "no driver" / "not compiled with CUDA"
        return None, attempt(False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return mapping, attempt(True, f"torch.cuda sees {count} device{'s' if count != 1 else ''}")


def torch_bus_id(props: object) -> str | None:
    """The PCI bus id from torch's device properties (newer torch has the three parts), in NVML's form."""
    domain, bus, device = (getattr(props, name, None) for name in ("pci_domain_id", "pci_bus_id", "pci_device_id"))
    if isinstance(domain, int) and isinstance(bus, int) and isinstance(device, int):
        return f"{domain:08X}:{bus:02X}:{device:02X}.0"
    return None
