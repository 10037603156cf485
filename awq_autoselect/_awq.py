"""Import AutoAWQ without its import-time side effects leaking into the caller's process.

``import awq`` (0.2.9) calls ``warnings.simplefilter("default", DeprecationWarning)`` — replacing the
caller's own warning configuration for every DeprecationWarning in the process — and then warns that AutoAWQ is
deprecated. We import it once under ``warnings.catch_warnings()``, which restores the caller's filters, and
silence only that announcement (the README states the deprecation and why awq_autoselect pins 0.2.9).
"""

from __future__ import annotations

import sys
import warnings
from types import ModuleType
from typing import cast

__all__ = ["import_awq"]


def import_awq() -> ModuleType:
    """Import and return the ``awq`` package, leaving the warning filters as they were."""
    loaded = sys.modules.get("awq")
    if loaded is not None:
        return loaded
    # record=True captures whatever awq warns, whichever filter its own simplefilter() call installs.
    with warnings.catch_warnings(record=True) as caught:
        import awq as module
    for item in caught:
        if "AutoAWQ is officially deprecated" not in str(item.message):
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    return cast(ModuleType, module)
