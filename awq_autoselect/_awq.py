"""AutoAWQ itself: importing it once, safely from threads, without side effects on the caller's process.

Two threads that make a process's first load at the same time must not see a half-imported AutoAWQ:
``sys.modules["awq"]`` exists from the moment its import *starts*, so "already imported?" cannot be answered by
looking there, and AutoAWQ's own imports (``awq.models.base`` ↔ transformers' lazy ``AutoModelForCausalLM``) fail
with "partially initialized module" when a second thread walks into them midway. :func:`import_awq` imports
everything the loader uses under one lock, and only then reports it done.

``import awq`` (0.2.9) also calls ``warnings.simplefilter("default", DeprecationWarning)``, replacing the
caller's configuration for every DeprecationWarning in the process, and then warns, under that filter, that AutoAWQ
is deprecated. We remove the filter it added (and only that one: :mod:`awq_autoselect._quiet`) once the import is
done, so the process's filters are exactly what they were. The deprecation notice itself is AutoAWQ's and comes
through once per process: it is raised right after AutoAWQ's own filter is put in front of every other, so nothing
short of swapping the process-wide warning state, which other threads would feel, could hide it
(a caller who wants it gone imports ``awq`` once under ``warnings.catch_warnings()`` before starting threads).
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType
from typing import TYPE_CHECKING

from awq_autoselect._quiet import drop_added_filters, silenced

if TYPE_CHECKING:
    import torch

__all__ = ["fused_modules", "hf_model_of", "import_awq"]

_IMPORT_LOCK = threading.Lock()
_IMPORTED: dict[str, ModuleType] = {}  # "awq" once every module in _MODULES has been imported

# What the loader and the kernel modules import from AutoAWQ, in the order AutoAWQ itself would import them.
_MODULES = ("awq", "awq.models.base", "awq.models._config", "awq.models.auto", "awq.modules.linear.gemm")


def import_awq() -> ModuleType:
    """Import AutoAWQ (and the parts of it the loader uses) and return the ``awq`` package; thread-safe."""
    done = _IMPORTED.get("awq")
    if done is not None:
        return done
    with _IMPORT_LOCK:
        if "awq" not in _IMPORTED:
            with silenced("awq"), drop_added_filters("default", DeprecationWarning):
                import transformers

                transformers.AutoModelForCausalLM  # noqa: B018 - resolve transformers' lazy attribute here, once
                modules = [importlib.import_module(name) for name in _MODULES]
            _IMPORTED["awq"] = modules[0]
        return _IMPORTED["awq"]


def fused_modules(model: torch.nn.Module) -> list[str]:
    """The class names of AutoAWQ's fused layers (``awq.modules.fused``) in ``model``, sorted; empty if none."""
    return sorted({type(m).__name__ for m in model.modules() if type(m).__module__.startswith("awq.modules.fused")})


def hf_model_of(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face model inside AutoAWQ's wrapper (``BaseAWQForCausalLM.model``), or ``model`` itself.

    The wrapper's own ``forward`` only forwards; decoding, probing and benchmarking talk to the model inside.
    """
    from transformers import PreTrainedModel

    inner = getattr(model, "model", None)
    if not isinstance(model, PreTrainedModel) and isinstance(inner, PreTrainedModel):
        return inner
    return model
