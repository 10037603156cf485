"""Silencing other libraries' warnings without touching anyone else's.

``warnings.catch_warnings`` is not thread-safe: it swaps the process-wide filter list (and, with
``record=True``, the process-wide ``showwarning``) for the duration of the block, so a warning that another thread
raises meanwhile is filtered by our rules or recorded into our list, and lost to its owner; and the list it puts
back drops any filter another thread added in between. A library that is called from threads cannot use it.

:func:`silenced` instead adds one ``ignore`` filter per named module at the front of the live list and, afterwards,
removes exactly those entries (by identity). Only warnings attributed to the named modules (and their submodules)
are affected, in any thread, while the block runs; every other warning, and every filter anyone else added, is
left as it was. :func:`drop_added_filters` undoes a third party's own ``warnings.simplefilter`` call (AutoAWQ makes
one on import) the same way.
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import cast

__all__ = ["drop_added_filters", "silenced"]

_LOCK = threading.Lock()


def _live() -> list[object]:
    # The process's filter list itself (typed as a read-only sequence by the stubs; it is a list, edited in place).
    return cast(list[object], warnings.filters)


def _filters_changed() -> None:
    # The warnings module caches "already shown here" per call site, keyed by a version of the filter list; after
    # an in-place edit the version must move on, as warnings.filterwarnings itself does.
    for name in ("_filters_mutated", "_filters_mutated_lock_held"):
        changed = getattr(warnings, name, None)
        if callable(changed):
            changed()
            return


def _remove(entries: Sequence[object]) -> None:
    for entry in entries:
        live = _live()
        for index, current in enumerate(live):
            if current is entry:
                del live[index]
                break


@contextmanager
def silenced(*modules: str) -> Iterator[None]:
    """Ignore the warnings attributed to ``modules`` (``"awq"`` covers ``awq.models.base`` too) in the block."""
    entries: list[object] = [("ignore", None, Warning, re.compile(rf"{re.escape(name)}(\.|$)"), 0) for name in modules]
    with _LOCK:
        _live()[:0] = entries
        _filters_changed()
    try:
        yield
    finally:
        with _LOCK:
            _remove(entries)
            _filters_changed()


@contextmanager
def drop_added_filters(action: str, category: type[Warning]) -> Iterator[None]:
    """Remove the ``(action, category)`` filters that code run in the block added to the process's list."""
    before = {id(entry) for entry in warnings.filters}
    try:
        yield
    finally:
        with _LOCK:
            added = [
                entry
                for entry in warnings.filters
                if id(entry) not in before and entry[0] == action and entry[2] is category and entry[3] is None
            ]
            _remove(added)
            _filters_changed()
