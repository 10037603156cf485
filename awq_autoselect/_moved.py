"""Modules of 0.1.0 that moved in 0.2.0: importing the old name still works, with a DeprecationWarning.

Each old module (``awq_autoselect.benchmark``, ``.cudagraph``, ``.synthetic``) is a few lines that call
:func:`moved_module`; its names resolve lazily in the new modules, so the old import stays as cheap as the new one.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType

__all__ = ["moved_module", "resolved"]


def resolved(module: ModuleType, name: str) -> object:
    """``module.name``; a name the module keeps only as a deprecated alias (``errors.DEPRECATED``: 0.1.0 exception
    names) resolved without the module's own second DeprecationWarning."""
    renamed: Mapping[str, object] = getattr(module, "DEPRECATED", {})
    return renamed[name] if name in renamed else getattr(module, name)


def moved_module(old: str, new: Sequence[str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """Warn that ``old`` moved to ``new[0]``; return ``(__getattr__, __dir__)`` resolving names in ``new``."""
    warnings.warn(
        f"{old} is deprecated: it is {new[0]} since 0.2.0 (removed in 0.3.0)", DeprecationWarning, stacklevel=3
    )

    def resolve(name: str) -> object:
        for module_name in new:
            module = importlib.import_module(module_name)
            if name in getattr(module, "__all__", ()) or name in getattr(module, "DEPRECATED", {}):
                return resolved(module, name)
        raise AttributeError(f"module {old!r} has no attribute {name!r} (it moved to {new[0]})")

    def names() -> list[str]:
        return sorted({n for m in new for n in getattr(importlib.import_module(m), "__all__", ())})

    return resolve, names
