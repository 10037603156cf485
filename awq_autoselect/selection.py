"""Choose the AutoAWQ kernel version for a checkpoint, a machine and a workload, keeping every reason.

Every kernel of :data:`~awq_autoselect.catalogue.CATALOGUE` is checked in two stages, as GPTQModel's kernel
classes are: the machine (device type, compute capability of every GPU the model spans, the kernel's module
in the :class:`~awq_autoselect.environment.Environment`, the torch version), then the checkpoint (bits,
zero point, group size, packed layout, layer shapes). Each check returns ``(ok, reason)``; a kernel is viable
when every check passes. Viable kernels are ranked by their catalogue priority for the workload's
:class:`~awq_autoselect.workload.Regime`, ties going to the kernel that needs no layout conversion, then to
catalogue order. Nothing is chosen that the hardware or the installed modules cannot run, and every rejected
kernel keeps the reasons it was rejected for (docs/selection.md explains the policy and its sources).

Measured trials, where given (or cached on this machine), rank the kernels that passed them before the others,
by the modeled time of the workload's request; a margin within the measured noise is a tie that the published
rank breaks (:mod:`awq_autoselect.ranking`). Measurements come in as data: this module never starts a trial
(:func:`awq_autoselect.planning.plan` does, then selects again).

Selection itself imports neither torch nor awq: detection and the environment probe it falls back on do,
inside their own functions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import cast

from packaging.specifiers import SpecifierSet

from ._packages import satisfies
from .capability import CapabilityLike, ComputeCapability
from .catalogue import CATALOGUE, Kernel, KernelSpec, Layout, parse_kernel
from .checkpoint import CheckpointInfo, QuantConfig, QuantizedLayer, count_zero_point_zeros, read_checkpoint
from .choice import Candidate, Selection
from .devices import parse_device
from .environment import Environment, probe_environment
from .errors import InvalidArgumentError, InvalidDeviceSpecError, NoCompatibleKernelError, VersionUnavailableError
from .hub import resolve_checkpoint
from .ranking import RequestTime, order, request_time
from .trials.records import TrialReport
from .workload import BATCH_THRESHOLD, Regime, Workload

__all__ = [
    "BATCH_THRESHOLD",
    "Candidate",
    "Selection",
    "Workload",
    "checkpoint_rejections",
    "layout_conversion",
    "select_awq_version",
]


def __dir__() -> list[str]:
    return __all__


logger = logging.getLogger(__name__)

_ZERO_POINT_LAYOUTS = frozenset({Layout.GEMM, Layout.GEMV, Layout.GEMV_FAST})


# --- inputs ------------------------------------------------------------------------------------------------


def _checkpoint_inputs(
    checkpoint: str | os.PathLike[str] | QuantConfig | Mapping[str, object] | CheckpointInfo | None,
    revision: str | None,
) -> tuple[QuantConfig | None, CheckpointInfo | None]:
    if revision is not None and not isinstance(checkpoint, (str, os.PathLike)):
        given = "no checkpoint" if checkpoint is None else f"a {type(checkpoint).__name__}"
        raise InvalidArgumentError(
            f"revision={revision!r} was given with {given}: a revision selects a version of a Hugging Face Hub "
            "model; pass its ID as the checkpoint, or leave revision out"
        )
    if checkpoint is None:
        return None, None
    if isinstance(checkpoint, CheckpointInfo):
        return checkpoint.quant, checkpoint
    if isinstance(checkpoint, QuantConfig):
        return checkpoint, None
    if isinstance(checkpoint, Mapping):
        nested = checkpoint.get("quantization_config")
        if isinstance(nested, Mapping):
            return QuantConfig.from_dict(nested), None
        return QuantConfig.from_dict(checkpoint), None
    info = read_checkpoint(resolve_checkpoint(checkpoint, revision=revision))
    return info.quant, info


def _is_single_capability(value: object) -> bool:
    if isinstance(value, (ComputeCapability, str, float, int)):
        return True
    return isinstance(value, tuple) and len(value) == 2 and all(type(v) is int for v in value)


def _parse_capabilities(
    capability: CapabilityLike | Sequence[CapabilityLike],
) -> tuple[ComputeCapability, ...]:
    items: Sequence[CapabilityLike] = (
        [cast("CapabilityLike", capability)]
        if _is_single_capability(capability)
        else cast("Sequence[CapabilityLike]", capability)
    )
    parsed: list[ComputeCapability] = []
    for item in items:
        cc = ComputeCapability.parse(item)
        if cc not in parsed:
            parsed.append(cc)
    return tuple(parsed)


def _detect(index: int | None) -> tuple[bool, tuple[ComputeCapability, ...], tuple[str, ...]]:
    """(a GPU is visible, the capabilities of the GPUs the model would use, notes)."""
    from .hardware import detect_compute_capability

    detection = detect_compute_capability()
    notes: list[str] = []
    if not detection.gpus:
        reasons = "; ".join(detection.reasons) or "no source answered"
        notes.append(f"no GPU detected ({reasons})")
        return False, (), tuple(notes)
    if any(gpu.capability is None for gpu in detection.gpus):
        notes.append(f"a GPU's compute capability could not be read ({detection}): pass capability=")
    if index is not None:
        if index >= len(detection.gpus):
            raise InvalidDeviceSpecError(
                f"device 'cuda:{index}': this process sees {len(detection.gpus)} GPU(s) (cuda:0 to "
                f"cuda:{len(detection.gpus) - 1}); pick one of those or check CUDA_VISIBLE_DEVICES"
            )
        known = detection.gpus[index].capability
        return True, ((known,) if known is not None else ()), tuple(notes)
    capabilities = detection.capabilities
    if len(capabilities) > 1:
        notes.append(
            "GPUs of different compute capabilities are visible ("
            + ", ".join(str(cc) for cc in capabilities)
            + "): only kernels that run on all of them are considered; pass device='cuda:N' for one GPU"
        )
    return True, capabilities, tuple(notes)


# --- checks ------------------------------------------------------------------------------------------------


def layout_conversion(source: Layout, target: Layout, *, zero_point: bool) -> tuple[bool, str]:
    """Whether weights packed in ``source`` can be repacked into ``target`` exactly, and if not, why.

    The zero-point layouts (GEMM, GEMV, GEMV_fast) convert into each other; Marlin (symmetric) converts into
    any of them with a constant zero point of 8; only symmetric weights convert into Marlin, which stores no
    zero points.
    """
    if source is target:
        return True, ""
    if target is Layout.MARLIN:
        if zero_point:
            return False, (
                f"{source.value} weights with zero points (asymmetric) cannot be repacked into Marlin, which stores "
                "none: re-quantize with zero_point=False and version='marlin'"
            )
        return True, ""
    if source is Layout.MARLIN or (source in _ZERO_POINT_LAYOUTS and target in _ZERO_POINT_LAYOUTS):
        return True, ""
    return False, f"no conversion from the {source.value} layout to {target.value}"  # pragma: no cover - future


def _range_text(spec: SpecifierSet) -> str:
    """``>= 2.6`` for ``SpecifierSet(">=2.6")`` (readable in a sentence)."""
    return ", ".join(f"{item.operator} {item.version}" for item in sorted(spec, key=str))


def _machine_checks(
    spec: KernelSpec,
    device: str,
    capabilities: tuple[ComputeCapability, ...],
    env: Environment,
) -> list[str]:
    reasons: list[str] = []
    if device not in spec.devices:
        reasons.append(f"runs on {', '.join(sorted(spec.devices))} only; the device is {device}")
        return reasons
    ok, why = env.supports_device(device)
    if not ok:
        reasons.append(why)
        return reasons
    if device == "cuda" and (spec.min_capability is not None or spec.sass_targets is not None):
        if not capabilities:
            reasons.append("the GPU's compute capability is unknown: pass capability=, e.g. '8.6'")
        for cc in capabilities:
            runs, why = spec.runs_on(cc)
            if not runs:
                where = f"GPU {cc} ({cc.architecture}): " if len(capabilities) > 1 else ""
                reasons.append(where + why)
    if spec.extension is not None:
        status = env.module(spec.extension)
        if not status.ok:
            named = status.reason if status.reason.startswith(spec.extension) else f"{spec.extension}: {status.reason}"
            reasons.append(named)
    if spec.torch is not None and env.torch_version is not None and not satisfies(env.torch_version, spec.torch):
        reasons.append(f"needs torch {_range_text(spec.torch)}; this is torch {env.torch_version}")
    missing = [op for op in spec.ops_for(device) if op not in env.torch_ops]
    if missing:
        int4 = env.modules.get("torch.int4pack")
        why = f" ({int4.reason})" if int4 is not None and not int4.ok else ""
        upgrade = f"upgrade torch to {_range_text(spec.torch)}" if spec.torch is not None else "upgrade torch"
        reasons.append(f"torch {env.torch_version} lacks aten.{', aten.'.join(missing)}{why}: {upgrade}")
    return reasons


def _group_sizes_text(sizes: frozenset[int]) -> str:
    return ", ".join("per-channel (-1)" if g == -1 else str(g) for g in sorted(sizes, key=lambda g: (g != -1, g)))


def _checkpoint_checks(
    spec: KernelSpec, quant: QuantConfig, layers: tuple[QuantizedLayer, ...]
) -> tuple[list[str], list[str], tuple[Layout, Layout] | None]:
    reasons: list[str] = []
    notes: list[str] = []
    if quant.bits not in spec.bits:
        bits = ", ".join(str(b) for b in sorted(spec.bits))
        reasons.append(f"runs {bits}-bit weights only; the checkpoint has {quant.bits}-bit weights")

    if quant.zero_point and True not in spec.zero_point:
        reasons.append(
            "needs a symmetric checkpoint (zero_point=False): it stores no zero points, and this checkpoint is "
            "asymmetric; re-quantize with zero_point=False and version='marlin' to use it"
        )
    elif not quant.zero_point and False not in spec.zero_point:
        # A zero-point kernel represents symmetric weights exactly with a constant zero point of 8.
        notes.append("symmetric weights run with a constant zero point of 8 (exact)")

    if spec.group_sizes is not None and quant.group_size not in spec.group_sizes:
        effective = {quant.group_size_for(layer.in_features) for layer in layers}
        if quant.group_size == -1 and layers and effective <= spec.group_sizes:
            notes.append(f"per-channel groups equal in_features here ({', '.join(map(str, sorted(effective)))})")
        else:
            size = "per-channel (-1)" if quant.group_size == -1 else str(quant.group_size)
            reasons.append(
                f"group size {size} is not supported (runs {_group_sizes_text(spec.group_sizes)}): "
                "re-quantize with q_group_size=128"
            )

    conversion: tuple[Layout, Layout] | None = None
    if quant.layout is not spec.layout:
        ok, why = layout_conversion(quant.layout, spec.layout, zero_point=quant.zero_point)
        if ok:
            conversion = (quant.layout, spec.layout)
            notes.append(f"converts {quant.layout.value} -> {spec.layout.value} at load, exact")
        elif not (spec.layout is Layout.MARLIN and quant.zero_point):  # already said by the zero-point check
            reasons.append(why)

    m_in, m_out = spec.in_features_multiple, spec.out_features_multiple
    if m_in > 1 or m_out > 1:
        need = " and ".join(
            text
            for text, multiple in ((f"in_features % {m_in} == 0", m_in), (f"out_features % {m_out} == 0", m_out))
            if multiple > 1
        )
        if not layers:
            notes.append(f"layer shapes not checked (no checkpoint directory): needs {need}")
        else:
            bad = [layer for layer in layers if layer.in_features % m_in or layer.out_features % m_out]
            if bad:
                first = bad[0]
                reasons.append(
                    f"needs {need}; {len(bad)} of {len(layers)} quantized layers do not fit, e.g. {first.prefix} "
                    f"(in_features {first.in_features}, out_features {first.out_features})"
                )
    return reasons, notes, conversion


def _judge(
    spec: KernelSpec,
    *,
    device: str,
    capabilities: tuple[ComputeCapability, ...],
    env: Environment,
    quant: QuantConfig | None,
    layers: tuple[QuantizedLayer, ...],
    regime: Regime,
) -> Candidate:
    reasons = _machine_checks(spec, device, capabilities, env)
    notes: list[str] = []
    conversion: tuple[Layout, Layout] | None = None
    if quant is not None:
        checkpoint_reasons, checkpoint_notes, conversion = _checkpoint_checks(spec, quant, layers)
        reasons.extend(checkpoint_reasons)
        notes.extend(checkpoint_notes)
    viable = not reasons
    if not viable:
        notes.clear()  # conversions and caveats of a kernel that will not run are noise
    else:
        if spec.silent_failure:
            notes.append(f"silent-failure risk: {spec.silent_failure}")
        notes.extend(spec.caveats)
        if spec.fusable and device == "cuda" and "flash_attn" in env.modules and not env.available("flash_attn"):
            notes.append(f"AutoAWQ's fused layers also need flash-attn >= 2.6: {env.module('flash_attn').reason}")
    return Candidate(
        kernel=spec.kernel,
        viable=viable,
        reasons=tuple(reasons),
        score=spec.priority.of(regime),
        notes=tuple(notes),
        conversion=conversion,
    )


_ZERO_MINUS_ONE = (
    "AutoAWQ repacks this kernel's zero points as zero - 1 (awq/utils/packing_utils.py, unpack_reorder_pack): a "
    "zero point of 0 becomes -1, which borrows from the next zero point of its packed word, so the layer computes "
    "wrong numbers"
)


def _zero_point_rejection(info: CheckpointInfo) -> str | None:
    """Why a kernel with :attr:`KernelSpec.zero_minus_one` cannot run ``info``'s weights, or ``None`` when it can
    (no stored zero point is 0). Reads the qzeros once per checkpoint and process; never raises ImportError (a
    count that cannot be made rejects the kernel: its failure is silent)."""
    try:
        count = count_zero_point_zeros(info)
    except ImportError:
        return f"{_ZERO_MINUS_ONE} where a zero point is 0, and numpy (to check them) is missing: pip install numpy"
    logger.debug("zero points of %s: %s", info.path, count)
    if not count.zeros:
        return None
    return f"{_ZERO_MINUS_ONE}; in this checkpoint {count}: use another kernel"


def _zero_point_rule(
    candidates: list[Candidate], quant: QuantConfig | None, info: CheckpointInfo | None
) -> list[Candidate]:
    """Reject the viable kernels that cannot store a zero point of 0 when the checkpoint has one; the qzeros are
    read only when such a kernel is otherwise viable. Without a checkpoint directory, say what was not checked."""
    exposed = [c for c in candidates if c.viable and c.spec.zero_minus_one]
    if not exposed or quant is None:
        return candidates
    if info is None:
        note = f"zero points not checked (no checkpoint directory); {_ZERO_MINUS_ONE} where a zero point is 0"
        return [replace(c, notes=(*c.notes, note)) if c in exposed else c for c in candidates]
    reason = _zero_point_rejection(info)
    if reason is None:
        return candidates
    return [replace(c, viable=False, reasons=(reason,), notes=()) if c in exposed else c for c in candidates]


def _experimental_rule(candidate: Candidate, requested: Kernel | None) -> Candidate:
    """An experimental kernel (:attr:`KernelSpec.experimental`) runs only when asked for by name."""
    why = candidate.spec.experimental
    if why is None or not candidate.viable or candidate.kernel is requested:
        return candidate
    reason = f"experimental, not chosen automatically: {why}; ask for it by name (version='{candidate.kernel.value}')"
    return replace(candidate, viable=False, reasons=(reason,), notes=())


def checkpoint_rejections(selection: Selection, info: CheckpointInfo) -> dict[Kernel, str]:
    """The kernels of ``selection.chain`` that the checks needing ``info``'s weights files reject, with why: those
    of a selection planned without the checkpoint directory (zero points); none for one made with it."""
    candidates = _zero_point_rule(list(selection.candidates), info.quant, info)
    return {c.kernel: "; ".join(c.reasons) for c in candidates if c.kernel in selection.chain and not c.viable}


def _published(candidate: Candidate) -> tuple[int, bool, int]:
    """The published order: catalogue priority, then no layout conversion, then catalogue order."""
    return (-candidate.score, candidate.conversion is not None, _CATALOGUE_ORDER[candidate.kernel])


_CATALOGUE_ORDER = {kernel: index for index, kernel in enumerate(CATALOGUE)}


def _rank(candidates: list[Candidate], times: Mapping[Kernel, RequestTime] | None = None) -> tuple[Candidate, ...]:
    """Viable first: the measured ones by modeled time (a margin within noise is a tie the published rank breaks,
    :func:`awq_autoselect.ranking.order`), then the others by published rank; then the rejected."""
    times = times or {}
    by_kernel = {c.kernel: c for c in candidates}
    measured = [c.kernel for c in candidates if c.viable and c.kernel in times]
    placed, ties = order(measured, times.__getitem__, lambda k: _published(by_kernel[k]))
    if placed:
        winner = times[placed[0]]
        for kernel in placed:
            own = times[kernel]
            by_kernel[kernel] = replace(
                by_kernel[kernel],
                measured_ms=own.ms,
                spread_ms=own.spread,
                margin_ms=own.ms - winner.ms,
                noise_ms=(own.spread + winner.spread) / 2,
                tie=ties[kernel],
            )
    unmeasured = sorted((c for c in candidates if c.viable and c.kernel not in times), key=_published)
    rejected = sorted((c for c in candidates if not c.viable), key=_published)
    return (*(by_kernel[k] for k in placed), *unmeasured, *rejected)


def _apply_measurements(
    candidate: Candidate, report: TrialReport, work: Workload, device: str, *, timings: bool = True
) -> tuple[Candidate, RequestTime | None]:
    """A candidate with its trial: rejected with the trial's reason when broken (saying so when the verdict came
    from the cache); with its modeled request time when it ran (unless ``timings`` is off: then ranked by its
    published score); left as it is, with a note, when its trial was inconclusive."""
    result = report.result(candidate.kernel)
    if result is None or not candidate.viable:
        return candidate, None
    if result.inconclusive:
        note = f"its trial was inconclusive, ranked by its published score for this call (not cached): {result.reason}"
        return replace(candidate, notes=(*candidate.notes, note)), None
    if not result.ok:
        cached = report.cache_note(candidate.kernel)
        reason = f"measured broken on this machine (trial in a child process): {result.reason}"
        return replace(candidate, viable=False, reasons=(reason + (f" {cached}" if cached else ""),), notes=()), None
    timed = request_time(result, work, device) if timings else None
    if timed is None:
        return candidate, None
    text = (
        f"{timed.step_ms:.3f} ms per decode step ({work.decode_rows} row(s), {timed.mode.value}) x {work.new_tokens} "
        f"+ {timed.prefill_ms:.2f} ms prefill ({work.prefill_rows} rows) for the quantized layers, "
        f"{timed.low:.2f}-{timed.high:.2f} ms over the rounds; " + result.layer_times(work.decode_rows, timed.mode)
    )
    if result.host is not None:
        text += f"; host while measuring: {result.host.describe()}"
    cached = report.cache_note(candidate.kernel)
    if cached:
        text += f" {cached}"
    notes = candidate.notes + ((f"trial note: {result.reason}",) if result.reason else ())
    if result.thin:
        notes += (f"thin measurement: {result.thin}",)
    return replace(candidate, measurement=text, notes=notes), timed


def _measurements(
    measurements: TrialReport | bool | None,
    info: CheckpointInfo | None,
    candidates: Sequence[Candidate],
    *,
    device: str,
    index: int | None,
    work: Workload,
    env: Environment,
) -> TrialReport | None:
    """The trials to rank by: given, looked up in the cache (this machine only), or none."""
    if isinstance(measurements, TrialReport):
        return measurements
    if measurements is False or info is None or not info.layers or env.assumed or device not in ("cuda", "cpu"):
        return None
    from .trials.cache import cached_trials

    viable = [c.kernel for c in candidates if c.viable]
    where = "cpu" if device == "cpu" else f"cuda:{index or 0}"
    try:
        return cached_trials(info, viable, device=where, rows=(work.decode_rows, work.prefill_rows))
    except InvalidArgumentError:  # a bad AWQ_AUTOSELECT_* value: refused, never read as "no cache"
        raise
    except Exception as exc:  # the cache is an optimisation: a problem with it must not stop a selection
        logger.warning("trial cache lookup failed: %s", exc)
        return None


# --- entry point -------------------------------------------------------------------------------------------


def select_awq_version(
    checkpoint: str | os.PathLike[str] | QuantConfig | Mapping[str, object] | CheckpointInfo | None = None,
    *,
    version: str | Kernel = "auto",
    capability: CapabilityLike | Sequence[CapabilityLike] | None = None,
    device: str | None = None,
    environment: Environment | None = None,
    workload: Workload | None = None,
    batch_size: int | None = None,
    prompt_tokens: int | None = None,
    new_tokens: int | None = None,
    strict: bool = True,
    measurements: TrialReport | bool | None = None,
    revision: str | None = None,
) -> Selection:
    """Choose the kernel version for a checkpoint on this (or a planned) machine, with every reason.

    Args:
        checkpoint: a checkpoint directory (read with :func:`~awq_autoselect.checkpoint.read_checkpoint`,
            so layer shapes are checked too), a Hugging Face Hub model ID (``"org/model-AWQ"``, downloaded or found
            in the cache: :func:`~awq_autoselect.hub.resolve_checkpoint`), a
            :class:`~awq_autoselect.checkpoint.CheckpointInfo`, a :class:`~awq_autoselect.checkpoint.QuantConfig`,
            a ``quantization_config`` dict (or a whole ``config.json`` dict), or ``None`` to rank kernels for the
            machine alone.
        version: ``"auto"``, or a kernel version to validate and put first.
        capability: the compute capability of the GPU, or of every GPU the model is spread over (a kernel
            must run on all of them). Default: detected (:func:`~awq_autoselect.hardware.detect_compute_capability`).
        device: ``"cuda"``, ``"cuda:1"``, ``"cpu"``, ``"xpu"``, ``"mps"``. Default: ``"cuda"`` when a GPU is
            detected (or a capability given) and torch can use it, else ``"cpu"``.
        environment: which kernel modules import. Default: :func:`~awq_autoselect.environment.probe_environment`;
            pass :meth:`Environment.assume(...) <awq_autoselect.environment.Environment.assume>` to plan for
            another machine.
        workload: the workload to rank for; ``batch_size``, ``prompt_tokens`` and ``new_tokens`` override
            its fields (or build one from the defaults).
        strict: with an explicit ``version`` that is not viable, raise (``True``) or return the automatic
            choice with the rejection recorded in :attr:`Selection.request_rejected` (``False``).
        measurements: trials to rank by (:func:`awq_autoselect.trials.run_trials`); ``None`` (default): what the
            trial cache holds for this checkpoint on this machine (never for a planned environment); ``False``:
            rank by the published priorities only. A kernel measured broken is rejected with the trial's reason;
            measured kernels rank before unmeasured ones, by the modeled time of the workload's request, except that
            two whose times differ by no more than the mean of their spreads are tied, and the published rank
            decides between them (:attr:`Candidate.tie`, :attr:`Selection.tie`).
        revision: for a Hub ID, the branch, tag or commit hash (default ``main``); an error with anything else.

    Returns:
        A :class:`Selection`. With an explicit viable version, ``chain[0]`` is that version and the rest of
        the chain is the automatic ranking (for a caller that allows falling back).

    Raises:
        UnknownVersionError: ``version`` is not a catalogue name.
        VersionUnavailableError: ``strict`` and the requested version cannot run here; the message lists every
            reason and the viable alternatives.
        NoCompatibleKernelError: no kernel at all can run this checkpoint here (``reasons`` has every one's).
        InvalidCapabilityError: ``capability`` cannot be parsed.
        InvalidDeviceSpecError: ``device`` is malformed, or names a GPU index this process does not see.
        InvalidArgumentError: a workload size is out of range, an ``AWQ_AUTOSELECT_*`` variable holds a bad value
            (read when the trial cache is looked up), or ``revision`` with a local directory or a config.
        CheckpointError: (and subclasses) the checkpoint path or config is not a usable AWQ checkpoint, or the Hub
            model cannot be had (not found, gated, not cached offline, no safetensors).
    """
    requested: Kernel | None = None
    if isinstance(version, Kernel) or str(version).strip().lower() != "auto":
        requested = parse_kernel(version)

    work = workload or Workload()
    work = replace(
        work,
        batch_size=work.batch_size if batch_size is None else batch_size,
        prompt_tokens=work.prompt_tokens if prompt_tokens is None else prompt_tokens,
        new_tokens=work.new_tokens if new_tokens is None else new_tokens,
    )

    quant, info = _checkpoint_inputs(checkpoint, revision)
    layers = info.layers if info is not None else ()
    env = environment if environment is not None else probe_environment()

    notes: list[str] = []
    parsed = parse_device(device) if device is not None else None
    device_type, device_index = (parsed.type, parsed.index) if parsed is not None else (None, None)
    capabilities: tuple[ComputeCapability, ...]
    if capability is not None:
        capabilities = _parse_capabilities(capability)
        if device_type is None:
            device_type = "cuda" if capabilities else "cpu"
    elif device_type not in (None, "cuda"):
        capabilities = ()
    else:
        found, capabilities, detect_notes = _detect(device_index)
        if device_type is None:
            gpu_ok, why = env.supports_device("cuda")
            if found and not gpu_ok:
                notes.append(f"a GPU was detected but {why}; selecting for the CPU")
                device_type = "cpu"
            else:
                device_type = "cuda" if found else "cpu"
        if device_type == "cuda" or not found:
            notes.extend(detect_notes)
    if device_type != "cuda":
        capabilities = ()
    if quant is None:
        notes.append("no checkpoint given: bits, zero point, group size, layout and layer shapes were not checked")
    elif not layers:
        notes.append("only the quantization config was given: layer shapes were not checked")

    regime = work.regime
    judged = [
        _judge(
            spec,
            device=device_type,
            capabilities=capabilities,
            env=env,
            quant=quant,
            layers=layers,
            regime=regime,
        )
        for spec in CATALOGUE.values()
    ]
    judged = _zero_point_rule(judged, quant, info)
    judged = [_experimental_rule(c, requested) for c in judged]
    report = _measurements(measurements, info, judged, device=device_type, index=device_index, work=work, env=env)
    times: dict[Kernel, RequestTime] = {}
    if report is not None:
        # A trial that could not finish (timeout, memory) measured nothing: ranking the others by their times would
        # put every measured kernel before it, however slow. This call ranks by the published scores instead.
        unsure = [c.kernel.value for c in judged if c.viable and c.kernel in report.inconclusive]
        applied = [_apply_measurements(c, report, work, device_type, timings=not unsure) for c in judged]
        judged = [candidate for candidate, _ in applied]
        times = {candidate.kernel: timed for candidate, timed in applied if timed is not None}
        if unsure:
            notes.append(
                f"the trials of {', '.join(unsure)} were inconclusive (see their notes): ranked by published scores "
                "for this call; nothing of that was cached"
            )
        elif times:
            mode = work.decode if device_type == "cuda" else "eager"
            notes.append(f"{len(times)} candidate(s) ranked by trials measured on this machine ({mode} decode)")
    candidates = _rank(judged, times)
    first = candidates[0]
    tie = (first.kernel, *first.tie) if first.viable and first.measured_ms is not None and first.tie else ()
    notes.extend(_standing_notes(candidates, tie))
    for candidate in candidates:
        logger.debug(
            "%s: %s (score %d) %s",
            candidate.kernel.value,
            "viable" if candidate.viable else "rejected",
            candidate.score,
            "; ".join(candidate.reasons),
        )
    chain = tuple(c.kernel for c in candidates if c.viable)

    if not chain:
        reasons = {c.kernel.value: c.reasons for c in candidates}
        where = device_type + ("" if not capabilities else " " + ", ".join(str(cc) for cc in capabilities))
        lines = [f"no AWQ kernel version can run {_describe_checkpoint(checkpoint, quant)} on {where}:"]
        lines.extend(f"  {kernel}: {'; '.join(why)}" for kernel, why in reasons.items())
        lines.append("Fix one of the reasons above (each names what is missing), or select for another device.")
        raise NoCompatibleKernelError("\n".join(lines), reasons)

    request_rejected: tuple[str, ...] = ()
    if requested is not None:
        chosen = next(c for c in candidates if c.kernel is requested)
        if chosen.viable:
            chain = (requested, *(k for k in chain if k is not requested))
        else:
            message = (
                f"AWQ version {requested.value!r} cannot run here:\n"
                + "\n".join(f"  - {reason}" for reason in chosen.reasons)
                + f"\nViable here, best first: {', '.join(k.value for k in chain)}. Use version='auto' or one of "
                "those (or let the loader fall back)."
            )
            if strict:
                raise VersionUnavailableError(message, requested.value, chosen.reasons)
            logger.info("%s", message)
            request_rejected = chosen.reasons

    return Selection(
        kernel=chain[0],
        chain=chain,
        candidates=candidates,
        requested="auto" if requested is None else requested.value,
        device=device_type,
        capabilities=capabilities,
        workload=work,
        quant=quant,
        environment_assumed=env.assumed,
        notes=tuple(notes),
        request_rejected=request_rejected,
        tie=tie,
    )


def _standing_notes(candidates: Sequence[Candidate], tie: tuple[Kernel, ...]) -> list[str]:
    """How the first place was decided: by a margin over the noise, or by the published rank in a tie."""
    measured = [c for c in candidates if c.viable and c.measured_ms is not None]
    if len(measured) < 2:
        return []
    winner = measured[0]
    if tie:
        by_kernel = {c.kernel: c for c in measured}
        spread = ", ".join(
            f"{k.value} {by_kernel[k].measured_ms or 0.0:.2f} (spread {by_kernel[k].spread_ms or 0.0:.2f})" for k in tie
        )
        return [
            f"tie (within noise) for the first place between {' and '.join(k.value for k in tie)} ({spread} ms per "
            f"request): published rank decided {winner.kernel.value}"
        ]
    second = measured[1]
    return [
        f"{winner.kernel.value} won by {second.margin_ms or 0.0:.2f} ms over {second.kernel.value} (noise "
        f"{second.noise_ms or 0.0:.2f} ms)"
    ]


def _describe_checkpoint(checkpoint: object, quant: QuantConfig | None) -> str:
    if quant is None:
        return "any checkpoint"
    where = ""
    if isinstance(checkpoint, CheckpointInfo):
        where = f" {checkpoint.path}"
    elif isinstance(checkpoint, (str, os.PathLike)):
        where = f" {Path(os.fspath(checkpoint))}"
    group = "per-channel" if quant.group_size == -1 else f"g{quant.group_size}"
    zero = "asymmetric" if quant.zero_point else "symmetric"
    return f"the checkpoint{where} ({quant.bits}-bit {quant.layout.value}, {group}, {zero})"
