"""Deprecated: ``awq_autoselect.cudagraph`` is ``awq_autoselect.decode.static`` since 0.2.0 (removed in 0.3.0)."""

from awq_autoselect._moved import moved_module

__getattr__, __dir__ = moved_module(__name__, ("awq_autoselect.decode.static", "awq_autoselect.errors"))
