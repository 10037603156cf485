"""Shared fixtures: tiny models quantized by AutoAWQ once per test session."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import helpers
from tests.helpers import QuantizedFactory, hash_tree

# Trials cache what they measure; tests must never read or write the user's cache folder.
_CACHE = tempfile.mkdtemp(prefix="awq-autoselect-test-cache-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ["AWQ_AUTOSELECT_CACHE_DIR"] = _CACHE
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny fp16 Llama (not quantized), with tokenizer."""
    return helpers.build_tiny_model(tmp_path_factory.mktemp("tiny-llama-fp16"))


@pytest.fixture(scope="session")
def quantized(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> QuantizedFactory:
    """``quantized(version="gemm", group_size=128, zero_point=True, model_type="llama")`` -> checkpoint dir.

    Each distinct combination is quantized by AutoAWQ once per session and reused. Tests must not modify
    the returned directory (copy it first).
    """
    cache: dict[tuple[str, int, bool, str], Path] = {}
    sources: dict[str, Path] = {"llama": tiny_model_dir}

    def make(version: str = "gemm", group_size: int = 128, zero_point: bool = True, model_type: str = "llama") -> Path:
        key = (version.lower(), group_size, zero_point, model_type)
        if key not in cache:
            if model_type not in sources:
                sources[model_type] = helpers.build_tiny_model(
                    tmp_path_factory.mktemp(f"tiny-{model_type}-fp16"), model_type=model_type
                )
            out = tmp_path_factory.mktemp(f"awq-{model_type}-{key[0]}-g{group_size}-zp{int(zero_point)}")
            cache[key] = helpers.quantize(
                sources[model_type], out, version=key[0], group_size=group_size, zero_point=zero_point
            )
        return cache[key]

    return make


@pytest.fixture
def unchanged() -> Iterator[Callable[[Path], None]]:
    """``unchanged(path)`` records a directory's hashes; at teardown the test fails if anything changed."""
    watched: list[tuple[Path, dict[str, str]]] = []

    def watch(path: Path) -> None:
        watched.append((path, hash_tree(path)))

    yield watch
    for path, before in watched:
        assert hash_tree(path) == before, f"{path} was modified"
