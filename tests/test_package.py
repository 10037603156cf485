"""The package as a whole: a cheap import, a consistent public surface, metadata that agrees with itself."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import warnings
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


@pytest.mark.parametrize("name", sorted(awq_autoselect.DEPRECATED_NAMES))
def test_names_removed_from_the_top_level_still_resolve_with_a_warning(name: str) -> None:
    with pytest.warns(DeprecationWarning, match=f"awq_autoselect.{name} is deprecated"):
        value = getattr(awq_autoselect, name)
    module = importlib.import_module(f"awq_autoselect.{awq_autoselect.DEPRECATED_NAMES[name]}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert value is getattr(module, name)
    assert name not in awq_autoselect.__all__
    with pytest.raises(AttributeError):
        awq_autoselect.no_such_name  # noqa: B018


def test_version_matches_pyproject_and_typed_marker_ships() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # tomllib is 3.11+; the package supports 3.10
    version = re.search(r'^version = "([^"]+)"', text, flags=re.MULTILINE)
    assert version is not None
    assert version.group(1) == awq_autoselect.__version__
    assert '"autoawq==0.2.9"' in text
    assert (ROOT / "awq_autoselect" / "py.typed").is_file()


@pytest.mark.parametrize(
    ("old", "new", "name"),
    [
        ("benchmark", "awq_autoselect.bench", "benchmark_versions"),
        ("cudagraph", "awq_autoselect.decode.static", "generate_with_cuda_graph"),
        ("synthetic", "awq_autoselect.testing.synthetic", "make_synthetic_checkpoint"),
    ],
)
def test_moved_modules_of_0_1_0_still_import_with_a_warning(old: str, new: str, name: str) -> None:
    import importlib
    import sys

    sys.modules.pop(f"awq_autoselect.{old}", None)
    with pytest.warns(DeprecationWarning, match=f"awq_autoselect.{old} is deprecated: it is {new} since 0.2.0"):
        module = importlib.import_module(f"awq_autoselect.{old}")
    assert getattr(module, name) is getattr(importlib.import_module(new), name)
    assert name in dir(module)
    with pytest.raises(AttributeError, match=f"moved to {new}"):
        module.no_such_name  # noqa: B018
