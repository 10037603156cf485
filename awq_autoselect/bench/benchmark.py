"""``benchmark_versions()``: single-query latency of AWQ kernel versions, side by side, as immutable records.

Each requested version is loaded through :func:`awq_autoselect.loading.load_quantized_auto` with
``fallback=False`` (a version that cannot run here is reported *unavailable* with the loader's reason, never
silently replaced) and then timed doing what a chat request does: a prefill of ``prompt_tokens``, then greedy
decode of exactly ``new_tokens`` tokens, end of sequence ignored. Per version and batch size the report holds
time to first token (TTFT), per-token decode latency (TPOT: mean, median, p90, p99, std), tokens/s, end-to-end
latency, GPU kernel time per decode token from a separate profiled run, peak GPU memory attributable to the
version, and the weight bandwidth that kernel time implies. docs/benchmarks.md explains every number.

Method, in short: warmup runs are kept apart from measured runs; versions are interleaved (A B A B ...) so
drift hits all of them alike; inputs are random token ids from a fixed seed (or a prompt text); timing is
``torch.cuda.synchronize`` + ``time.perf_counter`` around every step; the profiler runs only in its own,
untimed run. A version that cannot load or fails while running is a result (status and reason), not a crash.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
from collections.abc import Sequence

from awq_autoselect import settings as environment_settings
from awq_autoselect.catalogue import parse_kernel
from awq_autoselect.checkpoint import CheckpointInfo, check_fits_context, read_checkpoint
from awq_autoselect.devices import parse_device, resolve_device
from awq_autoselect.errors import InvalidArgumentError, NoCompatibleKernelError
from awq_autoselect.hub import resolve_checkpoint
from awq_autoselect.modes import parse_decode_modes
from awq_autoselect.trials.runner import progress_enabled, trials_enabled
from awq_autoselect.workload import Workload

from .metadata import run_metadata
from .records import BenchmarkMode, BenchmarkReport, BenchmarkSettings, Status, VersionResult
from .runner import (
    CPU_DENSE_NAME,
    FP16_NAME,
    Loader,
    Progress,
    Runner,
    VersionState,
    default_loader,
    footprint,
    plan_mode,
    prompt_ids,
    run_interleaved,
    run_sequential,
    vocab_size,
)
from .timing import BenchDevice
from .traffic import kv_bytes_per_token

__all__ = ["benchmark_versions"]

_AUTO = "auto"


def _screen(
    info: CheckpointInfo,
    states: list[VersionState],
    dev: BenchDevice,
    *,
    workload: Workload,
    rows: Sequence[int],
    runner: Runner,
    show_progress: bool,
    trials: bool | None,
) -> None:
    """Trial the requested kernels that can run here in child processes (the planner's rules, :func:`plan`); mark
    the ones that break as failed."""
    from awq_autoselect.planning import plan

    requested = [parse_kernel(s.name) for s in states if s.name not in (_AUTO, FP16_NAME, CPU_DENSE_NAME)]
    if not requested:
        return
    try:
        planned = plan(
            info,
            device=str(dev.dev),
            workload=workload,
            trials=trials,
            only=requested,  # the others are reported unavailable by the loader
            rows=rows,
            show_progress=show_progress,
            measured_by="benchmark_versions",
        )
    except NoCompatibleKernelError as exc:  # every kernel that could run here broke in its trial: each says why
        broken = {name: why for name, why in exc.reasons.items() if why and why[0].startswith("measured broken")}
        if not broken:
            raise
        for state in states:
            if state.name in broken:
                state.status = Status.FAILED
                state.reason = f"broken here, so it was not loaded in this process: {'; '.join(broken[state.name])}"
                runner.notes.append(f"{state.name} was measured broken in a trial and not benchmarked")
        return
    report = planned.report
    if report is None:
        return
    for state in states:
        result = report.result(parse_kernel(state.name)) if state.name in {k.value for k in requested} else None
        if result is not None and result.inconclusive:  # says nothing about the kernel: benchmarked all the same
            runner.notes.append(f"{state.name}'s trial was inconclusive (not cached): {result.reason}")
        elif result is not None and not result.ok:
            cached = report.cache_note(result.kernel)
            why = result.reason + (f" {cached}" if cached else "")
            state.status = Status.FAILED
            state.reason = f"broken here: its trial in a child process failed, so it was not loaded in this one: {why}"
            runner.notes.append(f"{state.name} was measured broken in a trial and not benchmarked: {why}")


def _normalise_versions(versions: Sequence[str], include_fp16: bool, is_cuda: bool) -> tuple[str, ...]:
    if isinstance(versions, str):
        versions = [v for v in versions.split(",") if v.strip()]
    names: list[str] = []
    for version in versions:
        key = str(version).strip().lower()
        if key == _AUTO:
            name = _AUTO
        elif key in (FP16_NAME, "dense"):
            name = FP16_NAME if is_cuda else CPU_DENSE_NAME
        else:
            name = parse_kernel(key).value
        if name in names:
            raise InvalidArgumentError(f"versions lists {name!r} twice: name each version once")
        names.append(name)
    if include_fp16:
        dense = FP16_NAME if is_cuda else CPU_DENSE_NAME
        if dense not in names:
            names.append(dense)
    if not names:
        raise InvalidArgumentError("versions is empty and include_fp16 is False: nothing to benchmark")
    return tuple(names)


def _decode_modes(decode: Sequence[str] | str | None, cuda_graph: bool) -> tuple[str, ...]:
    if decode is None:
        return ("graph",) if cuda_graph else ("eager",)
    return parse_decode_modes(decode)


def _is_int(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_settings(
    prompt_tokens: int, new_tokens: int, batch_sizes: Sequence[int], repeats: int, warmup: int
) -> tuple[int, ...]:
    checks = (
        ("prompt_tokens", prompt_tokens, 1),
        ("new_tokens", new_tokens, 2),
        ("repeats", repeats, 1),
        ("warmup", warmup, 0),
    )
    for name, value, minimum in checks:
        if not _is_int(value, minimum):
            extra = (
                " (the first token comes from the prefill; TPOT needs at least one decode step)"
                if (name == "new_tokens")
                else ""
            )
            raise InvalidArgumentError(f"{name}={value!r}: expected an integer >= {minimum}{extra}")
    sizes = tuple(batch_sizes)
    if not sizes or not all(_is_int(b, 1) for b in sizes):
        raise InvalidArgumentError(f"batch_sizes={batch_sizes!r}: expected one or more integers >= 1")
    if len(set(sizes)) != len(sizes):
        raise InvalidArgumentError(f"batch_sizes={batch_sizes!r} repeats a size: name each once")
    return sizes


def benchmark_versions(
    path: str | os.PathLike[str],
    versions: Sequence[str] = ("gemv", "gemm"),
    *,
    prompt_tokens: int = 128,
    new_tokens: int = 128,
    batch_sizes: Sequence[int] = (1,),
    repeats: int = 5,
    warmup: int = 1,
    device: str | None = None,
    include_fp16: bool = False,
    cuda_graph: bool = False,
    decode: Sequence[str] | str | None = None,
    prompt: str | None = None,
    seed: int = 0,
    progress: bool | None = None,
    kernel_time: bool = True,
    peak_bandwidth_gbps: float | None = None,
    loader: Loader = default_loader,
    mode: BenchmarkMode | None = None,
    trials: bool | None = None,
    revision: str | None = None,
) -> BenchmarkReport:
    """Measure single-query latency of AWQ kernel versions on one checkpoint, side by side.

    Every version is loaded once (``load_quantized_auto(path, version, fallback=False, fuse_layers=False)``);
    a version that cannot run here is reported with status ``unavailable`` and the loader's reason. All
    versions stay resident and their runs are interleaved (warmups first, then measured runs A B A B ...);
    when the versions do not fit in GPU memory together they are benchmarked one after another (the report's
    ``mode`` and ``notes`` say so). docs/benchmarks.md defines every number.

    Args:
        path: AWQ checkpoint directory, or a Hugging Face Hub model ID (downloaded once, before anything is timed;
            every version loads the local copy).
        versions: kernel versions to compare (``"gemv"``, ``"gemm"``, ``"gemm_triton"``, ``"torch_int4"``,
            ..., or ``"auto"`` for whatever the loader picks).
        prompt_tokens: prompt length of every sequence.
        new_tokens: tokens generated per sequence (greedy, end of sequence ignored): the first by the prefill,
            ``new_tokens - 1`` by decode steps. At least 2.
        batch_sizes: sequences decoded together; each size is benchmarked separately.
        repeats: measured runs per version and batch size.
        warmup: untimed-for-the-results runs per version and batch size before the measured ones (kept in the
            report apart from the measured runs).
        device: ``"cuda"``, ``"cuda:N"`` or ``"cpu"``; default: the current CUDA device, else the CPU.
        include_fp16: also benchmark the dense baseline of the same shape (dequantized weights, ``nn.Linear``;
            fp16 on CUDA, float32 on the CPU like the quantized models' activations there).
        decode: the decode modes to time, each for every version (:data:`~.decoders.DECODE_MODES`): ``eager``,
            ``graph``, ``compiled`` (what the models ``load_quantized_auto`` returns decode with on CUDA),
            ``generate`` (their own ``generate(...)``), ``hf-static`` (transformers' static-cache recipe, compiled);
            default ``("eager",)``, or ``("graph",)`` with ``cuda_graph=True``.
        cuda_graph: shorthand for ``decode=("graph",)`` (a static KV cache, the step replayed from a CUDA graph).
        prompt: a text to use instead of random token ids; tokenized with the checkpoint's tokenizer and
            truncated to ``prompt_tokens``, or repeated until it fills them.
        seed: seed of the random prompt ids (the same ids for every version).
        progress: show a tqdm progress bar; ``None``: ``$AWQ_AUTOSELECT_PROGRESS``, else on a terminal or in a
            notebook (:func:`awq_autoselect.trials.progress_enabled`).
        kernel_time: profile one extra, untimed run per version and batch size with torch.profiler to get GPU
            kernel time per decode token (CUDA only).
        peak_bandwidth_gbps: the card's peak memory bandwidth in GB/s, overriding the datasheet table and the
            measured-copy fallback.
        loader: how each version is loaded, ``loader(path, version, device) -> LoadResult``; default
            :func:`~awq_autoselect.bench.runner.default_loader` (the project's loader, one version each, no
            fallback).
        mode: force ``interleaved`` or ``sequential``; default: interleaved when every version fits in GPU memory.
        trials: first run every requested kernel version that can run here in a child process
            (:mod:`awq_autoselect.trials`, cached); one that crashes there (an illegal memory access, a signal, a
            kernel that does not import) or returns wrong numbers is reported *failed* with that reason and never
            loaded in this process, so the others are still measured; a trial that could not finish (timeout,
            memory) blames nothing and the version is benchmarked. ``None``: on unless ``$AWQ_AUTOSELECT_TRIALS``
            is ``0``.
        revision: for a Hub ID, the branch, tag or commit hash (default ``main``); an error with a local directory.

    Returns:
        The :class:`BenchmarkReport`.

    Raises:
        CheckpointError: (and subclasses) ``path`` is not a usable AWQ checkpoint, or the Hub model cannot be had.
        UnknownVersionError: a name in ``versions`` is not a kernel version.
        InvalidDeviceSpecError: ``device`` is malformed or names CUDA where there is none.
        InvalidArgumentError: a count or size out of range, a repeated version or batch size,
            ``prompt_tokens + new_tokens`` longer than the model's context (checked before anything is measured), or
            an ``AWQ_AUTOSELECT_*`` variable with a bad value (:mod:`awq_autoselect.settings`).
    """
    started = _dt.datetime.now(_dt.timezone.utc)
    environment_settings.current()  # a bad AWQ_AUTOSELECT_* value is refused before anything runs
    show = progress_enabled(progress)  # a progress= that is not a bool is refused here, before any work
    sizes = _check_settings(prompt_tokens, new_tokens, batch_sizes, repeats, warmup)
    modes = _decode_modes(decode, cuda_graph)
    if peak_bandwidth_gbps is not None and not peak_bandwidth_gbps > 0:
        raise InvalidArgumentError(f"peak_bandwidth_gbps={peak_bandwidth_gbps!r}: expected a positive number")
    # Arguments are checked before a download (the names again below, for the device found).
    _normalise_versions(versions, include_fp16, True)
    if device is not None:
        parse_device(device)
    info = read_checkpoint(resolve_checkpoint(path, revision=revision))
    check_fits_context(info, prompt_tokens, new_tokens)
    dev = BenchDevice(resolve_device(device))
    names = _normalise_versions(versions, include_fp16, dev.is_cuda)
    settings = BenchmarkSettings(
        path=str(info.path),
        versions=names,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        batch_sizes=sizes,
        repeats=repeats,
        warmup=warmup,
        device=device,
        include_fp16=include_fp16,
        decode=modes,
        prompt=prompt,
        seed=seed,
        kernel_time=kernel_time,
    )
    import torch

    torch.manual_seed(seed)
    prompts = prompt_ids(info, settings, vocab_size(info))
    dev.prime()
    metadata = run_metadata(dev, started, peak_bandwidth_gbps)
    per_batch = len(modes) * len(names) * (warmup + repeats + (1 if kernel_time and dev.is_cuda else 0))
    bar = Progress(show, per_batch * len(sizes))
    if loader is default_loader:  # the benchmark's trial setting reaches the loads it makes
        loader = functools.partial(default_loader, trials=trials)
    runner = Runner(
        settings=settings,
        info=info,
        loader=loader,
        device=dev,
        prompts=prompts,
        peak_gbps=metadata.peak_bandwidth_gbps,
        progress=bar,
    )
    states = [VersionState(name) for name in names]
    if trials_enabled(trials):
        prefill = (Workload(batch_size=b, prompt_tokens=prompt_tokens).prefill_rows for b in sizes)
        work = Workload(batch_size=sizes[0], prompt_tokens=prompt_tokens, new_tokens=new_tokens)
        rows = sorted({*sizes, *prefill})
        _screen(info, states, dev, workload=work, rows=rows, runner=runner, show_progress=show, trials=trials)
    if mode is None:
        kv = kv_bytes_per_token(info.config, prompt_tokens, new_tokens, max(sizes)) or 0
        run_bytes = 3 * kv  # the whole cache is about twice the mean read; leave room for activations
        mode = plan_mode(dev.free_bytes(), [footprint(info, n) for n in names], run_bytes)
        if mode is BenchmarkMode.SEQUENTIAL:
            runner.notes.append(
                "the versions do not fit in GPU memory together: benchmarked one after another, not interleaved"
            )
    try:
        if mode is BenchmarkMode.INTERLEAVED:
            mode = run_interleaved(runner, states, sizes)
        if mode is BenchmarkMode.SEQUENTIAL:
            run_sequential(runner, states, sizes)
    finally:
        bar.close()
        for state in states:
            state.model = None
        dev.free()
    if not dev.is_cuda:
        runner.notes.append("ran on the CPU: wall times only (no GPU kernel time, memory or bandwidth)")
    if warmup == 0 and set(modes) - {"eager"}:
        runner.notes.append("warmup=0: graph capture (and compiling) happened inside the first measured run")
    results = tuple(
        VersionResult(
            version=s.name,
            status=s.status,
            reason=s.reason,
            load=s.load,
            load_s=s.load_s,
            weights_bytes=s.weights_bytes,
            model_bytes=s.model_bytes,
            batches=tuple(s.batches),
        )
        for s in states
    )
    return BenchmarkReport(
        settings=settings,
        metadata=metadata,
        mode=mode,
        notes=tuple(runner.notes),
        results=results,
        run_order=tuple(runner.run_order),
    )
