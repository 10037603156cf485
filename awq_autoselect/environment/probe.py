"""Which kernel modules import on this machine: :func:`probe_environment` imports torch and each extension itself,
in this process, keeping the real error of every failed import (diagnosed by :mod:`.diagnose`).

Invariant: probing must not initialize a CUDA context. Importing torch and the extension modules loads
shared libraries but creates no context; nothing here calls into ``torch.cuda``. A failure to import is a result
with a reason, never an exception.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
import types
from dataclasses import dataclass, field

from awq_autoselect._packages import dist_version
from awq_autoselect._quiet import silenced
from awq_autoselect.catalogue import CATALOGUE

from .diagnose import KERNELS_WHEEL, check_imported, classify_import_error, distribution, ipex_mismatch, not_installed
from .records import INT4_MODULE, KNOWN_MODULES, Environment, ModuleState, ModuleStatus, int4_status, running_python

__all__ = ["CATALOGUE_OPS", "probe_environment"]


def __dir__() -> list[str]:
    return __all__


logger = logging.getLogger(__name__)

#: Every aten op a catalogue kernel calls (:attr:`KernelSpec.torch_ops`): the ones the probe looks for.
CATALOGUE_OPS: tuple[str, ...] = tuple(
    sorted({op for spec in CATALOGUE.values() for _, ops in spec.torch_ops for op in ops})
)


@dataclass
class _TorchInfo:
    version: str | None = None
    cuda: str | None = None
    hip: str | None = None
    error: str | None = None
    ops: frozenset[str] = field(default_factory=frozenset)  # the catalogue's aten ops this torch has


def _probe_torch() -> _TorchInfo:
    if importlib.util.find_spec("torch") is None:
        return _TorchInfo(error="torch is not installed")
    try:
        with silenced("torch", "importlib"):
            import torch
    except (Exception, SystemExit) as exc:
        return _TorchInfo(error=f"{type(exc).__name__}: {exc}")
    ops = frozenset(op for op in CATALOGUE_OPS if hasattr(torch.ops.aten, op))
    return _TorchInfo(
        version=str(torch.__version__),
        cuda=getattr(torch.version, "cuda", None),
        hip=getattr(torch.version, "hip", None),
        ops=ops,
    )


def _import(name: str) -> types.ModuleType:
    # Some modules warn on import; a warning is not a failure (and must not become one under -W error). Warnings
    # from a compiled module's initialisation are attributed to the import machinery.
    with silenced(name.split(".", maxsplit=1)[0], "importlib"):
        return importlib.import_module(name)


def _probe_module(
    name: str, torch: _TorchInfo, *, kernels_version: str | None = None, needs_torch: bool = True
) -> ModuleStatus:
    """Probe one importable module (not the int4 pseudo-module)."""
    provided_by = distribution(name)
    version = kernels_version if provided_by == KERNELS_WHEEL else None
    if version is None and provided_by is not None:
        version = dist_version(provided_by)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        spec = None
        logger.debug("find_spec(%r) failed: %s", name, exc)
    if spec is None:
        return not_installed(name)

    if name == "intel_extension_for_pytorch":
        mismatch = ipex_mismatch(version, torch.version)
        if mismatch is not None:
            return ModuleStatus(name, ModuleState.VERSION_MISMATCH, version, mismatch)
    if needs_torch and torch.version is None:
        return ModuleStatus(
            name, ModuleState.NEEDS_TORCH, version, f"{name} is installed but torch does not import ({torch.error})"
        )
    try:
        module = _import(name)
    except (Exception, SystemExit) as exc:
        status = classify_import_error(
            name,
            exc,
            version=version,
            torch_version=torch.version,
            torch_cuda=torch.cuda,
            kernels_version=kernels_version,
        )
        logger.debug("probe %s: %s (%s)", name, status.state.value, exc)
        return status
    if version is None:
        found = getattr(module, "__version__", None)
        version = str(found) if found is not None else None
    return check_imported(name, module, version)


_lock = threading.Lock()
_cache: dict[str, Environment] = {}


def _probe() -> Environment:
    torch = _probe_torch()
    kernels_version = dist_version(KERNELS_WHEEL)
    statuses: dict[str, ModuleStatus] = {}
    for name in KNOWN_MODULES:
        if name == INT4_MODULE:
            statuses[name] = int4_status(torch.version, torch.ops, error=torch.error or "")
        else:
            statuses[name] = _probe_module(name, torch, kernels_version=kernels_version, needs_torch=name != "triton")
    triton_status = statuses["triton"]
    return Environment(
        torch_version=torch.version,
        torch_cuda_version=torch.cuda,
        torch_hip_version=torch.hip,
        python_version=running_python(),
        autoawq_version=dist_version("autoawq"),
        autoawq_kernels_version=kernels_version,
        transformers_version=dist_version("transformers"),
        triton_version=triton_status.version if triton_status.state is not ModuleState.NOT_INSTALLED else None,
        modules=types.MappingProxyType(statuses),
        torch_error=torch.error,
        torch_ops=torch.ops,
    )


def probe_environment(*, refresh: bool = False) -> Environment:
    """Probe this process: torch, library versions, and whether each of :data:`KNOWN_MODULES` imports.

    The result is cached for the process; ``refresh=True`` probes again (e.g. after installing a package).
    Imports torch and the kernel modules (a few seconds the first time) but never initializes CUDA.
    A failure to import is a result with a reason, not an exception.
    """
    with _lock:
        environment = _cache.get("here")
        if environment is None or refresh:
            environment = _cache["here"] = _probe()
            for name in KNOWN_MODULES:
                status = environment.modules[name]
                logger.debug("module %s: %s (%s)", name, status.state.value, status.reason)
        return environment
