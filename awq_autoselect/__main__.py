"""``python -m awq_autoselect`` runs the ``awq-autoselect`` command line."""

from __future__ import annotations

from .cli import entrypoint

if __name__ == "__main__":
    entrypoint()
