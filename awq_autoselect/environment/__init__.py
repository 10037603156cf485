"""Which kernel modules import on this machine, and when one does not, why (in words a user can act on).

Invariant: probing never initializes a CUDA context, and a module that does not import is a result with a reason,
never an exception. The modules: :mod:`.records` (:class:`Environment`, :class:`ModuleStatus`,
:class:`ModuleState`; :meth:`Environment.assume` plans for another machine), :mod:`.diagnose` (why an import
failed, or why a module that imports cannot work) and :mod:`.probe` (:func:`probe_environment`: the imports, once
per process). Importing this package imports neither torch nor awq; probing does.
"""

from __future__ import annotations

from awq_autoselect.catalogue import INT4_OPS, INT4_OPS_CPU

from .diagnose import AUTOAWQ_KERNELS_BUILDS
from .probe import CATALOGUE_OPS, probe_environment
from .records import DEFAULT_ASSUMED_CUDA, DEFAULT_ASSUMED_TORCH, KNOWN_MODULES, Environment, ModuleState, ModuleStatus

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
