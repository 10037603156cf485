"""Running a benchmark plan: loading each version, warmups, measured and profiled runs, and the results.

:class:`Runner` keeps the run log and every failure as a result: a version that cannot load is *unavailable*,
one that fails while running is *failed* with the reason, and a CUDA error that poisons the context ends all
later GPU work with that reason (the other versions' numbers so far are kept).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from awq_autoselect._awq import hf_model_of
from awq_autoselect.checkpoint import CheckpointInfo
from awq_autoselect.errors import (
    CudaContextPoisonedError,
    InvalidArgumentError,
    KernelFailedError,
    VersionUnavailableError,
)

from .decoders import Decoder, EagerDecoder, GenerateDecoder, GraphDecoder
from .records import (
    BatchResult,
    BenchmarkMode,
    BenchmarkSettings,
    KernelShare,
    LatencyStats,
    LoadSummary,
    RunKind,
    RunRef,
    RunSample,
    Status,
)
from .timing import BenchDevice, profiled_run, timed_run, to_sample
from .traffic import kv_bytes_per_token, weight_bytes_per_token

if TYPE_CHECKING:
    import torch

    from awq_autoselect.loading import LoadReport, LoadResult

__all__ = [
    "CPU_DENSE_NAME",
    "FP16_NAME",
    "Loader",
    "Runner",
    "VersionState",
    "default_loader",
    "footprint",
    "plan_mode",
    "prompt_ids",
    "run_interleaved",
    "run_sequential",
    "vocab_size",
]

logger = logging.getLogger(__name__)


#: ``loader(path, version, device) -> LoadResult``: how a benchmark loads each version (:func:`default_loader`).
Loader = Callable[[str, str, "str | None"], "LoadResult"]

#: The dense baseline's name on CUDA (fp16) and on the CPU (float32, like the quantized models' activations).
FP16_NAME = "fp16"
CPU_DENSE_NAME = "float32"


def default_loader(path: str, version: str, device: str | None, *, trials: bool | None = None) -> LoadResult:
    """Load ``version`` with the project's loader; the dense baseline for the fp16 pseudo-version.

    ``trials`` applies to ``"auto"`` only (it chooses by them): a named version was screened by the benchmark's own
    trials already, or the benchmark runs without trials, so its load runs none.
    """
    from awq_autoselect.loading import load_dense_baseline, load_quantized_auto

    if version in (FP16_NAME, CPU_DENSE_NAME):
        import torch

        return load_dense_baseline(path, device=device, dtype=torch.float16 if version == FP16_NAME else None)
    # Unfused: AutoAWQ's fused blocks keep their own KV cache and attention, so they would measure another
    # model; fallback=False so a version that cannot run is reported rather than replaced.
    return load_quantized_auto(
        path, version, device=device, fuse_layers=False, fallback=False, trials=trials if version == "auto" else False
    )


def summarise(report: LoadReport) -> LoadSummary:
    probe = report.probe
    probe_text = None if probe is None else f"{'ok' if probe.ok else 'failed'}: {probe.message}"
    return LoadSummary(
        requested=str(report.requested),
        kernel=None if report.kernel is None else str(report.kernel.value),
        device=str(report.device),
        dtype=str(report.dtype),
        fused=bool(report.fused),
        conversions=tuple(str(c) for c in report.conversions),
        attempts=tuple(str(a) for a in report.attempts),
        probe=probe_text,
        seconds=max(float(report.seconds), 0.0),
    )


# --------------------------------------------------------------------------------------------------------------
# the benchmark


@dataclass
class VersionState:
    """Mutable bookkeeping for one version while the benchmark runs."""

    name: str
    status: Status = Status.OK
    reason: str | None = None
    load: LoadSummary | None = None
    load_s: float | None = None
    weights_bytes: int | None = None
    model_bytes: int | None = None
    model: torch.nn.Module | None = None
    dense_itemsize: int = 2
    batches: list[BatchResult] = dataclasses.field(default_factory=list)


@dataclass
class BatchRun:
    """Mutable bookkeeping for one version at one batch size in one decode mode."""

    version: VersionState
    decode: str = "eager"
    decoder: Decoder | GenerateDecoder | None = None
    failed: str | None = None
    state_bytes: int | None = None
    warmups: list[RunSample] = dataclasses.field(default_factory=list)
    samples: list[RunSample] = dataclasses.field(default_factory=list)
    kernel_ms: float | None = None
    kernel_note: str | None = None
    top: tuple[KernelShare, ...] = ()
    graph_enabled: bool | None = None
    graph_reason: str | None = None

    def note_graph(self) -> None:
        """Record whether the CUDA graph is in use (capture happens, or fails, at the first decode step)."""
        if isinstance(self.decoder, GraphDecoder):
            self.graph_enabled, self.graph_reason = self.decoder.graph_enabled, self.decoder.fallback_reason


class Progress:
    def __init__(self, enabled: bool, total: int) -> None:
        self._bar: object = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                logger.debug("tqdm is not installed: no progress bar")
            else:
                self._bar = tqdm(total=total, desc="benchmark", unit="run", leave=False)

    def step(self, text: str) -> None:
        bar = self._bar
        if bar is not None:
            bar.set_postfix_str(text, refresh=False)  # type: ignore[attr-defined]
            bar.update(1)  # type: ignore[attr-defined]

    def close(self) -> None:
        bar = self._bar
        if bar is not None:
            bar.close()  # type: ignore[attr-defined]


class LoadOutOfMemoryError(Exception):
    """Loading a version ran out of GPU memory."""


class Runner:
    """Runs the plan: loads, warmups, measured runs, profiled runs; keeps the run log."""

    def __init__(
        self,
        *,
        settings: BenchmarkSettings,
        info: CheckpointInfo,
        loader: Loader,
        device: BenchDevice,
        prompts: torch.Tensor,
        peak_gbps: float | None,
        progress: Progress,
    ) -> None:
        self.s = settings
        self.info = info
        self.loader = loader
        self.device = device
        self.prompts = prompts
        self.peak_gbps = peak_gbps
        self.progress = progress
        self.run_order: list[RunRef] = []
        self.notes: list[str] = []
        self.poisoned: str | None = None

    # --- loading -----------------------------------------------------------------------------------------

    def load(self, version: VersionState) -> None:
        """Load ``version``; on failure record why.

        Raises:
            LoadOutOfMemoryError: the GPU ran out of memory while loading (the caller decides what that means).
        """
        import torch

        if version.status is not Status.OK:
            return  # already known not to run (a trial crashed): never loaded in this process
        if self.poisoned:
            version.status, version.reason = Status.FAILED, self.poisoned
            return
        self.device.free()
        before = self.device.allocated()
        t0 = time.perf_counter()
        try:
            loaded = self.loader(self.s.path, version.name, self.s.device)
        except torch.cuda.OutOfMemoryError as exc:
            self.device.free()
            raise LoadOutOfMemoryError(str(exc)) from exc
        except KernelFailedError as exc:
            if any(getattr(a, "error_type", None) == "OutOfMemoryError" for a in exc.attempts):
                self.device.free()
                raise LoadOutOfMemoryError(str(exc)) from exc
            version.status, version.reason = Status.UNAVAILABLE, str(exc)
            return
        except VersionUnavailableError as exc:
            version.status, version.reason = Status.UNAVAILABLE, str(exc)
            return
        except CudaContextPoisonedError as exc:
            version.status, version.reason = Status.FAILED, str(exc)
            self.poisoned = f"not run: an earlier CUDA error left this process's CUDA context unusable ({exc})"
            self.notes.append(f"a CUDA error stopped all later GPU work: {exc}")
            return
        except Exception as exc:  # a version failing to load must not end the benchmark of the others
            logger.warning("loading %s failed", version.name, exc_info=True)
            version.status, version.reason = Status.FAILED, f"loading failed: {type(exc).__name__}: {exc}"
            self._check_poison(exc)
            return
        version.load_s = time.perf_counter() - t0
        version.model = loaded.model
        version.load = summarise(loaded.report)
        self.device.sync()
        after = self.device.allocated()
        version.weights_bytes = after - before if after is not None and before is not None else None
        version.model_bytes, version.dense_itemsize = _model_bytes(loaded.model)

    def unload(self, version: VersionState) -> None:
        version.model = None
        self.device.free()

    def _check_poison(self, exc: BaseException) -> None:
        text = str(exc)
        if self.device.is_cuda and (
            "illegal memory access" in text or "CUDA error" in text or "device-side assert" in text
        ):
            self.poisoned = f"not run: an earlier CUDA error may have left the CUDA context unusable ({text[:200]})"
            self.notes.append(f"a CUDA error stopped all later GPU work: {text[:300]}")

    # --- one batch size ----------------------------------------------------------------------------------

    def bench_batch(self, versions: Sequence[VersionState], batch_size: int) -> None:
        """At one batch size, per decode mode: warmups, measured runs (interleaved across ``versions``) and
        profiled runs."""
        for decode in self.s.decode:
            self._bench_mode(versions, batch_size, decode)

    def _bench_mode(self, versions: Sequence[VersionState], batch_size: int, decode: str) -> None:
        ids = self.prompts[:batch_size].to(self.device.dev)
        runs = [BatchRun(v, decode) for v in versions]
        for run in runs:
            self._make_decoder(run, batch_size)
        for kind, count in ((RunKind.WARMUP, self.s.warmup), (RunKind.MEASURED, self.s.repeats)):
            for repeat in range(count):
                for run in runs:
                    self._one(run, ids, batch_size, kind, repeat)
        if self.s.kernel_time:
            for run in runs:
                self._profile(run, ids, batch_size)
        for run in runs:
            run.version.batches.append(self._result(run, batch_size))
            run.decoder = None
        self.device.free()

    def _make_decoder(self, run: BatchRun, batch_size: int) -> None:
        if self.poisoned:
            run.failed = self.poisoned
            return
        model = run.version.model
        assert model is not None
        before = self.device.allocated()
        try:
            if run.decode in ("graph", "compile"):
                cache = self.s.prompt_tokens + self.s.new_tokens
                run.decoder = GraphDecoder(model, batch_size, cache, compile=run.decode == "compile")
                run.note_graph()
            elif run.decode in ("generate", "hf-static"):
                run.decoder = GenerateDecoder(model, recipe=run.decode)
            else:
                run.decoder = EagerDecoder(model)
        except Exception as exc:  # e.g. out of memory for the static cache at this batch size
            run.failed = f"{type(exc).__name__}: {exc}"
            self._check_poison(exc)
            self.device.free()
            return
        after = self.device.allocated()
        run.state_bytes = after - before if after is not None and before is not None else None

    def _one(self, run: BatchRun, ids: torch.Tensor, batch_size: int, kind: RunKind, repeat: int) -> None:
        if run.failed is not None or run.decoder is None:
            return
        if self.poisoned:
            run.failed = self.poisoned
            return
        order = len(self.run_order)
        self.run_order.append(RunRef(order, run.version.name, batch_size, run.decode, kind, repeat))
        self.progress.step(f"{run.version.name} bs={batch_size} {kind.value}")
        try:
            raw = timed_run(run.decoder, ids, self.s.new_tokens, self.device)
        except Exception as exc:  # e.g. CUDA out of memory at this batch size: a result, not a crash
            logger.warning("%s at batch size %d failed", run.version.name, batch_size, exc_info=True)
            run.note_graph()
            run.failed = f"{kind.value} run {repeat} failed: {type(exc).__name__}: {exc}"
            run.decoder = None
            self.device.free()
            self._check_poison(exc)
            return
        run.note_graph()
        if raw.persistent_delta is not None and run.state_bytes is not None:
            # e.g. a CUDA graph's memory pool, allocated at the first replay and kept
            run.state_bytes += max(raw.persistent_delta, 0)
        sample = to_sample(raw, order, repeat)
        (run.warmups if kind is RunKind.WARMUP else run.samples).append(sample)

    def _profile(self, run: BatchRun, ids: torch.Tensor, batch_size: int) -> None:
        if not self.device.is_cuda:
            run.kernel_note = "not measured: the model ran on the CPU"
            return
        if run.failed is not None or run.decoder is None or self.poisoned:
            return
        order = len(self.run_order)
        self.run_order.append(RunRef(order, run.version.name, batch_size, run.decode, RunKind.PROFILE, 0))
        self.progress.step(f"{run.version.name} bs={batch_size} profile")
        try:
            run.kernel_ms, run.top, run.kernel_note = profiled_run(run.decoder, ids, self.s.new_tokens, self.device)
        except Exception as exc:
            logger.warning("profiling %s failed", run.version.name, exc_info=True)
            run.kernel_note = f"profiler run failed: {type(exc).__name__}: {exc}"
            self._check_poison(exc)

    def _result(self, run: BatchRun, batch_size: int) -> BatchResult:
        v, s = run.version, self.s
        samples = tuple(run.samples)
        ok = run.failed is None and len(samples) == s.repeats
        ttft = LatencyStats.of([x.ttft_ms for x in samples]) if samples else None
        steps = [step for x in samples for step in x.step_ms]
        tpot = LatencyStats.of(steps) if steps else None
        e2e = LatencyStats.of([x.e2e_ms for x in samples]) if samples else None
        tokens = 1000.0 / tpot.median if tpot and tpot.median > 0 else None
        weight_bytes = weight_bytes_per_token(
            self.info, batch_size, v.dense_itemsize, dense=v.name in (FP16_NAME, CPU_DENSE_NAME)
        )
        bandwidth = weight_bytes / (run.kernel_ms / 1000.0) / 1e9 if run.kernel_ms else None
        fraction = bandwidth / self.peak_gbps if bandwidth is not None and self.peak_gbps else None
        deltas = [x.peak_delta_bytes for x in samples if x.peak_delta_bytes is not None]
        peak_delta = max(deltas) if deltas else None
        peak = (
            (v.weights_bytes or 0) + (run.state_bytes or 0) + peak_delta
            if peak_delta is not None and v.weights_bytes is not None
            else None
        )
        return BatchResult(
            version=v.name,
            batch_size=batch_size,
            decode=run.decode,
            status=Status.OK if ok else Status.FAILED,
            reason=None if ok else (run.failed or "incomplete"),
            ttft_ms=ttft,
            tpot_ms=tpot,
            e2e_ms=e2e,
            tokens_per_s=tokens,
            aggregate_tokens_per_s=tokens * batch_size if tokens is not None else None,
            kernel_ms_per_token=run.kernel_ms,
            kernel_time_note=run.kernel_note if s.kernel_time else "not measured: kernel_time=False",
            top_kernels=run.top,
            weight_bytes_per_token=weight_bytes,
            kv_bytes_per_token=kv_bytes_per_token(self.info.config, s.prompt_tokens, s.new_tokens, batch_size),
            achieved_bandwidth_gbps=bandwidth,
            bandwidth_fraction=fraction,
            state_bytes=run.state_bytes if run.state_bytes is None else max(run.state_bytes, 0),
            peak_run_delta_bytes=peak_delta,
            peak_memory_bytes=peak,
            graph_enabled=run.graph_enabled,
            graph_fallback_reason=run.graph_reason,
            warmups=tuple(run.warmups),
            samples=samples,
        )


def _model_bytes(model: torch.nn.Module) -> tuple[int, int]:
    """Bytes of the model's distinct parameter and buffer storages, and the itemsize of its dense weights."""
    seen: set[tuple[str, int]] = set()
    total = 0
    itemsize = 2
    for tensor in (*model.parameters(), *model.buffers()):
        key = (str(tensor.device), tensor.untyped_storage().data_ptr())
        if key in seen:
            continue
        seen.add(key)
        total += tensor.untyped_storage().nbytes()
    lm_head = getattr(hf_model_of(model), "get_output_embeddings", None)
    head = lm_head() if callable(lm_head) else None
    weight = getattr(head, "weight", None)
    if weight is not None and weight.is_floating_point():
        itemsize = int(weight.element_size())
    return total, itemsize


def plan_mode(free_bytes: int | None, footprints: Sequence[int], run_bytes: int) -> BenchmarkMode:
    """Interleave when every version's weights plus the largest run fit in 90% of the free device memory."""
    if free_bytes is None:
        return BenchmarkMode.INTERLEAVED
    return BenchmarkMode.INTERLEAVED if sum(footprints) + run_bytes <= 0.9 * free_bytes else BenchmarkMode.SEQUENTIAL


def footprint(info: CheckpointInfo, version: str) -> int:
    if version in (FP16_NAME, CPU_DENSE_NAME):
        return weight_bytes_per_token(info, 1, 2, dense=True)
    return info.total_bytes


def prompt_ids(info: CheckpointInfo, settings: BenchmarkSettings, vocab_size: int) -> torch.Tensor:
    """``[max batch, prompt_tokens]`` token ids on the CPU: seeded random ids, or the prompt text repeated."""
    import torch

    rows = max(settings.batch_sizes)
    if settings.prompt is None:
        generator = torch.Generator().manual_seed(settings.seed)
        return torch.randint(0, vocab_size, (rows, settings.prompt_tokens), generator=generator, dtype=torch.long)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(info.path))
    ids = list(tokenizer(settings.prompt)["input_ids"])
    if not ids:
        raise InvalidArgumentError(
            f"prompt {settings.prompt!r} tokenizes to no tokens with {info.path}'s tokenizer: pass a longer text"
        )
    filled = (ids * (settings.prompt_tokens // len(ids) + 1))[: settings.prompt_tokens]
    return torch.tensor([filled] * rows, dtype=torch.long)


def vocab_size(info: CheckpointInfo) -> int:
    text = info.config.get("text_config")
    for cfg in (info.config, text if isinstance(text, dict) else {}):
        vocab = cfg.get("vocab_size")
        if isinstance(vocab, int) and vocab > 0:
            return vocab
    raise InvalidArgumentError(
        f"{info.path}/config.json has no vocab_size, so random prompts cannot be drawn: pass prompt='some text'"
    )


def run_interleaved(runner: Runner, states: Sequence[VersionState], sizes: Sequence[int]) -> BenchmarkMode:
    """Load every version, then interleave them batch size by batch size. Falls back when loading runs out."""
    for state in states:
        try:
            runner.load(state)
        except LoadOutOfMemoryError:
            for loaded in states:
                if loaded.model is not None:
                    loaded.model, loaded.load, loaded.load_s = None, None, None
                    loaded.weights_bytes = loaded.model_bytes = None
            runner.device.free()
            runner.notes.append(
                f"out of GPU memory loading {state.name} beside the other versions: benchmarked one after "
                "another instead, not interleaved"
            )
            return BenchmarkMode.SEQUENTIAL
    for size in sizes:
        runner.bench_batch([s for s in states if s.model is not None], size)
    for state in states:
        runner.unload(state)
    return BenchmarkMode.INTERLEAVED


def run_sequential(runner: Runner, states: Sequence[VersionState], sizes: Sequence[int]) -> None:
    for state in states:
        if state.status is not Status.OK:
            continue  # already found unavailable while trying to interleave
        try:
            runner.load(state)
        except LoadOutOfMemoryError as exc:
            state.status, state.reason = Status.FAILED, f"out of GPU memory while loading: {exc}"
            continue
        if state.model is None:
            continue
        for size in sizes:
            runner.bench_batch([state], size)
        runner.unload(state)
