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
library or device; the empty :class:`Detection` it returns says why."""

from __future__ import annotations

import logging
import os
import threading
import time

from .mapping import DeviceMapping
from .nvml import try_nvml
from .records import Detection, DetectionAttempt, DetectionSource
from .smi import try_smi
from .torch_source import torch_allowed, try_torch
from .visible import parse_cuda_visible_devices

logger = logging.getLogger(__name__)

#: An empty (failed) detection is reused for this long, so a hot loop does not re-run the slow fallbacks,
#: but a driver that comes up later is still found. Successful detections are kept until ``refresh=True``.
FAILURE_TTL_S = 5.0

__all__ = ["FAILURE_TTL_S", "clear_cache", "detect_compute_capability"]

_CacheKey = tuple[str | None, str | None, bool | None]
_CACHE: dict[_CacheKey, tuple[Detection, float]] = {}
_LOCK = threading.Lock()


def clear_cache() -> None:
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

    def done(mapping: DeviceMapping | None, attempts: list[DetectionAttempt]) -> Detection:
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
    mapping, attempt = try_nvml(spec, device_order)
    attempts.append(attempt)
    if mapping is not None:
        return done(mapping, attempts)

    allowed, why_not = torch_allowed(use_torch)
    if allowed:
        mapping, attempt = try_torch(spec)
        attempts.append(attempt)
        if mapping is not None:
            return done(mapping, attempts)
    else:
        attempts.append(DetectionAttempt(DetectionSource.TORCH, False, why_not, 0.0))

    mapping, attempt = try_smi(spec, device_order)
    attempts.append(attempt)
    return done(mapping, attempts)
