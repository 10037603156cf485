"""Which AutoAWQ kernel version to use for a checkpoint, a machine and a workload, with every reason.

Invariant: nothing is chosen that the hardware or the installed modules cannot run, every rejected kernel keeps
its reasons, and selection never starts a trial: measurements come in as data (given, or what the trial cache
holds; :func:`awq_autoselect.planning.plan` runs trials, then selects again). The modules, in the order a
selection runs: :mod:`.records` (:class:`Candidate`, :class:`Selection`: what was decided, as text and JSON),
:mod:`.inputs` (the checkpoint and the machine resolved), :mod:`.checks` (every kernel's requirements checked,
each rejection with its reason), :mod:`.measurements` (trials applied to the candidates) and :mod:`.select`
(:func:`select_awq_version`: the ranking, measured or published). Importing this package imports neither torch
nor awq.
"""

from __future__ import annotations

from awq_autoselect.workload import BATCH_THRESHOLD, Workload

from .checks import checkpoint_rejections, layout_conversion
from .records import Candidate, Selection
from .select import select_awq_version

__all__ = [
    "BATCH_THRESHOLD",
    "Candidate",
    "Selection",
    "Workload",
    "checkpoint_rejections",
    "layout_conversion",
    "select_awq_version",
]


def __dir__() -> list[str]:
    return __all__
