"""What a probe of a machine finds, as records: :class:`ModuleStatus` (one kernel module: whether it imports, and
if not the class of reason, :class:`ModuleState`) and :class:`Environment` (torch, library versions, every module
of :data:`KNOWN_MODULES`), each with a text and a JSON form.

:meth:`Environment.assume` builds the same value for another machine (``--kernels gemv,gemm``), so that
selection can be planned without that machine's modules; :func:`~awq_autoselect.environment.probe_environment`
builds it for this one. Imports nothing heavy.
"""

from __future__ import annotations

import enum
import sys
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from awq_autoselect._packages import satisfies
from awq_autoselect.catalogue import CATALOGUE, Kernel, parse_kernel
from awq_autoselect.errors import InvalidArgumentError

__all__ = [
    "DEFAULT_ASSUMED_CUDA",
    "DEFAULT_ASSUMED_TORCH",
    "INT4_MODULE",
    "KNOWN_MODULES",
    "Environment",
    "ModuleState",
    "ModuleStatus",
    "int4_status",
    "running_python",
]


def __dir__() -> list[str]:
    return __all__


#: The pseudo-module of PyTorch's own int4 weight-only ops (``aten._weight_int4pack_mm`` and friends).
INT4_MODULE = "torch.int4pack"

#: Every module the probe reports on, in report order (:data:`INT4_MODULE` is a pseudo-module).
KNOWN_MODULES: tuple[str, ...] = (
    "awq_ext",
    "awq_v2_ext",
    "exl_ext",
    "exlv2_ext",
    "marlin_cuda",
    "intel_extension_for_pytorch",
    "triton",
    "flash_attn",
    INT4_MODULE,
)

#: torch assumed by :meth:`Environment.assume` unless told: the last torch AutoAWQ 0.2.9 was tested with
#: (its README), and the first with PyTorch's CPU int4 ops.
DEFAULT_ASSUMED_TORCH = "2.6.0"
#: CUDA assumed by :meth:`Environment.assume` unless told: what the autoawq-kernels 0.0.9 wheels target.
DEFAULT_ASSUMED_CUDA = "12.4"


class ModuleState(str, enum.Enum):
    """Whether a kernel module imports here, and if not, the class of reason."""

    OK = "ok"
    NOT_INSTALLED = "not_installed"
    WRONG_TORCH_ABI = "wrong_torch_abi"  # undefined symbol: built against another torch
    MISSING_CUDA_RUNTIME = "missing_cuda_runtime"  # a CUDA library it links (libcudart.so.12, ...) is absent
    VERSION_MISMATCH = "version_mismatch"  # installed, but a version that cannot work with this torch/AutoAWQ
    NEEDS_TORCH = "needs_torch"  # installed, but torch itself does not import
    BROKEN = "broken"  # any other import error

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ModuleStatus:
    """One module's import result.

    ``features`` lists optional parts found: for ``torch.int4pack``, the aten ops present.
    """

    name: str
    state: ModuleState
    version: str | None
    reason: str
    features: frozenset[str] = frozenset()

    @property
    def ok(self) -> bool:
        """True when the module imports and is usable."""
        return self.state is ModuleState.OK

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "state": self.state.value,
            "version": self.version,
            "reason": self.reason,
            "features": sorted(self.features),
        }


@dataclass(frozen=True)
class Environment:
    """The software side of a machine: torch, library versions, and which kernel modules import.

    Built by :func:`probe_environment` (this machine) or :meth:`assume` (a machine being planned for).
    """

    torch_version: str | None
    torch_cuda_version: str | None
    torch_hip_version: str | None
    python_version: str
    autoawq_version: str | None
    autoawq_kernels_version: str | None
    transformers_version: str | None
    triton_version: str | None
    modules: Mapping[str, ModuleStatus]
    torch_error: str | None = None  # why torch does not import, when it does not
    torch_ops: frozenset[str] = frozenset()  # the aten ops of the catalogue's kernels that this torch has
    assumed: bool = False

    def module(self, name: str) -> ModuleStatus:
        """The status of one module of :data:`KNOWN_MODULES`.

        Raises:
            InvalidArgumentError: ``name`` is not one of :data:`KNOWN_MODULES`.
        """
        try:
            return self.modules[name]
        except KeyError:
            raise InvalidArgumentError(
                f"module {name!r} is not probed: expected one of {', '.join(KNOWN_MODULES)}"
            ) from None

    def available(self, name: str) -> bool:
        """Whether module ``name`` imports and is usable here.

        Raises:
            InvalidArgumentError: ``name`` is not one of :data:`KNOWN_MODULES`.
        """
        return self.module(name).ok

    def supports_device(self, device_type: str) -> tuple[bool, str]:
        """Whether this torch can put tensors on ``device_type`` (``cuda``, ``cpu``, ...), and if not, why.

        For ``xpu`` and ``mps`` the build is not inspected (that would need the device runtime); only that
        torch imports.
        """
        if self.torch_version is None:
            why = f" ({self.torch_error})" if self.torch_error else ""
            return False, f"torch does not import here{why}: install torch"
        if device_type == "cuda" and self.torch_cuda_version is None and self.torch_hip_version is None:
            return False, (
                f"torch {self.torch_version} is a CPU-only build: install a CUDA build of torch to use the GPU"
            )
        return True, ""

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (module statuses in :data:`KNOWN_MODULES` order)."""
        return {
            "torch_version": self.torch_version,
            "torch_cuda_version": self.torch_cuda_version,
            "torch_hip_version": self.torch_hip_version,
            "torch_error": self.torch_error,
            "python_version": self.python_version,
            "autoawq_version": self.autoawq_version,
            "autoawq_kernels_version": self.autoawq_kernels_version,
            "transformers_version": self.transformers_version,
            "triton_version": self.triton_version,
            "assumed": self.assumed,
            "modules": {name: self.modules[name].to_dict() for name in _ordered(self.modules)},
        }

    def summary(self) -> str:
        """Human-readable text, one line per item: versions first, then each module's state and reason."""
        if self.torch_version is None:
            torch_line = f"torch: not importable ({self.torch_error or 'not installed'})"
        else:
            backend = (
                f"CUDA {self.torch_cuda_version}"
                if self.torch_cuda_version
                else f"ROCm {self.torch_hip_version}"
                if self.torch_hip_version
                else "CPU-only"
            )
            torch_line = f"torch: {self.torch_version} ({backend})"
        lines = [
            "environment: assumed (planning for another machine)" if self.assumed else "environment: probed here",
            torch_line,
            f"python: {self.python_version}",
            f"autoawq: {self.autoawq_version or '-'}; autoawq-kernels: {self.autoawq_kernels_version or '-'}; "
            f"transformers: {self.transformers_version or '-'}; triton: {self.triton_version or '-'}",
        ]
        width = max(len(name) for name in KNOWN_MODULES)
        for name in _ordered(self.modules):
            status = self.modules[name]
            version = f" {status.version}" if status.version and status.ok else ""
            lines.append(f"  {name:<{width}}  {status.state.value}{version}: {status.reason}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    @classmethod
    def assume(
        cls,
        kernels: Iterable[str | Kernel] | None = None,
        *,
        modules: Iterable[str] = (),
        torch_version: str = DEFAULT_ASSUMED_TORCH,
        torch_cuda_version: str | None = DEFAULT_ASSUMED_CUDA,
    ) -> Environment:
        """An environment for planning another machine: the named kernels' modules import, nothing else does.

        ``kernels=None`` assumes every kernel of the catalogue installed; ``kernels=()`` assumes none.
        Naming one AutoAWQ kernel assumes its extension, which may serve others too (``awq_ext`` runs both
        ``gemm`` and ``gemv``). PyTorch's int4 ops are part of torch: they are assumed present when
        ``torch_version`` is 2.6 or newer, whatever ``kernels`` says. ``modules`` adds module names
        (e.g. ``"flash_attn"``). ``torch_cuda_version=None`` plans for a CPU-only torch.

        Raises:
            UnknownVersionError: a kernel name is not in the catalogue.
            InvalidArgumentError: a module name is not one of :data:`KNOWN_MODULES`.
        """
        chosen = list(CATALOGUE) if kernels is None else [parse_kernel(k) for k in kernels]
        wanted = {CATALOGUE[kernel].extension for kernel in chosen} - {None}
        assumed_ops = _assumed_ops(torch_version)
        for name in modules:
            if name not in KNOWN_MODULES:
                raise InvalidArgumentError(
                    f"module {name!r} cannot be assumed: expected one of {', '.join(KNOWN_MODULES)}"
                )
            wanted.add(name)
        statuses: dict[str, ModuleStatus] = {}
        for name in KNOWN_MODULES:
            if name == INT4_MODULE:
                statuses[name] = int4_status(torch_version, assumed_ops, assumed=True)
            elif name in wanted:
                statuses[name] = ModuleStatus(name, ModuleState.OK, None, "assumed installed")
            else:
                statuses[name] = ModuleStatus(
                    name,
                    ModuleState.NOT_INSTALLED,
                    None,
                    "not assumed installed (name it, or a kernel that uses it, to plan with it)",
                )
        return cls(
            torch_version=torch_version,
            torch_cuda_version=torch_cuda_version,
            torch_hip_version=None,
            python_version=running_python(),
            autoawq_version=None,
            autoawq_kernels_version=None,
            transformers_version=None,
            triton_version=None,
            modules=types.MappingProxyType(statuses),
            torch_ops=assumed_ops,
            assumed=True,
        )


def _ordered(modules: Mapping[str, ModuleStatus]) -> list[str]:
    known = [name for name in KNOWN_MODULES if name in modules]
    return known + sorted(name for name in modules if name not in KNOWN_MODULES)


def running_python() -> str:
    """This Python's version, ``3.12.4``."""
    return ".".join(str(part) for part in sys.version_info[:3])


def _assumed_ops(torch_version: str) -> frozenset[str]:
    """The aten ops of every catalogue kernel whose torch range ``torch_version`` is in: they ship with torch."""
    ops: set[str] = set()
    for spec in CATALOGUE.values():
        if spec.torch_ops and (spec.torch is None or satisfies(torch_version, spec.torch)):
            ops.update(op for _, names in spec.torch_ops for op in names)
    return frozenset(ops)


def int4_status(
    torch_version: str | None, ops: frozenset[str], *, assumed: bool = False, error: str = ""
) -> ModuleStatus:
    """The ``torch.int4pack`` pseudo-module: whether this torch has tinygemm's ops (CUDA, and the CPU twins)."""
    if torch_version is None:
        return ModuleStatus(INT4_MODULE, ModuleState.NEEDS_TORCH, None, f"torch does not import: {error}")
    spec = CATALOGUE[Kernel.TORCH_INT4]
    cuda_ops, cpu_ops = spec.ops_for("cuda"), spec.ops_for("cpu")
    present = frozenset(op for op in (*cuda_ops, *cpu_ops) if op in ops)
    missing = [op for op in (*cuda_ops, *cpu_ops) if op not in ops]
    needed = f"torch {spec.torch}" if spec.torch is not None else "a newer torch"
    if all(op in ops for op in cuda_ops):
        reason = (
            f"assumed: ships with torch {torch_version}"
            if assumed
            else "aten ops present: " + ", ".join(sorted(present))
        )
        if missing:
            reason += f"; missing: {', '.join(missing)} (CPU variants need {needed})"
        return ModuleStatus(INT4_MODULE, ModuleState.OK, torch_version, reason, present)
    return ModuleStatus(
        INT4_MODULE,
        ModuleState.VERSION_MISMATCH,
        torch_version,
        f"torch {torch_version} lacks aten.{', aten.'.join(missing)}: its int4 ops take another weight format; "
        f"upgrade to {needed}",
        present,
    )
