"""Why a kernel module does not import, or imports and still cannot work, in words a user can act on.

AutoAWQ hides a failed import: ``awq.utils.module.try_import`` swallows every exception, so a wheel built
for another torch shows up much later as a silent switch to Triton (GEMM) or an error at the first forward
(GEMV, GEMV_fast) or at load (ExLlama). The probe imports each extension itself and hands the real error here,
which classifies it and says what to do:

- ``undefined symbol``: the extension was built against another torch's C++ ABI (the autoawq-kernels 0.0.9
  wheels were built with torch 2.5.1 and CUDA 12.4).
- ``libcudart.so.12: cannot open shared object file``: the extension needs a CUDA 12 runtime that this torch
  does not ship (a CUDA 13 or CPU-only torch).
- IPEX releases are tied to one torch minor version; :func:`ipex_mismatch` says so before any import, because
  some releases call ``exit()`` on a mismatch.
- A module that imports but lacks what AutoAWQ 0.2.9 calls (:func:`check_imported`): a source folder shadowing
  the compiled extension, a Triton without ``tl.interleave``, an old flash-attn or IPEX.

Invariant: diagnosing reads error messages, package metadata and the attributes of modules already imported;
it imports nothing but submodules of a module that did import, and never torch.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import types
from collections.abc import Mapping

from packaging.requirements import InvalidRequirement, Requirement

from awq_autoselect._packages import release

from .records import ModuleState, ModuleStatus

__all__ = [
    "AUTOAWQ_KERNELS_BUILDS",
    "EXTENSION_FUNCTIONS",
    "KERNELS_WHEEL",
    "check_imported",
    "classify_import_error",
    "distribution",
    "ipex_mismatch",
    "not_installed",
]


def __dir__() -> list[str]:
    return __all__


#: autoawq-kernels release -> (torch it was built with, CUDA toolkit). Source: the release workflow of
#: casper-hansen/AutoAWQ_kernels (``torch==2.5.1``, ``cuda: ["12.4.1"]`` for 0.0.9) and the wheel's
#: ``Requires-Dist: torch>=2.5.1``; see shared research notes, autoawq-kernels.md section 4.
AUTOAWQ_KERNELS_BUILDS: Mapping[str, tuple[str, str]] = types.MappingProxyType(
    {"0.0.9": ("2.5.1", "12.4"), "0.0.8": ("2.4.1", "12.4"), "0.0.7": ("2.3.1", "11.8 or 12.1")}
)

#: The distribution of the AutoAWQ extensions (``awq_ext``, ``awq_v2_ext``, ``exl_ext``, ``exlv2_ext``).
KERNELS_WHEEL = "autoawq-kernels"
_KERNELS_HINT = (
    "the 0.0.9 wheels need torch 2.5.1 built for CUDA 12.4; for any other torch, build "
    "casper-hansen/AutoAWQ_kernels from source against it"
)

# module -> (distribution that provides it, how to get it)
_PROVIDERS: dict[str, tuple[str | None, str]] = {
    "awq_ext": (KERNELS_WHEEL, f"it comes from autoawq-kernels ({_KERNELS_HINT})"),
    "awq_v2_ext": (KERNELS_WHEEL, f"it comes from autoawq-kernels ({_KERNELS_HINT})"),
    "exl_ext": (KERNELS_WHEEL, f"it comes from autoawq-kernels ({_KERNELS_HINT})"),
    "exlv2_ext": (KERNELS_WHEEL, f"it comes from autoawq-kernels ({_KERNELS_HINT})"),
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


def distribution(name: str) -> str | None:
    """The distribution that provides module ``name`` (whose version is its version), or ``None`` when unknown."""
    return _PROVIDERS.get(name, (None, ""))[0]


def not_installed(name: str) -> ModuleStatus:
    """The status of module ``name`` when it is not installed, with how to get it."""
    provider = _PROVIDERS.get(name, (None, "install it"))[1]
    return ModuleStatus(name, ModuleState.NOT_INSTALLED, None, f"{name} is not installed: {provider}")


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
            requires = importlib.metadata.requires(KERNELS_WHEEL) or []
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


def classify_import_error(
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
    from_kernels = _PROVIDERS.get(name, (None, ""))[0] == KERNELS_WHEEL
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


def check_imported(name: str, module: types.ModuleType, version: str | None) -> ModuleStatus:
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


def ipex_mismatch(ipex_version: str | None, torch_version: str | None) -> str | None:
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
