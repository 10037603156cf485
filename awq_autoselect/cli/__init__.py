"""The ``awq-autoselect`` command line. ``main(argv) -> int`` is callable in-process (tests do).

Exit codes:
    0  success (``detect`` finding no GPU is a success: "no GPU" is a result)
    1  nothing could run: no compatible kernel, every kernel failed, or the requested version is unavailable
    2  usage error: bad arguments, unknown version name, malformed capability
    3  bad input: the checkpoint is missing, not AWQ, unsupported or corrupt; a conversion is impossible
    4  the CUDA context was poisoned by a kernel (retry in a fresh process)
    130  interrupted (Ctrl-C), also while the command still imports torch and AutoAWQ: one line, no traceback
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn, TextIO

from awq_autoselect import settings
from awq_autoselect.errors import AwqAutoselectError, CheckpointWarning, TrialCacheWarning

from .exits import (
    EXIT_BAD_INPUT,
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_POISONED,
    EXIT_USAGE,
    exit_code,
)
from .parser import UsageError, build_parser

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CODES",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_POISONED",
    "EXIT_USAGE",
    "build_parser",
    "entrypoint",
    "exit_code",
    "main",
]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _run(func: Callable[[argparse.Namespace, TextIO], int], args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run a command; every error becomes one line on ``err`` and an exit code, never a traceback. A refused trial
    cache folder, or checkpoint files that disagree, are one ``warning:`` line each on ``err``."""
    ours = (TrialCacheWarning, CheckpointWarning)
    with warnings.catch_warnings(record=True) as caught:
        for category in ours:  # the library warns once per process and folder (or file)
            warnings.simplefilter("always", category)
        try:
            return _run_command(func, args, out, err)
        finally:
            for warning in caught:
                if issubclass(warning.category, ours):
                    err.write(f"warning: {_one_line(str(warning.message))}\n")
                else:  # someone else's: shown as it would have been
                    warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)


def _run_command(
    func: Callable[[argparse.Namespace, TextIO], int], args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    try:
        settings.current()  # a bad AWQ_AUTOSELECT_* value: exit 2, whatever the command
        if _loads_model(args):
            _quiet_dependencies(args.verbose)  # imports torch and AutoAWQ: seconds, and it can fail
        return func(args, out)
    except AwqAutoselectError as exc:
        lines = str(exc).splitlines()
        err.write(f"error: {lines[0] if lines else type(exc).__name__}\n")
        for line in lines[1:]:  # a multi-line reason list (no kernel fits) is detail, indented
            err.write(f"  {line.strip()}\n")
        return exit_code(exc)
    except KeyboardInterrupt:
        err.write("error: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug or an environment failure we did not foresee: still one line
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        err.write(
            f"error: unexpected {type(exc).__name__}: {_one_line(str(exc))[:500]} (run with -vv for the traceback)\n"
        )
        return EXIT_FAILED


def _loads_model(args: argparse.Namespace) -> bool:
    """Whether the command loads a model through AutoAWQ in this process (tune's trials run in children)."""
    return args.command in {"load", "bench"} or (args.command == "report" and args.demo is not None)


def _quiet_dependencies(verbose: int) -> None:
    """The CLI owns its process: keep AutoAWQ's deprecation notice and transformers' advice off the terminal.

    The library cannot hide AutoAWQ's import-time notice without touching process-wide warning state (see
    :mod:`awq_autoselect._awq`); a command line is one thread, so here that is safe. Shown again with ``-v``.
    """
    if verbose:
        return
    import warnings

    from awq_autoselect._awq import import_awq

    with warnings.catch_warnings(record=True):  # recorded and dropped: AutoAWQ puts its own filter before any other
        import_awq()
    logging.getLogger("transformers").setLevel(logging.ERROR)  # its library logger: advice meant for its users


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so that writers remove their staging folders on the way out.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run the CLI. Returns the exit code instead of exiting (130 after Ctrl-C, whenever it comes)."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        return _main(argv, out, err)
    except KeyboardInterrupt:  # outside a command: while parsing, or setting up
        err.write("error: interrupted\n")
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None, out: TextIO, err: TextIO) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_USAGE
    except SystemExit as exc:  # --help, --version
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    except Exception as exc:  # a bug in the parser itself: still one line
        err.write(f"error: unexpected {type(exc).__name__} while reading the arguments: {_one_line(str(exc))[:300]}\n")
        return EXIT_FAILED
    if args.verbose:
        logging.basicConfig(
            level=logging.DEBUG if args.verbose > 1 else logging.INFO,
            stream=err,
            format="%(levelname)s %(name)s: %(message)s",
        )
    func: Callable[[argparse.Namespace, TextIO], int] = args.func
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run(func, args, out, err)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def entrypoint() -> NoReturn:
    """Console-script entry point."""
    try:
        code = main()
    except KeyboardInterrupt:  # a second Ctrl-C while the first was being reported
        code = EXIT_INTERRUPTED
    sys.exit(code)
