"""Where and with what a benchmark ran: host, GPU, driver, library versions, and the card's peak bandwidth."""

from __future__ import annotations

import datetime as _dt
import logging
import platform
import socket

from awq_autoselect._packages import dist_version
from awq_autoselect._version import __version__
from awq_autoselect.hardware import driver_version

from .records import RunMetadata
from .timing import BenchDevice
from .traffic import datasheet_bandwidth_gbps

__all__ = ["measure_copy_gbps", "run_metadata"]

logger = logging.getLogger(__name__)

_COPY_BYTES = 256 * 1024 * 1024


def measure_copy_gbps(device: BenchDevice) -> float | None:
    """Device-to-device copy bandwidth (read + write bytes / time), a lower bound of the card's peak."""
    import torch

    try:
        free = device.free_bytes() or 0
        size = min(_COPY_BYTES, free // 4)
        if size < 16 * 1024 * 1024:
            return None
        src = torch.empty(size, dtype=torch.uint8, device=device.dev)
        dst = torch.empty_like(src)
        for _ in range(2):
            dst.copy_(src)
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        reps = 10
        start.record()
        for _ in range(reps):
            dst.copy_(src)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1000.0
        del src, dst
        device.free()
        return 2 * size * reps / seconds / 1e9 if seconds > 0 else None
    except RuntimeError:
        logger.debug("bandwidth copy measurement failed", exc_info=True)
        return None


def run_metadata(device: BenchDevice, started: _dt.datetime, peak_override: float | None) -> RunMetadata:
    import torch

    gpu_name = capability = driver = None
    gpu_memory: int | None = None
    peak: float | None = None
    source: str | None = None
    if device.is_cuda:
        props = torch.cuda.get_device_properties(device.dev)
        gpu_name = str(props.name)
        capability = f"{props.major}.{props.minor}"
        gpu_memory = int(props.total_memory)
        driver = driver_version()
        if peak_override is not None:
            peak, source = peak_override, "user"
        elif (known := datasheet_bandwidth_gbps(gpu_name)) is not None:
            peak, source = known[0], f"datasheet: {known[1]}"
        elif (measured := measure_copy_gbps(device)) is not None:
            peak, source = measured, "measured device-to-device copy (a lower bound of the datasheet peak)"
    return RunMetadata(
        timestamp=started.isoformat(timespec="seconds"),
        hostname=socket.gethostname(),
        python=platform.python_version(),
        platform=platform.platform(),
        device=str(device.dev),
        gpu_name=gpu_name,
        gpu_capability=capability,
        gpu_memory_bytes=gpu_memory,
        driver_version=driver,
        torch_version=str(torch.__version__),
        cuda_version=torch.version.cuda,
        triton_version=dist_version("triton"),
        transformers_version=dist_version("transformers"),
        autoawq_version=dist_version("autoawq"),
        awq_autoselect_version=__version__,
        cpu_threads=int(torch.get_num_threads()),
        peak_bandwidth_gbps=peak,
        peak_bandwidth_source=source,
    )
