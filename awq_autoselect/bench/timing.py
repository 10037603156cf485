"""Timing one run: the device's synchronisation and memory statistics, the timed loop, the profiled loop.

Timing is ``synchronize`` + ``time.perf_counter`` around every step; garbage collection is off inside the timed
loop (as timeit does); GPU kernel time comes from a separate, untimed run under ``torch.profiler``.
"""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from awq_autoselect._quiet import silenced

from .decoders import Decoder, GenerateDecoder
from .records import KernelShare, RunSample

if TYPE_CHECKING:
    import torch

__all__ = ["BenchDevice", "RawRun", "profiled_run", "timed_run", "to_sample"]

_TOP_KERNELS = 5


@dataclass
class RawRun:
    ttft_s: float
    steps_s: list[float]
    e2e_s: float
    peak_delta: int | None
    persistent_delta: int | None


class BenchDevice:
    """The device the models run on, with synchronisation and allocator statistics where it has them."""

    def __init__(self, dev: torch.device) -> None:
        import torch

        self.dev = dev
        self.is_cuda = dev.type == "cuda"
        self._torch = torch

    def sync(self) -> None:
        if self.is_cuda:
            self._torch.cuda.synchronize(self.dev)

    def allocated(self) -> int | None:
        return int(self._torch.cuda.memory_allocated(self.dev)) if self.is_cuda else None

    def reset_peak(self) -> None:
        if self.is_cuda:
            self._torch.cuda.reset_peak_memory_stats(self.dev)

    def peak(self) -> int | None:
        return int(self._torch.cuda.max_memory_allocated(self.dev)) if self.is_cuda else None

    def free(self) -> None:
        gc.collect()
        if self.is_cuda:
            self._torch.cuda.empty_cache()

    def prime(self) -> None:
        """Create the cuBLAS handle and workspace now, so the first version loaded is not charged for them."""
        if self.is_cuda:
            torch = self._torch
            for dtype in (torch.float16, torch.bfloat16, torch.float32):
                a = torch.ones((64, 64), dtype=dtype, device=self.dev)
                (a @ a).sum().item()
            self.sync()

    def free_bytes(self) -> int | None:
        if not self.is_cuda:
            return None
        free, _total = self._torch.cuda.mem_get_info(self.dev)
        return int(free)


def timed_run(
    decoder: Decoder | GenerateDecoder, input_ids: torch.Tensor, new_tokens: int, device: BenchDevice
) -> RawRun:
    """One prefill + ``new_tokens - 1`` greedy decode steps, each synchronised and stamped with perf_counter."""
    import torch

    if isinstance(decoder, GenerateDecoder):
        return _timed_generate(decoder, input_ids, new_tokens, device)
    device.sync()
    start_alloc = device.allocated()
    device.reset_peak()
    # As timeit does: no garbage collection inside the timed loop, where a pause would land on one version only.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with torch.inference_mode():
            t0 = time.perf_counter()
            token = decoder.prefill(input_ids).argmax(dim=-1, keepdim=True)
            device.sync()
            last = time.perf_counter()
            ttft = last - t0
            steps: list[float] = []
            for _ in range(new_tokens - 1):
                token = decoder.decode_step(token).argmax(dim=-1, keepdim=True)
                device.sync()
                now = time.perf_counter()
                steps.append(now - last)
                last = now
    finally:
        if gc_was_enabled:
            gc.enable()
    e2e = last - t0
    peak = device.peak()
    peak_delta = peak - start_alloc if peak is not None and start_alloc is not None else None
    del token
    decoder.release()
    end_alloc = device.allocated()
    persistent = end_alloc - start_alloc if end_alloc is not None and start_alloc is not None else None
    return RawRun(ttft, steps, e2e, None if peak_delta is None else max(peak_delta, 0), persistent)


def _timed_generate(decoder: GenerateDecoder, input_ids: torch.Tensor, new_tokens: int, device: BenchDevice) -> RawRun:
    """A whole generate call: TTFT from the prompt's stamp to the first token's, then the gaps between tokens."""
    device.sync()
    start_alloc = device.allocated()
    device.reset_peak()
    times = decoder.run(input_ids, new_tokens, device.sync)
    if len(times) != new_tokens + 1:
        raise RuntimeError(f"generate produced {len(times) - 1} tokens, {new_tokens} were asked for")
    peak = device.peak()
    peak_delta = peak - start_alloc if peak is not None and start_alloc is not None else None
    decoder.release()
    end_alloc = device.allocated()
    persistent = end_alloc - start_alloc if end_alloc is not None and start_alloc is not None else None
    steps = [b - a for a, b in itertools.pairwise(times[1:])]
    delta = None if peak_delta is None else max(peak_delta, 0)
    return RawRun(times[1] - times[0], steps, times[-1] - times[0], delta, persistent)


def _kernel_totals(fn: Callable[[], object], device: BenchDevice) -> dict[str, list[float]]:
    """GPU time (us) and calls per kernel name while ``fn`` runs (CUDA activity only)."""
    from torch.profiler import DeviceType, ProfilerActivity, profile

    with silenced("torch.profiler", "torch.autograd"):  # its chatter (e.g. about CUPTI) is not the model's business
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            device.sync()
        events = list(prof.events())
    totals: dict[str, list[float]] = {}
    for event in events:
        if event.device_type == DeviceType.CUDA:
            entry = totals.setdefault(str(event.name)[:200], [0.0, 0.0])
            entry[0] += float(event.time_range.elapsed_us())
            entry[1] += 1.0
    return totals


def _shares(totals: dict[str, list[float]], steps: int) -> tuple[float, tuple[KernelShare, ...]]:
    busy_us = sum(total for total, _ in totals.values())
    top = sorted(totals.items(), key=lambda kv: kv[1][0], reverse=True)[:_TOP_KERNELS]
    return busy_us / 1000.0 / steps, tuple(KernelShare(n, t / 1000.0 / steps, c / steps) for n, (t, c) in top)


def _profiled_generate(
    decoder: GenerateDecoder, input_ids: torch.Tensor, new_tokens: int, device: BenchDevice
) -> tuple[float | None, tuple[KernelShare, ...], str | None]:
    """Kernel time per decode token of a generate call: (``new_tokens`` tokens - 2 tokens) / (``new_tokens`` - 2)."""
    if new_tokens < 3:
        return None, (), "not measured: a generate call's decode time needs new_tokens >= 3"
    long = _kernel_totals(lambda: decoder.run(input_ids, new_tokens, device.sync), device)
    short = _kernel_totals(lambda: decoder.run(input_ids, 2, device.sync), device)
    if not long:
        return None, (), "torch.profiler recorded no CUDA kernels (CUPTI unavailable?)"
    steps = new_tokens - 2
    difference = {
        name: [total - short.get(name, [0.0, 0.0])[0], calls - short.get(name, [0.0, 0.0])[1]]
        for name, (total, calls) in long.items()
    }
    ms, shares = _shares({k: v for k, v in difference.items() if v[0] > 0}, steps)
    return ms, shares, None


def profiled_run(
    decoder: Decoder | GenerateDecoder, input_ids: torch.Tensor, new_tokens: int, device: BenchDevice
) -> tuple[float | None, tuple[KernelShare, ...], str | None]:
    """GPU busy time per decode step from torch.profiler (CUDA activity only), in its own untimed run.

    Returns ``(ms_per_token, top_kernels, note)``; ``ms_per_token`` is None with a note when nothing was recorded.
    """
    import torch

    if isinstance(decoder, GenerateDecoder):
        with torch.inference_mode():
            return _profiled_generate(decoder, input_ids, new_tokens, device)
    steps = new_tokens - 1
    with torch.inference_mode():
        first = decoder.prefill(input_ids).argmax(dim=-1, keepdim=True)
        device.sync()

        def decode() -> None:
            token = first
            for _ in range(steps):
                token = decoder.decode_step(token).argmax(dim=-1, keepdim=True)

        totals = _kernel_totals(decode, device)
    decoder.release()
    if not totals:
        return None, (), "torch.profiler recorded no CUDA kernels (CUPTI unavailable?)"
    ms, shares = _shares(totals, steps)
    return ms, shares, None


def to_sample(raw: RawRun, order: int, repeat: int) -> RunSample:
    return RunSample(
        order=order,
        repeat=repeat,
        ttft_ms=raw.ttft_s * 1000.0,
        step_ms=tuple(s * 1000.0 for s in raw.steps_s),
        e2e_ms=raw.e2e_s * 1000.0,
        peak_delta_bytes=raw.peak_delta,
    )
