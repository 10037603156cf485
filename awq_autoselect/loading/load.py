"""``load_quantized_auto()``: load an AWQ checkpoint with a kernel that is proven to work on this machine.

AutoAWQ's ``from_quantized(path, version=...)`` ignores ``version``: the checkpoint's layout alone decides, and a
kernel that cannot run here fails late (a missing extension at the first forward, "no kernel image" at the first
forward, fused layers without flash-attn with a ``NameError``) or not at all (garbage for unsupported group
sizes). So this module:

1. validates the checkpoint (:func:`awq_autoselect.checkpoint.read_checkpoint`) and selects an ordered chain of
   kernels (:func:`awq_autoselect.selection.select_awq_version`);
2. for each kernel, runs AutoAWQ's real ``from_quantized`` with three narrow hooks in ``awq.models.base`` —
   the quantization config (so the module class matches the kernel), the weight loader (which converts the
   packed layout in memory, see :mod:`awq_autoselect.conversion`) and the device probe (so a CPU load is not
   forced onto IPEX) — then swaps in the kernel's module class where AutoAWQ has none;
3. probes the result: a short prefill and a one-token forward on the target device, with a few quantized
   layers compared against weights dequantized in torch straight from the checkpoint;
4. on failure records the attempt, releases memory and tries the next kernel; a poisoned CUDA context stops
   the walk with :class:`~awq_autoselect.errors.CudaContextPoisonedError`.

The user's files are only read. The hooks are applied under a process-wide lock and removed afterwards.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from awq_autoselect import settings
from awq_autoselect._awq import fused_modules
from awq_autoselect.catalogue import CATALOGUE, Kernel, parse_kernel
from awq_autoselect.checkpoint import CheckpointInfo, read_checkpoint
from awq_autoselect.devices import parse_device, resolve_device
from awq_autoselect.errors import (
    AwqAutoselectError,
    ConversionError,
    CudaContextPoisonedError,
    FallbackWarning,
    KernelFailedError,
    VersionUnavailableError,
)
from awq_autoselect.hub import resolve_checkpoint
from awq_autoselect.trials.runner import progress_enabled
from awq_autoselect.workload import Workload

from .arguments import check_arguments, float_dtype
from .finish import finish
from .generation import checkpoint_generation_config
from .hooks import build_model, default_dtype
from .probe import DEFAULT_PROBE_TOLERANCE, ProbeMismatchError, run_probe
from .records import Attempt, FirstCompile, LoadReport, LoadResult, StageTimes

if TYPE_CHECKING:
    import torch

    from awq_autoselect.environment import Environment
    from awq_autoselect.hub import CheckpointSource
    from awq_autoselect.planning import Plan, TrialVerdict
    from awq_autoselect.selection import Selection

    from .generation import CheckpointGeneration
    from .records import ProbeResult

__all__ = ["load_dense_baseline", "load_quantized_auto"]

logger = logging.getLogger(__name__)

# Exception types a kernel raises when it cannot run here (AutoAWQ research notes, section 1.8): a missing
# extension (ImportError / ModuleNotFoundError / AttributeError on a None module), no kernel image
# (RuntimeError), fused layers without flash-attn (NameError), kernel argument checks (AssertionError,
# ValueError, NotImplementedError), Triton on CPU tensors (TypeError).
_KERNEL_ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError,
    ImportError,
    NameError,
    AssertionError,
    ValueError,
    NotImplementedError,
    AttributeError,
    TypeError,
    KeyError,
)


_RETRYABLE: tuple[type[BaseException], ...] = (*_KERNEL_ERRORS, ProbeMismatchError)


def _attempt(verdict: TrialVerdict) -> Attempt:
    """A kernel a trial kept out (broken: never built here) or left unmeasured (inconclusive), as a load attempt."""
    return Attempt(verdict.kernel, False, verdict.stage, False, None, verdict.message)


def _warn_unmeasured(planned: Plan, info: CheckpointInfo, known: Mapping[Kernel, str]) -> None:
    """A FallbackWarning for the trials that could not finish (not those ``known`` already warned about)."""
    new = {k: why for k, why in planned.inconclusive.items() if k not in known}
    if new:
        warnings.warn(
            f"awq_autoselect could not measure {', '.join(k.value for k in new)} for {info.path.name} ("
            + "; ".join(new.values())
            + "): ranked by published scores for this load; nothing of that was cached",
            FallbackWarning,
            stacklevel=3,
        )


@contextlib.contextmanager
def _timed(spent: dict[str, float], stage: str) -> Iterator[None]:
    """Add the block's wall seconds to ``spent[stage]``, also when it raises."""
    started = time.perf_counter()
    try:
        yield
    finally:
        spent[stage] += time.perf_counter() - started


def _release(device: torch.device) -> None:
    """Free what a failed attempt left; never raises (a poisoned context makes empty_cache raise too)."""
    import torch

    gc.collect()
    if device.type == "cuda":
        try:
            torch.cuda.empty_cache()
        except Exception as exc:  # the context check that follows says what this means
            logger.debug("empty_cache failed after a failed attempt: %s", exc)


def _check_cuda_context(device: torch.device, error: BaseException, attempts: list[Attempt]) -> None:
    """Raise CudaContextPoisonedError when the CUDA context no longer works after ``error``."""
    import torch

    if device.type != "cuda":
        return
    try:
        torch.cuda.synchronize(device)
        probe = torch.ones(1, device=device)
        _ = float((probe + 1).item())
    except Exception as exc:  # any failure here means the context is gone
        tried = "; ".join(str(a) for a in attempts)
        raise CudaContextPoisonedError(
            f"a CUDA error left this process's CUDA context unusable ({type(error).__name__}: {error}); no more "
            f"kernels can be tried in this process. Attempts: {tried}. Probe each version in a fresh process "
            "instead, e.g. `awq-autoselect load PATH --version gemm --json`, then pass the version that works "
            "to load_quantized_auto(path, version=...)."
        ) from exc


def _fuse_options(kernel: Kernel, fuse_layers: bool | None, device: torch.device, env: Environment) -> list[bool]:
    if fuse_layers is False or device.type != "cuda" or not CATALOGUE[kernel].fusable:
        return [False]
    # AutoAWQ's fused layers need its awq_ext (fused norm) and flash-attn >= 2.6 (AWQ:awq/modules/fused/attn.py).
    if fuse_layers is None and not (env.available("awq_ext") and env.available("flash_attn")):
        return [False]
    return [True, False]


def _short(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_quantized_auto(
    path: str | os.PathLike[str],
    version: str | Kernel = "auto",
    *,
    device: str | torch.device | None = None,
    fuse_layers: bool | None = None,
    probe: bool = True,
    fallback: bool = True,
    workload: Workload | None = None,
    selection: Selection | None = None,
    environment: Environment | None = None,
    max_seq_len: int | None = None,
    dtype: torch.dtype | None = None,
    torch_dtype: torch.dtype | None = None,
    probe_tolerance: float = DEFAULT_PROBE_TOLERANCE,
    trust_remote_code: bool = False,
    trials: bool | None = None,
    fast_decode: str | bool | None = None,
    progress: bool | None = None,
    revision: str | None = None,
) -> LoadResult:
    """Load an AWQ checkpoint with the best kernel that works here, proven by a forward with a numeric check.

    Args:
        path: local checkpoint directory (config.json with an AWQ ``quantization_config`` + safetensors), or a
            Hugging Face Hub model ID (``"org/model-AWQ"``), downloaded to (or, offline, found in) the Hugging Face
            cache: :func:`awq_autoselect.hub.resolve_checkpoint`. A local directory of the same name wins.
        version: ``"auto"``, or a kernel version to try first (``"gemv"``, ``"gemm"``, ``"torch_int4"``, ...).
        device: ``"cuda"``, ``"cuda:1"`` or ``"cpu"``; default: the current CUDA device, else CPU.
        fuse_layers: AutoAWQ's fused layers. ``None``: only where they can work (awq_ext and flash-attn >= 2.6
            importable); a fused attempt that fails is retried unfused.
        probe: run the numeric probe after loading (recommended: a load is not proof).
        fallback: walk the selection's chain when the requested or preferred kernel cannot run. With False, a
            version that cannot run raises instead.
        workload: what the model will do (batch size, prompt and output lengths); steers the choice. One the
            model cannot hold (longer than its context, or a KV cache beyond the device's memory) is refused
            before any trial.
        selection: a ready :class:`~awq_autoselect.selection.Selection` (e.g. planned with
            ``select_awq_version``); its chain is tried in order, each kernel for real.
        environment: the kernel-module probe to select with (default: :func:`probe_environment`).
        max_seq_len: passed to AutoAWQ (fused layers' cache size).
        dtype: dtype of the non-quantized weights and activations: ``torch.float16``, ``torch.bfloat16`` or
            ``torch.float32``. Default: float16 on CUDA, bfloat16 for torch_int4, float32 on CPU.
        torch_dtype: the older name of ``dtype`` (transformers 5 renamed it); given both, they must agree.
        probe_tolerance: relative error allowed between a probed layer and its float32 reference.
        trust_remote_code: passed to transformers; off by default.
        trials: run every viable kernel on layers of this checkpoint's shapes in child processes first (timed,
            numerically checked, crash-isolated; cached on disk, so only the first load on a machine pays), then
            load in this process only kernels that passed, fastest first. ``None``: on, unless
            ``$AWQ_AUTOSELECT_TRIALS`` is ``0``; ignored when ``selection`` is given. A trial that could not finish
            (timeout, out of memory) is not cached and blames no kernel: this load ranks by published scores, with a
            ``FallbackWarning``, and lists it in ``report.attempts`` (stage ``"unmeasured"``).
        fast_decode: how the returned model's ``generate(...)`` decodes (:mod:`awq_autoselect.decode.fast`):
            ``"compile"`` (the decode step compiled by torch.compile and replayed from a CUDA graph over a static
            KV cache; the default on CUDA for kernels torch.compile can trace, torch_int4 among them; the first
            call compiles, tens of seconds for a 7B model), ``"graph"`` (the same without compiling; the default
            for AutoAWQ's compiled extensions, which torch.compile cannot trace), ``"eager"`` (a static cache,
            eager steps; the default on a CPU), or ``False`` (transformers' own ``generate``). Requests the fast
            path cannot serve (beam search, scores in the output, ...) go to transformers' ``generate`` with a
            ``FallbackWarning``.
        progress: draw a progress bar on stderr while trials run (the first load of a checkpoint on a machine).
            ``None``: ``$AWQ_AUTOSELECT_PROGRESS`` decides (``1`` always, ``0`` never), unset: on a terminal or in
            a notebook (:func:`awq_autoselect.trials.progress_enabled`).
        revision: for a Hub ID, the branch, tag or commit hash to load (default ``main``); an error with a local
            directory.

    Returns:
        ``LoadResult(model, report)``; ``report.hub`` holds the Hub ID, revision and commit the model came from.
        The model's ``generation_config`` is the checkpoint's, as transformers' ``from_pretrained`` builds it
        (generation_config.json, else config.json; ``report.generation_config_source`` says which): its
        end-of-sequence ids, ``do_sample``, ``max_new_tokens`` etc. are ``generate``'s defaults.
        A :class:`~awq_autoselect.errors.FallbackWarning` is emitted when the kernel used is not the one requested,
        or when a chosen kernel failed to load or to pass the probe. With
        ``version="auto"``, kernels whose trial failed were never chosen: they are listed in ``report.attempts``
        (stage ``"trial"``) and logged, without a warning: measuring them is how auto chooses. ``report.stages``
        holds the seconds of each stage; ``report.first_compile`` is filled in by the first ``generate()``.

    Warns:
        CheckpointWarning: the checkpoint's files disagree, or generation_config.json cannot be read, and loading
            went on (the message names the files and the values used).

    Raises:
        InvalidArgumentError: an argument's value cannot be used (checked before the checkpoint's weights are read
            or downloaded, and before any trial): an empty ``path``, ``dtype``/``torch_dtype`` not a floating-point
            torch.dtype or the two disagreeing, ``probe_tolerance`` NaN or negative, ``max_seq_len`` below 1, an unknown
            ``fast_decode``, ``progress`` or ``$AWQ_AUTOSELECT_PROGRESS``, a ``device`` this torch cannot use
            (:class:`~awq_autoselect.errors.InvalidDeviceSpecError`), ``revision`` with a local directory, an
            ``AWQ_AUTOSELECT_*`` variable with a bad value, or a ``workload`` that cannot fit (its tokens beyond the
            model's context, its KV cache beyond the device's memory; checked before any trial).
        CheckpointError: (and subclasses) the path is not a usable AWQ checkpoint, or the Hub model cannot be had
            (not found, gated, not cached offline, no safetensors); nothing was loaded.
        UnknownVersionError: ``version`` is not a known kernel name.
        NoCompatibleKernelError: no kernel can run this checkpoint here (``reasons`` has each one's; a trial
            verdict read from the cache says so, with its date and the commands that measure it again).
        VersionUnavailableError: ``fallback=False`` and the requested version cannot run here.
        KernelFailedError: every candidate failed to load or to pass the probe (``.attempts`` lists them).
        CudaContextPoisonedError: a CUDA error made the context unusable; probe in a fresh process.
    """
    started = time.perf_counter()
    settings.current()  # a bad AWQ_AUTOSELECT_* value is refused before anything is read or run
    check_arguments(probe_tolerance=probe_tolerance, max_seq_len=max_seq_len, fast_decode=fast_decode)
    show_progress = progress_enabled(progress)
    requested = "auto" if str(version).lower() == "auto" else parse_kernel(version).value
    if device is not None:
        parse_device(device)  # a malformed device fails before torch is imported

    import torch

    from awq_autoselect.environment import probe_environment
    from awq_autoselect.planning import Plan, plan

    # Before a download or a read of the weights: a bad dtype or a device torch cannot use fails at once.
    build = _Build(float_dtype(dtype, torch_dtype), fuse_layers, max_seq_len, trust_remote_code, probe, probe_tolerance)
    dev = resolve_device(device)
    source = resolve_checkpoint(path, revision=revision)
    info = read_checkpoint(source)
    generation = checkpoint_generation_config(info)  # a bad generation_config.json fails before any trial
    env = environment if environment is not None else probe_environment()
    work = workload or Workload(decode="graph" if dev.type == "cuda" else "eager")
    if workload is not None:
        from awq_autoselect.capacity import check_workload

        check_workload(info, work, str(dev))  # before any trial: one the model cannot hold fails in every child
    capability = torch.cuda.get_device_capability(dev) if dev.type == "cuda" else None
    planned = Plan(selection) if selection is not None else plan(info, version=requested, device=str(dev),
        workload=work, fallback=fallback, trials=trials, capability=capability, environment=env,
        show_progress=show_progress, measured_by="load_quantized_auto")  # fmt: skip
    walk = _Walk(info, source, dev, env, build, planned, requested, generation, fast_decode, started)
    chain = walk.chain(fallback)
    index = 0
    while index < len(chain) and (index == 0 or walk.trial_rest(chain, index)):
        for fused in _fuse_options(chain[index], fuse_layers, dev, env):
            loaded = walk.attempt(chain[index], fused)
            if loaded is not None:
                return loaded
        index += 1
    raise KernelFailedError(
        f"no kernel could load and run {info.path} on {dev}:\n" + "\n".join(f"  - {a}" for a in walk.attempts),
        walk.attempts,
    )


@dataclass(frozen=True)
class _Build:
    """What the caller asked of every kernel's build."""

    dtype: torch.dtype | None  # None: the kernel's default on the device
    fuse_layers: bool | None
    max_seq_len: int | None
    trust_remote_code: bool
    probe: bool
    probe_tolerance: float


@dataclass
class _Walk:
    """One load walking its plan's chain of kernels: the attempts so far and the seconds of each stage."""

    info: CheckpointInfo
    source: CheckpointSource
    dev: torch.device
    env: Environment
    build: _Build
    planned: Plan
    requested: str
    generation: CheckpointGeneration
    fast_decode: str | bool | None
    started: float
    attempts: list[Attempt] = field(default_factory=list)
    spent: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("load", "probe"), 0.0))
    converted: list[float] = field(default_factory=list)  # seconds of each conversion, inside the build's time
    resolved: float = 0.0

    def chain(self, fallback: bool) -> list[Kernel]:
        """The kernels to build, in order; the plan's trial failures and late rejections become attempts."""
        from awq_autoselect.selection import checkpoint_rejections

        planned, requested, selection = self.planned, self.requested, self.planned.selection
        _warn_unmeasured(planned, self.info, {})
        self.attempts = [_attempt(verdict) for verdict in planned.verdicts]
        trial_failures = {v.kernel for v in planned.verdicts if v.stage == "trial"}
        # Kernels a trial found broken were never built here; they are attempts all the same (and a fallback).
        rejected = dict(selection.rejected)
        late = checkpoint_rejections(selection, self.info)  # a selection given, planned without the directory
        rejected.update((k, (why,)) for k, why in late.items())
        self.attempts += [
            Attempt(k, False, "skipped", False, None, why) for k, why in late.items() if k.value != requested
        ]
        chain = [k for k in selection.chain if k not in late]
        if (
            requested != "auto"
            and (not chain or chain[0].value != requested)
            and Kernel(requested) not in trial_failures
        ):
            reasons = rejected.get(Kernel(requested), ("not viable here",))
            self.attempts.append(Attempt(Kernel(requested), False, "skipped", False, None, "; ".join(reasons)))
            if not fallback:
                raise VersionUnavailableError(
                    f"version {requested!r} cannot run here: {'; '.join(reasons)}", requested, tuple(reasons)
                )
        self.resolved = time.perf_counter() - self.started - planned.trial_seconds
        return chain if fallback else chain[:1]

    def trial_rest(self, chain: list[Kernel], index: int) -> bool:
        """Before building ``chain[index]`` (past the first): trial the kernels from there on that no trial has
        passed yet, and drop those found broken (``chain`` is edited in place). False when none is left."""
        planned = self.planned
        if set(planned.untrialed).intersection(chain[index:]):
            self.planned = planned.trial_fallbacks([k for k in chain[index:] if k in planned.untrialed])
            self.attempts += [_attempt(v) for v in self.planned.verdicts[len(planned.verdicts) :]]
            _warn_unmeasured(self.planned, self.info, planned.inconclusive)
            chain[index:] = [k for k in chain[index:] if k not in self.planned.broken]
        return index < len(chain)

    def attempt(self, kernel: Kernel, fused: bool) -> LoadResult | None:
        """Build ``kernel`` (fused or not) and probe it: the result, or None after recording why it failed."""
        build, dev = self.build, self.dev
        run_dtype = build.dtype or default_dtype(kernel, dev)
        t0 = time.perf_counter()
        conversions: list[str] = []
        stage = "load"
        try:
            with _timed(self.spent, "load"):
                model = build_model(
                    self.info,
                    kernel,
                    dev,
                    run_dtype,
                    fused=fused,
                    max_seq_len=build.max_seq_len,
                    trust_remote_code=build.trust_remote_code,
                    conversions=conversions,
                    generation_config=self.generation.config,
                    on_convert=self.converted.append,
                )
            result = None
            if build.probe:
                stage = "probe"
                with _timed(self.spent, "probe"):
                    result = run_probe(model, self.info, dev, build.probe_tolerance)
                if not result.ok:
                    raise ProbeMismatchError(result.message)
        except AwqAutoselectError as exc:
            if not isinstance(exc, ConversionError):
                raise
            self._failed(kernel, fused, stage, exc, t0)
            return None
        except _RETRYABLE as exc:
            logger.info("kernel %s failed at %s: %s", kernel, stage, exc)
            self._failed(kernel, fused, stage, exc, t0)
            _check_cuda_context(dev, exc, self.attempts)
            return None
        except Exception as exc:  # not a kernel failure we retry on; but it may have broken the context
            _release(dev)
            _check_cuda_context(dev, exc, self.attempts)
            raise
        self.attempts.append(Attempt(kernel, fused, "ok", True, seconds=time.perf_counter() - t0))
        return self._loaded(model, kernel, run_dtype, tuple(conversions), result)

    def _failed(self, kernel: Kernel, fused: bool, stage: str, exc: BaseException, t0: float) -> None:
        self.attempts.append(
            Attempt(kernel, fused, stage, False, type(exc).__name__, _short(exc), time.perf_counter() - t0)
        )
        _release(self.dev)

    def _loaded(
        self,
        model: torch.nn.Module,
        kernel: Kernel,
        run_dtype: torch.dtype,
        conversions: tuple[str, ...],
        result: ProbeResult | None,
    ) -> LoadResult:
        """The model made ready (fast decode, save_quantized) and its report; warns of a fallback."""
        # AutoAWQ skips fusing silently in some setups (no awq_ext): what was built decides.
        built_fused = bool(fused_modules(model))
        first_compile = FirstCompile()
        dev, info = self.dev, self.info
        decode = finish(
            model, info, dev, self.fast_decode, fused=built_fused, kernel=kernel, first_compile=first_compile
        )
        conversion = sum(self.converted)
        report = LoadReport(
            path=str(info.path),
            requested=self.requested,
            kernel=kernel,
            device=str(dev),
            dtype=str(run_dtype).replace("torch.", ""),
            fused=built_fused,
            checkpoint_layout=info.layout,
            loaded_layout=CATALOGUE[kernel].layout,
            conversions=conversions,
            attempts=tuple(self.attempts),
            probe=result,
            selection=self.planned.selection,
            seconds=time.perf_counter() - self.started,
            decode=decode,
            generation_config_source=self.generation.source,
            stages=StageTimes(
                resolve=self.resolved,
                trials=self.planned.trial_seconds,
                load=self.spent["load"] - conversion,
                conversion=conversion,
                probe=self.spent["probe"],
            ),
            first_compile=first_compile,
            hub=self.source.hub,
        )
        for attempt in self.attempts:
            if attempt.stage == "trial":
                logger.info("%s: %s", self.source.name, attempt)
        failed = report.fallbacks
        if failed:
            warnings.warn(
                f"awq_autoselect loaded {self.source.name} with {kernel} instead of {failed[0].kernel}: "
                + "; ".join(str(a) for a in failed),
                FallbackWarning,
                stacklevel=4,
            )
        if kernel is Kernel.GEMM_TORCH:
            logger.info("using the slow torch dequantize path (gemm_torch) for %s", info.path)
        return LoadResult(model, report)


def load_dense_baseline(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    revision: str | None = None,
) -> LoadResult:
    """The same model with every quantized layer replaced by a dense ``nn.Linear`` of dequantized weights.

    The fp16 baseline for benchmarks: identical shapes and numerics, no int4 kernel, the same generation config.
    ``path`` and ``revision`` as for :func:`load_quantized_auto` (a local directory or a Hub ID).
    """
    import torch

    from awq_autoselect.kernels.gemm import TorchGEMMLinear, dequantize_gemm  # imports AutoAWQ first

    started = time.perf_counter()
    dev = resolve_device(device)  # before a download
    source = resolve_checkpoint(path, revision=revision)
    info = read_checkpoint(source)
    generation = checkpoint_generation_config(info)
    dense_dtype = dtype or (torch.float16 if dev.type == "cuda" else torch.float32)
    conversions: list[str] = []
    model = build_model(
        info,
        Kernel.GEMM_TORCH,
        dev,
        dense_dtype,
        fused=False,
        max_seq_len=None,
        trust_remote_code=False,
        conversions=conversions,
        generation_config=generation.config,
    )
    replaced = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, TorchGEMMLinear):
                weight = dequantize_gemm(child.qweight, child.qzeros, child.scales, child.group_size)
                linear = torch.nn.Linear(
                    child.in_features, child.out_features, bias=child.bias is not None, device=dev, dtype=dense_dtype
                )
                with torch.no_grad():
                    linear.weight.copy_(weight.t().to(dense_dtype))
                    if child.bias is not None:
                        linear.bias.copy_(child.bias.to(dense_dtype))
                setattr(parent, child_name, linear)
                replaced += 1
    _release(dev)
    conversions.append(f"{replaced} quantized layers dequantized to dense {dense_dtype} nn.Linear")
    report = LoadReport(
        path=str(info.path),
        requested="fp16" if dense_dtype == torch.float16 else str(dense_dtype).replace("torch.", ""),
        kernel=None,
        device=str(dev),
        dtype=str(dense_dtype).replace("torch.", ""),
        fused=False,
        checkpoint_layout=info.layout,
        loaded_layout=None,
        conversions=tuple(conversions),
        attempts=(),
        probe=None,
        seconds=time.perf_counter() - started,
        generation_config_source=generation.source,
        hub=source.hub,
    )
    return LoadResult(model, report)
