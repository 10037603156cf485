"""Deprecated: ``awq_autoselect.benchmark`` is ``awq_autoselect.bench`` since 0.2.0 (removed in 0.3.0)."""

from awq_autoselect._moved import moved_module

__getattr__, __dir__ = moved_module(__name__, ("awq_autoselect.bench", "awq_autoselect.errors"))
