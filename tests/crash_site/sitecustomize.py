"""Makes one kernel misbehave inside trial child processes, for tests/test_trials.py (never on a user's path).

Put this folder on PYTHONPATH and set ``AWQ_TEST_BREAK_KERNEL=<kernel>`` and ``AWQ_TEST_BREAK_HOW`` to
``segfault`` (the process dies by SIGSEGV at the kernel's first call), ``hang`` (the call never returns),
``garbage`` (the call returns wrong numbers) or ``raise`` (the call raises a CUDA-style RuntimeError). The layers
are the real ones; only their ``forward`` is replaced, after they are built.
"""

from __future__ import annotations

import os
import signal
import time

_KERNEL = os.environ.get("AWQ_TEST_BREAK_KERNEL")
_HOW = os.environ.get("AWQ_TEST_BREAK_HOW", "segfault")

if _KERNEL:
    import awq_autoselect.kernels.layers as _layers

    _original = _layers.build_layers

    def _break(module: object) -> None:
        forward = module.forward  # type: ignore[attr-defined]

        def broken(x: object) -> object:
            if _HOW == "segfault":
                os.kill(os.getpid(), signal.SIGSEGV)
            if _HOW == "hang":
                time.sleep(3600)
            if _HOW == "raise":
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return forward(x) * 0 + 1  # garbage

        module.forward = broken  # type: ignore[attr-defined]

    def _build_layers(kernel, weights, **kwargs):  # type: ignore[no-untyped-def]
        built = _original(kernel, weights, **kwargs)
        if kernel.value == _KERNEL:
            for module in built:
                _break(module)
        return built

    _layers.build_layers = _build_layers
