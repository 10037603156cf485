"""Tests for awq_autoselect.environment (records, diagnose, probe): the real probe of this machine, real import
failures, planning."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from awq_autoselect.catalogue import CATALOGUE, Kernel
from awq_autoselect.environment import (
    INT4_OPS,
    INT4_OPS_CPU,
    KNOWN_MODULES,
    Environment,
    ModuleState,
    ModuleStatus,
    probe_environment,
)
from awq_autoselect.environment.diagnose import EXTENSION_FUNCTIONS, classify_import_error
from awq_autoselect.environment.probe import _probe_module, _probe_torch, _TorchInfo
from awq_autoselect.errors import AwqAutoselectError, InvalidArgumentError, UnknownVersionError

# --- the real probe of this machine -----------------------------------------------------------------------


def test_probe_reports_this_torch() -> None:
    import torch

    env = probe_environment()
    assert env.torch_version == str(torch.__version__)
    assert env.torch_cuda_version == torch.version.cuda
    assert env.torch_hip_version == torch.version.hip
    assert env.torch_error is None
    assert env.assumed is False
    assert env.autoawq_version == importlib.metadata.version("autoawq")
    assert env.transformers_version == importlib.metadata.version("transformers")
    assert tuple(env.modules) == KNOWN_MODULES


def test_probe_awq_ext_not_installed_names_the_package() -> None:
    if importlib.util.find_spec("awq_ext") is not None:
        pytest.skip("awq_ext is installed here; the not-installed message cannot be observed")
    status = probe_environment().module("awq_ext")
    assert status.state is ModuleState.NOT_INSTALLED
    assert not status.ok
    assert status.version is None
    # The message a user sees on this machine: which package provides it and which torch its wheels need.
    assert status.reason == (
        "awq_ext is not installed: it comes from autoawq-kernels (the 0.0.9 wheels need torch 2.5.1 built for "
        "CUDA 12.4; for any other torch, build casper-hansen/AutoAWQ_kernels from source against it)"
    )


@pytest.mark.parametrize(
    ("module", "package_words"),
    [
        ("awq_v2_ext", "autoawq-kernels"),
        ("exl_ext", "autoawq-kernels"),
        ("exlv2_ext", "autoawq-kernels"),
        ("marlin_cuda", "IST-DASLab/marlin"),
        ("intel_extension_for_pytorch", "intel-extension-for-pytorch"),
        ("flash_attn", "flash-attn>=2.6"),
    ],
)
def test_probe_not_installed_modules_say_where_they_come_from(module: str, package_words: str) -> None:
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    status = probe_environment().module(module)
    assert status.state is ModuleState.NOT_INSTALLED
    assert package_words in status.reason


def test_probe_triton_installed() -> None:
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed here")
    env = probe_environment()
    status = env.module("triton")
    assert status.state is ModuleState.OK, status.reason
    assert status.version == importlib.metadata.version("triton")
    assert env.triton_version == status.version
    assert env.available("triton")


def test_probe_torch_int4_ops_match_aten() -> None:
    import torch

    status = probe_environment().module("torch.int4pack")
    present = {op for op in INT4_OPS + INT4_OPS_CPU if hasattr(torch.ops.aten, op)}
    assert status.features == present
    assert status.ok is all(op in present for op in INT4_OPS)
    for op in present:
        assert op in status.reason


def test_probe_is_cached_and_refreshable() -> None:
    first = probe_environment()
    assert probe_environment() is first
    again = probe_environment(refresh=True)
    assert again is not first
    assert again == first
    assert probe_environment() is again


def test_probe_does_not_initialize_cuda() -> None:
    import torch

    probe_environment(refresh=True)
    assert not torch.cuda.is_initialized()  # type: ignore[no-untyped-call]


def test_importing_the_module_does_not_import_torch() -> None:
    code = "import sys, awq_autoselect.environment; sys.exit(int(any(m in sys.modules for m in ('torch', 'awq'))))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_to_dict_and_summary() -> None:
    env = probe_environment()
    data = env.to_dict()
    assert json.loads(json.dumps(data)) == data
    modules = data["modules"]
    assert isinstance(modules, dict)
    assert list(modules) == list(KNOWN_MODULES)
    text = env.summary()
    assert str(env) == text
    assert text.splitlines()[0] == "environment: probed here"
    for name in KNOWN_MODULES:
        assert name in text


# --- real import failures from real shared objects --------------------------------------------------------

_STUB_EXTENSION = """
extern void {symbol}(void);
void *awq_autoselect_test_reference(void) {{ return (void *)&{symbol}; }}
"""


def _compile(tmp_path: Path, name: str, *, symbol: str, library_dir: Path | None = None) -> Path:
    """A real ELF shared object that references ``symbol``; the dynamic loader fails exactly as for a real wheel."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler: cannot build a shared object to import")
    source = tmp_path / f"{name}.c"
    source.write_text(_STUB_EXTENSION.format(symbol=symbol))
    target = tmp_path / "site" / f"{name}.so"
    target.parent.mkdir(exist_ok=True)
    command = [gcc, "-shared", "-fPIC", "-o", str(target), str(source)]
    if library_dir is not None:
        command += [f"-L{library_dir}", "-Wl,--no-as-needed", "-l:libcudart.so.12"]
    subprocess.run(command, check=True, capture_output=True)
    return target


def _torch_info() -> _TorchInfo:
    info = _probe_torch()
    assert info.version is not None
    return info


def test_real_undefined_symbol_is_wrong_torch_abi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The symbol awq_ext 0.0.9 misses under torch 2.11 (seen on the lent H200).
    symbol = "_ZN3c104cuda29c10_cuda_check_implementationEiPKcS2_ib"
    ext = _compile(tmp_path, "awq_ext", symbol=symbol)
    monkeypatch.syspath_prepend(str(ext.parent))
    torch = _torch_info()
    status = _probe_module("awq_ext", torch, kernels_version="0.0.9")
    assert status.state is ModuleState.WRONG_TORCH_ABI
    assert f"undefined symbol {symbol}" in status.reason
    assert f"this is torch {torch.version}" in status.reason
    assert "built for torch 2.5.1" in status.reason
    assert "reinstall autoawq-kernels built for your torch (this wheel needs torch 2.5.1" in status.reason
    assert "or build casper-hansen/AutoAWQ_kernels from source against torch" in status.reason
    assert "awq_ext" not in sys.modules


def test_real_missing_cuda_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler: cannot build a shared object to import")
    # Link against a libcudart.so.12 that exists at build time only, as the wheel does on a machine without one.
    libdir = tmp_path / "cuda12"
    libdir.mkdir()
    (libdir / "cudart.c").write_text("void cudaStubForTest(void) {}\n")
    library = libdir / "libcudart.so.12"
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-Wl,-soname,libcudart.so.12", "-o", str(library), str(libdir / "cudart.c")],
        check=True,
        capture_output=True,
    )
    ext = _compile(tmp_path, "awq_v2_ext", symbol="cudaStubForTest", library_dir=libdir)
    library.unlink()
    monkeypatch.syspath_prepend(str(ext.parent))
    torch = _torch_info()
    status = _probe_module("awq_v2_ext", torch, kernels_version="0.0.9")
    assert status.state is ModuleState.MISSING_CUDA_RUNTIME
    assert "libcudart.so.12" in status.reason
    assert "needs a CUDA 12 runtime" in status.reason
    assert "built with CUDA 12.4" in status.reason
    expected_ships = f"ships CUDA {torch.cuda}" if torch.cuda else "CPU-only build"
    assert expected_ships in status.reason


# Messages recorded on real machines (shared research notes: h200-measurements.md, cpu-feasibility.md).
_H200_UNDEFINED = (
    "/site/awq_ext.cpython-312-x86_64-linux-gnu.so: undefined symbol: "
    "_ZN3c104cuda29c10_cuda_check_implementationEiPKcS2_ib"
)
_H200_LIBCUDART = "libcudart.so.12: cannot open shared object file: No such file or directory"
_IPEX_28_EXIT = "module 'os' has no attribute 'exit'"


@pytest.mark.parametrize(
    ("exc", "cuda", "state", "words"),
    [
        (ImportError(_H200_UNDEFINED), "13.0", ModuleState.WRONG_TORCH_ABI, ["built for torch 2.5.1", "2.11.0"]),
        (ImportError(_H200_LIBCUDART), "13.0", ModuleState.MISSING_CUDA_RUNTIME, ["CUDA 12 runtime", "CUDA 13.0"]),
        (ImportError(_H200_LIBCUDART), None, ModuleState.MISSING_CUDA_RUNTIME, ["CPU-only build"]),
        (
            ImportError("libcuda.so.1: cannot open shared object file: No such file or directory"),
            "13.0",
            ModuleState.MISSING_CUDA_RUNTIME,
            ["NVIDIA driver"],
        ),
        (
            ImportError("libc10.so: cannot open shared object file: No such file or directory"),
            "13.0",
            ModuleState.WRONG_TORCH_ABI,
            ["another torch"],
        ),
        (
            ImportError("libgomp.so.1: cannot open shared object file: No such file or directory"),
            "13.0",
            ModuleState.BROKEN,
            ["libgomp.so.1"],
        ),
        (
            ModuleNotFoundError("No module named 'awq_ext'", name="awq_ext"),
            "13.0",
            ModuleState.NOT_INSTALLED,
            ["autoawq-kernels"],
        ),
        (ModuleNotFoundError("No module named 'einops'", name="einops"), "13.0", ModuleState.BROKEN, ["einops"]),
        (AttributeError(_IPEX_28_EXIT), "13.0", ModuleState.BROKEN, ["AttributeError", "os"]),
        (SystemExit(127), "13.0", ModuleState.BROKEN, ["exit(127)"]),
    ],
)
def test_classify_recorded_messages(exc: BaseException, cuda: str | None, state: ModuleState, words: list[str]) -> None:
    status = classify_import_error(
        "awq_ext", exc, version="0.0.9", torch_version="2.11.0+cu130", torch_cuda=cuda, kernels_version="0.0.9"
    )
    assert status.state is state
    for word in words:
        assert word in status.reason


# --- IPEX and flash-attn: version rules (stand-in packages: neither can exist with this CPU torch) ----------


@pytest.fixture(autouse=True)
def _forget_stand_ins() -> Iterator[None]:
    """Stand-in packages imported by a test must not stay in sys.modules for the next one."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.split(".")[0] in {"flash_attn", "intel_extension_for_pytorch"}:
            del sys.modules[name]


def _stand_in(root: Path, module: str, dist: str, version: str, body: str) -> None:
    """An installed-looking package: ``module/__init__.py`` with ``body`` and a dist-info for ``dist``."""
    package = root / module
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(body))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(module + "\n")


def test_ipex_for_another_torch_is_not_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "imported"
    _stand_in(
        tmp_path / "site",
        "intel_extension_for_pytorch",
        "intel-extension-for-pytorch",
        "2.8.0+cpu",
        f"open({str(marker)!r}, 'w').close()\nraise SystemExit(127)\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    torch = _TorchInfo(version="2.13.0+cpu")
    status = _probe_module("intel_extension_for_pytorch", torch)
    assert status.state is ModuleState.VERSION_MISMATCH
    assert status.version == "2.8.0+cpu"
    assert "needs torch 2.8.*" in status.reason
    assert "this is torch 2.13.0+cpu" in status.reason
    assert not marker.exists(), "a mismatched IPEX must not be imported"


def test_ipex_that_exits_on_import_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    release = ".".join(str(torch.__version__).split("+")[0].split(".")[:2])
    _stand_in(
        tmp_path / "site",
        "intel_extension_for_pytorch",
        "intel-extension-for-pytorch",
        f"{release}.0",
        "import sys\nsys.exit(127)\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    status = _probe_module("intel_extension_for_pytorch", _torch_info())
    assert status.state is ModuleState.BROKEN
    assert "exit(127)" in status.reason


def test_old_ipex_is_a_version_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stand_in(tmp_path / "site", "intel_extension_for_pytorch", "intel-extension-for-pytorch", "2.3.0", "")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    status = _probe_module("intel_extension_for_pytorch", _TorchInfo(version="2.3.0"))
    assert status.state is ModuleState.VERSION_MISMATCH
    assert "older than 2.4" in status.reason


@pytest.mark.parametrize(("version", "state"), [("2.5.9", ModuleState.VERSION_MISMATCH), ("2.6.3", ModuleState.OK)])
def test_flash_attn_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str, state: ModuleState) -> None:
    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("a real flash_attn is installed here")
    _stand_in(tmp_path / "site", "flash_attn", "flash-attn", version, f"__version__ = {version!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    status = _probe_module("flash_attn", _torch_info())
    assert status.state is state
    assert status.version == version
    if state is ModuleState.VERSION_MISMATCH:
        assert "softcap" in status.reason


def test_installed_module_without_torch_needs_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stand_in(tmp_path / "site", "flash_attn", "flash-attn", "2.7.0", "raise AssertionError('must not import')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    status = _probe_module("flash_attn", _TorchInfo(error="ImportError: libtorch_cpu.so: cannot open"))
    assert status.state is ModuleState.NEEDS_TORCH
    assert "torch does not import" in status.reason


# --- planning: Environment.assume --------------------------------------------------------------------------


def test_assume_named_kernels_only() -> None:
    env = Environment.assume(["gemv", "gemm"])
    assert env.assumed
    assert env.available("awq_ext")
    for name in ("awq_v2_ext", "exl_ext", "exlv2_ext", "marlin_cuda", "intel_extension_for_pytorch", "triton"):
        status = env.module(name)
        assert status.state is ModuleState.NOT_INSTALLED
        assert status.reason.startswith("not assumed installed")
    assert env.torch_version == "2.6.0"
    assert env.torch_cuda_version == "12.4"


def test_assume_everything() -> None:
    env = Environment.assume()
    for spec in CATALOGUE.values():
        if spec.extension is not None:
            assert env.available(spec.extension), spec.kernel
    assert env.available("torch.int4pack")
    assert not env.available("flash_attn")
    assert Environment.assume(modules=["flash_attn"]).available("flash_attn")


def test_assume_kernel_enum_and_aliases() -> None:
    env = Environment.assume([Kernel.GEMV_FAST, "triton", "ExLlama-V2"])
    assert env.available("awq_v2_ext")
    assert env.available("triton")
    assert env.available("exlv2_ext")
    assert not env.available("awq_ext")


@pytest.mark.parametrize(
    ("torch_version", "named", "ok"),
    [("2.5.1", False, False), ("2.6.0", False, True), ("2.11.0+cu130", False, True), ("2.5.1", True, False)],
)
def test_assume_int4_follows_torch_version(torch_version: str, named: bool, ok: bool) -> None:
    env = Environment.assume(["torch_int4"] if named else [], torch_version=torch_version)
    status = env.module("torch.int4pack")
    assert status.ok is ok
    assert (status.features == frozenset(INT4_OPS + INT4_OPS_CPU)) is ok


def test_assume_rejects_unknown_names() -> None:
    with pytest.raises(UnknownVersionError, match="gemx"):
        Environment.assume(["gemx"])
    with pytest.raises(InvalidArgumentError, match="cuda_ext"):
        Environment.assume([], modules=["cuda_ext"])


def test_module_lookup_errors() -> None:
    env = Environment.assume([])
    with pytest.raises(InvalidArgumentError) as caught:
        env.module("awq")
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, AwqAutoselectError)
    assert str(caught.value).startswith("module 'awq' is not probed: expected one of awq_ext")


@pytest.mark.parametrize(
    ("torch_version", "cuda", "device", "ok", "words"),
    [
        ("2.13.0+cpu", None, "cuda", False, "CPU-only build"),
        ("2.13.0+cpu", None, "cpu", True, ""),
        ("2.11.0+cu130", "13.0", "cuda", True, ""),
    ],
)
def test_supports_device(torch_version: str, cuda: str | None, device: str, ok: bool, words: str) -> None:
    env = Environment.assume([], torch_version=torch_version, torch_cuda_version=cuda)
    supported, why = env.supports_device(device)
    assert supported is ok
    assert words in why


def test_supports_device_without_torch() -> None:
    env = Environment(
        torch_version=None,
        torch_cuda_version=None,
        torch_hip_version=None,
        python_version="3.11.7",
        autoawq_version=None,
        autoawq_kernels_version=None,
        transformers_version=None,
        triton_version=None,
        modules={},
        torch_error="torch is not installed",
    )
    ok, why = env.supports_device("cpu")
    assert not ok
    assert "torch is not installed" in why


def test_module_status_dict() -> None:
    status = ModuleStatus("torch.int4pack", ModuleState.OK, "2.13.0", "present", frozenset({"b", "a"}))
    assert status.to_dict() == {
        "name": "torch.int4pack",
        "state": "ok",
        "version": "2.13.0",
        "reason": "present",
        "features": ["a", "b"],
    }
    assert str(ModuleState.WRONG_TORCH_ABI) == "wrong_torch_abi"


# --- on the lent GPU ---------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_gpu_probe_without_cuda_context() -> None:
    import subprocess
    import sys

    # In a fresh process: other GPU tests in this one have initialized CUDA already.
    code = (
        "import torch; from awq_autoselect.environment import probe_environment; probe_environment(); "
        "print(torch.cuda.is_initialized())"
    )
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert fresh.stdout.strip().splitlines()[-1] == "False"
    env = probe_environment(refresh=True)
    assert env.torch_cuda_version is not None
    awq_ext = env.module("awq_ext")
    # On a current torch the released autoawq-kernels cannot import; the reason must say why.
    if not awq_ext.ok:
        assert awq_ext.state in {
            ModuleState.NOT_INSTALLED,
            ModuleState.MISSING_CUDA_RUNTIME,
            ModuleState.WRONG_TORCH_ABI,
        }
        assert "autoawq-kernels" in awq_ext.reason or "AutoAWQ_kernels" in awq_ext.reason
    assert env.available("triton")
    assert env.available("torch.int4pack")


def test_a_source_folder_named_like_an_extension_is_not_the_extension(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A source checkout of AutoAWQ_kernels: awq_ext/ holds C++ sources and imports as a namespace package.
    sources = tmp_path / "awq_ext"
    sources.mkdir()
    (sources / "pybind_awq.cpp").write_text("// sources, not a module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "awq_ext", raising=False)
    status = _probe_module("awq_ext", _torch_info())
    assert status.state is ModuleState.BROKEN
    assert status.reason.startswith(f"awq_ext imports from {sources} but is not the compiled extension")
    assert "no gemm_forward_cuda, dequantize_weights_cuda, gemv_forward_cuda" in status.reason
    sys.modules.pop("awq_ext", None)


def test_a_module_with_the_functions_autoawq_calls_passes_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    functions = EXTENSION_FUNCTIONS["exlv2_ext"]
    (tmp_path / "exlv2_ext.py").write_text("".join(f"def {name}(*args):\n    return None\n" for name in functions))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "exlv2_ext", raising=False)
    assert _probe_module("exlv2_ext", _torch_info()).state is ModuleState.OK
    sys.modules.pop("exlv2_ext", None)
    (tmp_path / "exlv2_ext.py").write_text(f"def {functions[0]}(*args):\n    return None\n")
    status = _probe_module("exlv2_ext", _torch_info())
    assert status.state is ModuleState.BROKEN
    assert f"no {', '.join(functions[1:])}" in status.reason
    sys.modules.pop("exlv2_ext", None)
