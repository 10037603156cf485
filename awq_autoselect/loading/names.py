"""Checkpoint names against model names: where transformers moved a module that published checkpoints still name.

transformers 5 renamed Mixtral's ``block_sparse_moe`` to ``mlp`` (and converts dense checkpoints while loading);
AWQ checkpoints published for AutoAWQ keep the old names. The loader and the probe look tensors and layers up
through :func:`model_name`, which keeps a name the model has and renames only one it lacks, so the same
checkpoint loads on transformers 4.x (old names) and 5.x (new ones).
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from types import MappingProxyType

__all__ = ["RENAMES", "model_name"]

#: Per architecture: (checkpoint, model) renames of transformers 5 against the published checkpoints.
RENAMES: Mapping[str, tuple[tuple[str, str], ...]] = MappingProxyType({"mixtral": ((".block_sparse_moe.", ".mlp."),)})


def model_name(name: str, model_type: str, known: Container[str]) -> str:
    """The model's name for checkpoint tensor or module ``name``: itself if the model has it, else renamed."""
    if name in known:
        return name
    renamed = name
    for old, new in RENAMES.get(model_type, ()):
        renamed = renamed.replace(old, new)
    return renamed if renamed in known else name
