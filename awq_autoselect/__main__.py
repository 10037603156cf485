"""``python -m awq_autoselect`` runs the ``awq-autoselect`` command line."""

from __future__ import annotations

import sys

try:
    from .cli import entrypoint
except KeyboardInterrupt:  # Ctrl-C while the command line itself imports: one line, no traceback
    sys.stderr.write("error: interrupted\n")
    raise SystemExit(130) from None  # cli.EXIT_INTERRUPTED, which did not import

if __name__ == "__main__":
    entrypoint()
