"""Detection through NVML (nvidia-ml-py's ``pynvml``): the driver's view, without creating a CUDA context.

``pynvml`` is imported inside the functions. :func:`nvml_session` is the one place NVML is initialized and shut
down; detection and the benchmark's run metadata (:func:`driver_version`) both go through it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from awq_autoselect.capability import ComputeCapability

from .mapping import DeviceMapping, MigDevice, PhysicalGpu, resolve, summary
from .records import DetectionAttempt, DetectionSource
from .visible import VisibleDevices

logger = logging.getLogger(__name__)

__all__ = ["NvmlQuery", "NvmlUnavailableError", "driver_version", "nvml_session", "try_nvml"]


def text_of(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def normalise_bus_id(value: object) -> str | None:
    text = text_of(value).strip().upper()
    return text or None


class NvmlQuery:
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

    def physicals(self) -> list[PhysicalGpu]:
        nvml = self.nvml
        physicals = []
        for nvml_index in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(nvml_index)
            major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
            pci = self.optional("nvmlDeviceGetPciInfo", handle)
            mode = self.optional("nvmlDeviceGetMigMode", handle)  # NotSupported on GPUs without MIG
            mig_enabled = mode is not None and int(mode[0]) == 1
            physicals.append(
                PhysicalGpu(
                    nvml_index=nvml_index,
                    name=text_of(nvml.nvmlDeviceGetName(handle)),
                    uuid=text_of(nvml.nvmlDeviceGetUUID(handle)),
                    pci_bus_id=None if pci is None else normalise_bus_id(pci.busId),
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

    def migs(self, handle: Any) -> list[MigDevice]:
        found: list[MigDevice] = []
        for slot in range(int(self.optional("nvmlDeviceGetMaxMigDeviceCount", handle) or 0)):
            mig_handle = self.optional("nvmlDeviceGetMigDeviceHandleByIndex", handle, slot)  # empty slot: NotFound
            if mig_handle is not None:
                found.append(self.mig(mig_handle))
        return found

    def mig(self, mig_handle: Any) -> MigDevice:
        gpu_instance = self.optional("nvmlDeviceGetGpuInstanceId", mig_handle)
        compute_instance = self.optional("nvmlDeviceGetComputeInstanceId", mig_handle)
        return MigDevice(
            uuid=text_of(self.nvml.nvmlDeviceGetUUID(mig_handle)),
            memory=self.memory(mig_handle),
            gpu_instance=None if gpu_instance is None else int(gpu_instance),
            compute_instance=None if compute_instance is None else int(compute_instance),
        )

    def lookup_mig(self, physicals: Sequence[PhysicalGpu], mig_uuid: str) -> tuple[PhysicalGpu, MigDevice] | None:
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


class NvmlUnavailableError(Exception):
    """NVML cannot be used here (no pynvml, no driver library, nvmlInit failed); the message says which."""


@contextlib.contextmanager
def nvml_session() -> Iterator[NvmlQuery]:
    """Initialize NVML, yield a query object, and shut NVML down again (also on error).

    Raises:
        NvmlUnavailableError: pynvml does not import, is not nvidia-ml-py, or ``nvmlInit`` fails.
    """
    try:
        import pynvml
    except ImportError as exc:
        raise NvmlUnavailableError(f"pynvml cannot be imported ({exc}); install nvidia-ml-py") from exc
    try:
        nv = NvmlQuery(pynvml)
    except AttributeError as exc:
        raise NvmlUnavailableError("this pynvml has no NVMLError; install nvidia-ml-py") from exc
    try:
        pynvml.nvmlInit()
    except (nv.error, OSError) as exc:  # NVMLError is not a RuntimeError: catch it by its own class
        raise NvmlUnavailableError(f"nvmlInit failed: {type(exc).__name__}: {exc}") from exc
    try:
        yield nv
    finally:
        try:
            pynvml.nvmlShutdown()
        except nv.error as exc:
            logger.debug("nvmlShutdown failed: %s: %s", type(exc).__name__, exc)


def try_nvml(spec: VisibleDevices, device_order: str) -> tuple[DeviceMapping | None, DetectionAttempt]:
    """Detection through NVML: the mapping and the attempt, or ``None`` and why not."""
    started = time.perf_counter()

    def attempt(ok: bool, detail: str) -> DetectionAttempt:
        return DetectionAttempt(DetectionSource.NVML, ok, detail, time.perf_counter() - started)

    try:
        with nvml_session() as nv:
            try:
                physicals = nv.physicals()
                mapping = resolve(
                    spec, physicals, device_order, DetectionSource.NVML, lambda text: nv.lookup_mig(physicals, text)
                )
            except nv.error as exc:
                return None, attempt(False, f"NVML query failed: {type(exc).__name__}: {exc}")
            except (AttributeError, OSError) as exc:  # a pynvml too old for a function, or a broken library
                return None, attempt(False, f"NVML query failed: {type(exc).__name__}: {exc}; upgrade nvidia-ml-py")
    except NvmlUnavailableError as exc:
        return None, attempt(False, str(exc))
    return mapping, attempt(True, summary(len(physicals), mapping, "NVML"))


def driver_version() -> str | None:
    """The NVIDIA driver's version through NVML, else ``nvidia-smi``; ``None`` when neither answers."""
    try:
        with nvml_session() as nv:
            try:
                return text_of(nv.nvml.nvmlSystemGetDriverVersion())
            except nv.error as exc:
                logger.debug("NVML could not report the driver version: %s", exc)
    except NvmlUnavailableError as exc:
        logger.debug("NVML could not report the driver version: %s", exc)
    from .smi import smi_driver_version

    return smi_driver_version()
