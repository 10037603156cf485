"""Exit codes of the ``awq-autoselect`` command, and the one mapping from error bases to them."""

from __future__ import annotations

from awq_autoselect.errors import CudaContextPoisonedError, InputError, InvalidArgumentError, KernelError

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CODES",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_POISONED",
    "EXIT_USAGE",
    "exit_code",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_POISONED = 4
#: Ctrl-C (SIGINT), as shells report a command a signal ended: 128 + 2.
EXIT_INTERRUPTED = 130

#: Every error base and its exit code (the bases do not overlap: one matches).
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (CudaContextPoisonedError, EXIT_POISONED),
    (InvalidArgumentError, EXIT_USAGE),
    (InputError, EXIT_BAD_INPUT),
    (KernelError, EXIT_FAILED),
)


def exit_code(error: BaseException) -> int:
    """The exit code for an exception: by its base (:data:`EXIT_CODES`), 1 for anything else."""
    for base, code in EXIT_CODES:
        if isinstance(error, base):
            return code
    return EXIT_FAILED
