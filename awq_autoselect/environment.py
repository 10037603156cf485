"""Which kernel modules import on this machine, and when one does not, why (in words a user can act on).

AutoAWQ hides a failed import: ``awq.utils.module.try_import`` swallows every exception, so a wheel built
for another torch shows up much later as a silent switch to Triton (GEMM) or an error at the first forward
(GEMV, GEMV_fast) or at load (ExLlama). :func:`probe_environment` imports each extension itself, in this
process, and keeps the real error message with a classification:

- ``undefined symbol``: the extension was built against another torch's C++ ABI (the autoawq-kernels 0.0.9
  wheels were built with torch 2.5.1 and CUDA 12.4).
- ``libcudart.so.12: cannot open shared object file``: the extension needs a CUDA 12 runtime that this torch
  does not ship (a CUDA 13 or CPU-only torch).
- IPEX releases are tied to one torch minor version; they are not imported unless the versions match,
  because some releases call ``exit()`` on a mismatch.

Invariant: probing must not initialize a CUDA context. Importing torch and the extension modules loads
shared libraries but creates no context; nothing here calls into ``torch.cuda``.

:meth:`Environment.assume` builds the same value for another machine (``--kernels gemv,gemm``), so that
selection can be planned without that machine's modules.
"""

from __future__ import annotations

import enum
import importlib
import importlib.metadata
import importlib.util
import logging
import re
import sys
import threading
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement, Requirement

from ._packages import dist_version, release, satisfies
from ._quiet import silenced
from .catalogue import CATALOGUE, INT4_OPS, INT4_OPS_CPU, Kernel, parse_kernel
from .errors import InvalidArgumentError

__all__ = [
    "AUTOAWQ_KERNELS_BUILDS",
    "CATALOGUE_OPS",
    "DEFAULT_ASSUMED_CUDA",
    "DEFAULT_ASSUMED_TORCH",
    "INT4_OPS",
    "INT4_OPS_CPU",
    "KNOWN_MODULES",
    "Environment",
    "ModuleState",
    "ModuleStatus",
    "probe_environment",
]


def __dir__() -> list[str]:
    return __all__


logger = logging.getLogger(__name__)

INT4_MODULE = "torch.int4pack"

#: Every module the probe reports on, in report order. ``torch.int4pack`` is a pseudo-module: PyTorch's own
#: int4 weight-only ops (``aten._weight_int4pack_mm`` and friends).
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

#: Every aten op a catalogue kernel calls (:attr:`KernelSpec.torch_ops`): the ones the probe looks for.
CATALOGUE_OPS: tuple[str, ...] = tuple(
    sorted({op for spec in CATALOGUE.values() for _, ops in spec.torch_ops for op in ops})
)

#: autoawq-kernels release -> (torch it was built with, CUDA toolkit). Source: the release workflow of
#: casper-hansen/AutoAWQ_kernels (``torch==2.5.1``, ``cuda: ["12.4.1"]`` for 0.0.9) and the wheel's
#: ``Requires-Dist: torch>=2.5.1``; see shared research notes, autoawq-kernels.md section 4.
AUTOAWQ_KERNELS_BUILDS: Mapping[str, tuple[str, str]] = types.MappingProxyType(
    {"0.0.9": ("2.5.1", "12.4"), "0.0.8": ("2.4.1", "12.4"), "0.0.7": ("2.3.1", "11.8 or 12.1")}
)

#: torch assumed by :meth:`Environment.assume` unless told: the last torch AutoAWQ 0.2.9 was tested with
#: (its README), and the first with PyTorch's CPU int4 ops.
DEFAULT_ASSUMED_TORCH = "2.6.0"
#: CUDA assumed by :meth:`Environment.assume` unless told: what the autoawq-kernels 0.0.9 wheels target.
DEFAULT_ASSUMED_CUDA = "12.4"

_KERNELS_WHEEL = "autoawq-kernels"
_KERNELS_HINT = (
    "the 0.0.9 wheels need torch 2.5.1 built for CUDA 12.4; for any other torch, build "
    "casper-hansen/AutoAWQ_kernels from source against it"
)

# module -> (distribution that provides it, how to get it)
_PROVIDERS: dict[str, tuple[str | None, str]] = {
    "awq_ext": (_KERNELS_WHEEL, f"it comes from autoawq-kernels ({_KERNELS_HINT})"),
    "awq_v2_ext": (_KERNELS_WHEEL, f"it comes from autoawq-kernels ({_KERNELS_HINT})"),
    "exl_ext": (_KERNELS_WHEEL, f"it comes from autoawq-kernels ({_KERNELS_HINT})"),
    "exlv2_ext": (_KERNELS_WHEEL, f"it comes from autoawq-kernels ({_KERNELS_HINT})"),
    "marlin_cuda": (
        None,
        "build it from source: clone IST-DASLab/marlin and run `pip install .` there (needs compute capability "
        ">= 8.0); the package named 'marlin' on the package index is an unrelated project",
    ),
    "intel_extension_for_pytorch": (
        "intel-extension-for-pytorch",
        "pip install the intel-extension-for-pytorch release whose major.minor matches your torch (CPU/XPU only)",
    ),
    "triton": ("triton", "pip install triton (Linux CUDA builds of torch install it)"),
    "flash_attn": ("flash-attn", "pip install 'flash-attn>=2.6' (only AutoAWQ's fused layers need it)"),
}

_FLASH_ATTN_MIN = (2, 6)  # AutoAWQ 0.2.9's fused attention passes softcap=, added in flash-attn 2.6.0
_IPEX_MIN = (2, 4)  # WQLinear_IPEX needs IPEXWeightOnlyQuantizedLinear.from_weight (autoawq[cpu] pins >= 2.4)


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
                statuses[name] = _int4_status(torch_version, assumed_ops, assumed=True)
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
            python_version=_python_version(),
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


def _python_version() -> str:
    return ".".join(str(part) for part in sys.version_info[:3])


def _assumed_ops(torch_version: str) -> frozenset[str]:
    """The aten ops of every catalogue kernel whose torch range ``torch_version`` is in: they ship with torch."""
    ops: set[str] = set()
    for spec in CATALOGUE.values():
        if spec.torch_ops and (spec.torch is None or satisfies(torch_version, spec.torch)):
            ops.update(op for _, names in spec.torch_ops for op in names)
    return frozenset(ops)


def _kernels_build(kernels_version: str | None) -> tuple[str | None, str | None]:
    """(torch, CUDA) that the installed autoawq-kernels was built with, as far as known."""
    torch_built: str | None = None
    cuda_built: str | None = None
    if kernels_version is not None:
        known = AUTOAWQ_KERNELS_BUILDS.get(".".join(map(str, release(kernels_version))))
        if known is not None:
            torch_built, cuda_built = known
        # The wheel requires torch>={the torch it was built with} (KRN:setup.py:15,64).
        try:
            requires = importlib.metadata.requires(_KERNELS_WHEEL) or []
        except Exception:
            requires = []
        for text in requires:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            if requirement.name == "torch":
                floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
                torch_built = floors[0] if floors else torch_built
    return torch_built, cuda_built


def _kernels_fix(kernels_version: str | None, this_torch: str) -> str:
    built_torch, built_cuda = _kernels_build(kernels_version)
    cuda = f" built for CUDA {built_cuda}" if built_cuda else ""
    wheel = f" (this wheel needs torch {built_torch}{cuda})" if built_torch else ""
    return (
        f"reinstall autoawq-kernels built for your torch{wheel}, or build casper-hansen/AutoAWQ_kernels from "
        f"source against {this_torch}"
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


def _int4_status(
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


def _classify_import_error(
    name: str,
    exc: BaseException,
    *,
    version: str | None,
    torch_version: str | None,
    torch_cuda: str | None,
    kernels_version: str | None = None,
) -> ModuleStatus:
    """Turn an import failure of module ``name`` into a state and a reason a user can act on."""
    message = f"{type(exc).__name__}: {exc}"
    provider = _PROVIDERS.get(name, (None, ""))[1]
    from_kernels = _PROVIDERS.get(name, (None, ""))[0] == _KERNELS_WHEEL
    this_torch = f"torch {torch_version}" if torch_version else "this torch"
    if from_kernels:
        label = f"{name} (autoawq-kernels {kernels_version})" if kernels_version else f"{name} (autoawq-kernels)"
    else:
        label = f"{name} {version}" if version else name

    if isinstance(exc, ModuleNotFoundError) and exc.name is not None and exc.name.split(".")[0] == name:
        return ModuleStatus(name, ModuleState.NOT_INSTALLED, None, f"{name} is not installed: {provider}")

    symbol = re.search(r"undefined symbol: (\S+)", str(exc))
    if symbol is not None:
        built_torch, _ = _kernels_build(kernels_version) if from_kernels else (None, None)
        built = f"torch {built_torch}" if built_torch else "another torch"
        if from_kernels:
            fix = _kernels_fix(kernels_version, this_torch)
        else:
            fix = f"reinstall {name} built for {this_torch}, or build it from source"
        return ModuleStatus(
            name,
            ModuleState.WRONG_TORCH_ABI,
            version,
            f"{label} was built for {built}; this is {this_torch} (undefined symbol {symbol.group(1)}): {fix}",
        )

    library = re.search(r"(lib[\w.+-]*?\.so(?:\.[\w.]+)?): cannot open shared object file", str(exc))
    if library is not None:
        lib = library.group(1)
        if lib.startswith(("libcuda.so",)):
            return ModuleStatus(
                name,
                ModuleState.MISSING_CUDA_RUNTIME,
                version,
                f"{label} needs the NVIDIA driver ({lib} not found): this machine has no NVIDIA driver, so "
                "CUDA kernels cannot load here",
            )
        if lib.startswith(("libcu", "libnv", "libcublas", "libcusparse", "libcurand", "libcufft")):
            cuda_major = re.search(r"\.so\.(\d+)", lib)
            needs = f"a CUDA {cuda_major.group(1)} runtime" if cuda_major else "a CUDA runtime"
            ships = f"ships CUDA {torch_cuda}" if torch_cuda else "is a CPU-only build and ships no CUDA runtime"
            if from_kernels:
                _, built_cuda = _kernels_build(kernels_version)
                build = f" (the wheel was built with CUDA {built_cuda})" if built_cuda else ""
                fix = _kernels_fix(kernels_version, this_torch)
            else:
                build = ""
                fix = f"install {name} built for {this_torch}'s CUDA"
            return ModuleStatus(
                name,
                ModuleState.MISSING_CUDA_RUNTIME,
                version,
                f"{label} links {lib}, which is not on this machine: it needs {needs}{build} that {this_torch} "
                f"does not ship ({this_torch} {ships}). Fix: {fix}",
            )
        if lib.startswith(("libc10", "libtorch")):
            return ModuleStatus(
                name,
                ModuleState.WRONG_TORCH_ABI,
                version,
                f"{label} cannot find torch's {lib}: it was built for another torch installation. "
                f"Reinstall {name} for {this_torch}",
            )
        return ModuleStatus(
            name, ModuleState.BROKEN, version, f"{label} needs {lib}, which is not on this machine ({message})"
        )

    if isinstance(exc, SystemExit):
        return ModuleStatus(
            name, ModuleState.BROKEN, version, f"importing {label} called exit({exc.code}): it refuses to run here"
        )
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return ModuleStatus(
            name, ModuleState.BROKEN, version, f"{label} is installed but its dependency {exc.name} is not ({message})"
        )
    return ModuleStatus(name, ModuleState.BROKEN, version, f"importing {label} failed: {message}")


def _import(name: str) -> types.ModuleType:
    # Some modules warn on import; a warning is not a failure (and must not become one under -W error). Warnings
    # from a compiled module's initialisation are attributed to the import machinery.
    with silenced(name.split(".", maxsplit=1)[0], "importlib"):
        return importlib.import_module(name)


def _probe_module(
    name: str, torch: _TorchInfo, *, kernels_version: str | None = None, needs_torch: bool = True
) -> ModuleStatus:
    """Probe one importable module (not the int4 pseudo-module)."""
    distribution = _PROVIDERS.get(name, (None, ""))[0]
    version = kernels_version if distribution == _KERNELS_WHEEL else None
    if version is None and distribution is not None:
        version = dist_version(distribution)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        spec = None
        logger.debug("find_spec(%r) failed: %s", name, exc)
    if spec is None:
        provider = _PROVIDERS.get(name, (None, "install it"))[1]
        return ModuleStatus(name, ModuleState.NOT_INSTALLED, None, f"{name} is not installed: {provider}")

    if name == "intel_extension_for_pytorch":
        mismatch = _ipex_mismatch(version, torch.version)
        if mismatch is not None:
            return ModuleStatus(name, ModuleState.VERSION_MISMATCH, version, mismatch)
    if needs_torch and torch.version is None:
        return ModuleStatus(
            name, ModuleState.NEEDS_TORCH, version, f"{name} is installed but torch does not import ({torch.error})"
        )
    try:
        module = _import(name)
    except (Exception, SystemExit) as exc:
        status = _classify_import_error(
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
    return _check_imported(name, module, version)


#: The functions AutoAWQ 0.2.9 calls on each compiled extension (``awq/modules``). A name that imports without
#: them is not the extension: a source checkout of AutoAWQ_kernels on the path makes ``awq_ext/`` (its C++ sources)
#: import as an empty namespace package.
EXTENSION_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "awq_ext": ("gemm_forward_cuda", "dequantize_weights_cuda", "gemv_forward_cuda"),
    "awq_v2_ext": ("gemm_forward_cuda_prefill", "gemv_forward_cuda_decode"),
    "exl_ext": ("make_q4", "q4_matmul"),
    "exlv2_ext": ("make_q_matrix", "gemm_half_q_half"),
    "marlin_cuda": ("mul",),
}


def _check_imported(name: str, module: types.ModuleType, version: str | None) -> ModuleStatus:
    """Checks that need the imported module: versions and attributes AutoAWQ 0.2.9 relies on."""
    expected = EXTENSION_FUNCTIONS.get(name, ())
    missing = [function for function in expected if not callable(getattr(module, function, None))]
    if missing:
        where = list(getattr(module, "__path__", None) or [getattr(module, "__file__", None) or "?"])
        return ModuleStatus(
            name,
            ModuleState.BROKEN,
            version,
            f"{name} imports from {where[0]} but is not the compiled extension (no {', '.join(missing)}): a source "
            "folder of that name is on sys.path or in the working directory; run from elsewhere, or build and install "
            "the extension",
        )
    if name == "triton":
        try:
            language = importlib.import_module("triton.language")
        except (Exception, SystemExit) as exc:
            return ModuleStatus(
                name, ModuleState.BROKEN, version, f"triton imports but triton.language does not: {exc}"
            )
        if not hasattr(language, "interleave"):
            return ModuleStatus(
                name,
                ModuleState.VERSION_MISMATCH,
                version,
                f"triton {version} has no tl.interleave, which AutoAWQ's Triton GEMM uses: upgrade triton (>= 3.0)",
            )
    if name == "flash_attn" and version is not None and release(version)[:2] < _FLASH_ATTN_MIN:
        return ModuleStatus(
            name,
            ModuleState.VERSION_MISMATCH,
            version,
            f"flash-attn {version} imports, but AutoAWQ's fused layers pass softcap=, added in flash-attn 2.6: "
            "pip install 'flash-attn>=2.6'",
        )
    if name == "intel_extension_for_pytorch":
        try:
            woq = importlib.import_module("intel_extension_for_pytorch.nn.modules.weight_only_quantization")
            usable = hasattr(woq.IPEXWeightOnlyQuantizedLinear, "from_weight")
        except (Exception, SystemExit):
            usable = False
        if not usable:
            return ModuleStatus(
                name,
                ModuleState.VERSION_MISMATCH,
                version,
                f"intel_extension_for_pytorch {version} has no IPEXWeightOnlyQuantizedLinear.from_weight, which "
                "AutoAWQ's IPEX kernel needs: install IPEX >= 2.4 matching your torch",
            )
    return ModuleStatus(name, ModuleState.OK, version, "imports")


def _ipex_mismatch(ipex_version: str | None, torch_version: str | None) -> str | None:
    """Why this IPEX cannot work with this torch, or None. Checked before importing: IPEX may exit()."""
    ipex = release(ipex_version)[:2]
    if not ipex:
        return None
    if ipex < _IPEX_MIN:
        return (
            f"intel_extension_for_pytorch {ipex_version} is older than 2.4, which AutoAWQ's IPEX kernel needs "
            "(IPEXWeightOnlyQuantizedLinear.from_weight): install IPEX >= 2.4 with the matching torch"
        )
    torch_release = release(torch_version)[:2]
    if torch_release and torch_release != ipex:
        wanted = ".".join(str(p) for p in ipex)
        have = ".".join(str(p) for p in torch_release)
        return (
            f"intel_extension_for_pytorch {ipex_version} needs torch {wanted}.*, this is torch {torch_version}: "
            f"install the IPEX release for torch {have}, or torch {wanted} (not imported: IPEX exits the "
            "process on a mismatch)"
        )
    return None


_lock = threading.Lock()
_cache: dict[str, Environment] = {}


def _probe() -> Environment:
    torch = _probe_torch()
    kernels_version = dist_version(_KERNELS_WHEEL)
    statuses: dict[str, ModuleStatus] = {}
    for name in KNOWN_MODULES:
        if name == INT4_MODULE:
            statuses[name] = _int4_status(torch.version, torch.ops, error=torch.error or "")
        else:
            statuses[name] = _probe_module(name, torch, kernels_version=kernels_version, needs_torch=name != "triton")
    triton_status = statuses["triton"]
    return Environment(
        torch_version=torch.version,
        torch_cuda_version=torch.cuda,
        torch_hip_version=torch.hip,
        python_version=_python_version(),
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
