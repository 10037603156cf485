"""Makes kernels misbehave inside trial child processes, for tests/test_trials.py (never on a user's path).

Put this folder on PYTHONPATH and set ``AWQ_TEST_BREAK_KERNEL=<kernel>[,<kernel>...]`` and ``AWQ_TEST_BREAK_HOW`` to
``segfault`` (the process dies by SIGSEGV at the kernel's first call), ``hang`` (the call never returns),
``garbage`` (the call returns wrong numbers), ``raise`` (the call raises a CUDA-style RuntimeError), ``oom`` (the
call asks the allocator for more memory than any machine has: a real allocation failure), ``terminate`` (the
process is ended by SIGTERM, as by someone outside) or ``slow`` (each call sleeps 50 ms first, then computes the
right numbers: a kernel far slower than any other). With ``AWQ_TEST_BREAK_ONCE=<file>`` the kernel misbehaves only
in the first process that finds the file missing (it creates it): a failure that does not repeat. The layers are
the real ones; only their ``forward`` is replaced, after they are built.

``AWQ_TEST_TRIAL_LOG=<file>`` appends ``<kernel> <pid>`` to the file each time a process builds a kernel's layers,
so a test can count the child processes a trial ran (whether or not a kernel is broken). ``AWQ_TEST_ROUND_LOG=<file>``
appends ``<kernel>`` each time a child starts a timed round: the order the rounds ran in.
"""

from __future__ import annotations

import os
import signal
import time

_KERNELS = {k.strip() for k in os.environ.get("AWQ_TEST_BREAK_KERNEL", "").split(",") if k.strip()}
_HOW = os.environ.get("AWQ_TEST_BREAK_HOW", "segfault")
_ONCE = os.environ.get("AWQ_TEST_BREAK_ONCE")
_LOG = os.environ.get("AWQ_TEST_TRIAL_LOG")
_ROUNDS = os.environ.get("AWQ_TEST_ROUND_LOG")


def _first_time() -> bool:
    """True in the one process that creates the ONCE file."""
    if not _ONCE:
        return True
    try:
        fd = os.open(_ONCE, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return False
    os.close(fd)
    return True


if _KERNELS or _LOG:
    import awq_autoselect.kernels.layers as _layers

    _original = _layers.build_layers
    _logged: set[str] = set()

    def _break(module: object) -> None:
        forward = module.forward  # type: ignore[attr-defined]

        def broken(x: object) -> object:
            if _HOW == "segfault":
                os.kill(os.getpid(), signal.SIGSEGV)
            if _HOW == "terminate":
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(60)
            if _HOW == "hang":
                time.sleep(3600)
            if _HOW == "raise":
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            if _HOW == "slow":
                time.sleep(0.05)
                return forward(x)
            if _HOW == "oom":
                import torch

                torch.empty(2**60, dtype=torch.uint8)  # the host allocator refuses: a real allocation failure
            return forward(x) * 0 + 1  # garbage

        module.forward = broken  # type: ignore[attr-defined]

    def _build_layers(kernel, weights, **kwargs):  # type: ignore[no-untyped-def]
        if _LOG and kernel.value not in _logged:
            _logged.add(kernel.value)
            with open(_LOG, "a", encoding="utf-8") as log:
                log.write(f"{kernel.value} {os.getpid()}\n")
        built = _original(kernel, weights, **kwargs)
        if kernel.value in _KERNELS and _first_time():
            for module in built:
                _break(module)
        return built

    _layers.build_layers = _build_layers

if _ROUNDS:
    import awq_autoselect.trials.child as _child

    _round = _child.Session.round
    _round_log = _ROUNDS

    def _logged_round(self, threads=None):  # type: ignore[no-untyped-def]
        with open(_round_log, "a", encoding="utf-8") as log:
            log.write(f"{self.kernel.value}\n")
        return _round(self, threads)

    _child.Session.round = _logged_round  # type: ignore[method-assign]
