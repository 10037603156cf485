"""The package as a whole: a cheap import, a consistent public surface, metadata that agrees with itself."""

from __future__ import annotations

import importlib.machinery
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import awq_autoselect

ROOT = Path(__file__).resolve().parent.parent


def test_import_pulls_in_no_heavy_module() -> None:
    code = (
        "import json, sys, awq_autoselect; "
        "heavy = ('torch', 'numpy', 'pynvml', 'awq', 'transformers', 'triton', 'safetensors', 'huggingface_hub'); "
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_public_names_resolve_and_are_listed() -> None:
    for name in awq_autoselect.__all__:
        assert getattr(awq_autoselect, name) is not None, name
    assert dir(awq_autoselect) == sorted(awq_autoselect.__all__)  # dir() sorts what __dir__ returns
    for name in ("detect_compute_capability", "select_awq_version", "load_quantized_auto", "benchmark_versions"):
        assert callable(getattr(awq_autoselect, name))
    assert len(awq_autoselect.__all__) <= 16  # the verbs, their results and a few values; the rest in submodules


def test_version_matches_pyproject_and_typed_marker_ships() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # tomllib is 3.11+; the package supports 3.10
    version = re.search(r'^version = "([^"]+)"', text, flags=re.MULTILINE)
    assert version is not None
    assert version.group(1) == awq_autoselect.__version__
    assert '"autoawq==0.2.9"' in text
    assert (ROOT / "awq_autoselect" / "py.typed").is_file()


#: What 0.1.0 exported at the top level; 0.2.0 kept these as deprecated aliases, 0.3.0 removed them.
REMOVED_IN_0_3_0 = [
    "CATALOGUE",
    "KernelSpec",
    "Layout",
    "Regime",
    "CheckpointInfo",
    "QuantConfig",
    "read_checkpoint",
    "convert_checkpoint",
    "Environment",
    "ModuleState",
    "ModuleStatus",
    "probe_environment",
    "DetectionAttempt",
    "DetectionSource",
    "GPUInfo",
    "Attempt",
    "ProbeResult",
    "load_dense_baseline",
    "Candidate",
    "make_synthetic_checkpoint",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConversionError",
    "CorruptCheckpointError",
    "CudaContextPoisonedError",
    "InvalidCapabilityError",
    "InvalidDeviceSpecError",
    "KernelFailedError",
    "NoCompatibleKernelError",
    "NotAwqCheckpointError",
    "UnknownVersionError",
    "UnsupportedModelTypeError",
    "UnsupportedQuantConfigError",
    "VersionUnavailableError",
]


@pytest.mark.parametrize("name", [*REMOVED_IN_0_3_0, "no_such_name"])
def test_names_outside_the_public_surface_do_not_resolve(name: str) -> None:
    assert name not in awq_autoselect.__all__
    with pytest.raises(AttributeError):
        getattr(awq_autoselect, name)


@pytest.mark.parametrize("old", ["benchmark", "cudagraph", "synthetic"])
def test_the_modules_of_0_1_0_that_moved_are_gone(old: str) -> None:
    # PathFinder over the package's own folder: an editable install's finder may map the name to another checkout.
    assert importlib.machinery.PathFinder.find_spec(f"awq_autoselect.{old}", list(awq_autoselect.__path__)) is None
