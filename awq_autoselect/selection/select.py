"""Choose the AutoAWQ kernel version for a checkpoint, a machine and a workload, keeping every reason.

:func:`select_awq_version` resolves what it is asked about (:mod:`.inputs`), judges every kernel of the catalogue
(:mod:`.checks`), applies the measurements it is given or the trial cache holds (:mod:`.measurements`), then ranks:
viable kernels by their catalogue priority for the workload's :class:`~awq_autoselect.workload.Regime`, ties going
to the kernel that needs no layout conversion, then to catalogue order; measured kernels before the others, by the
modeled time of the workload's request, a margin within the measured noise being a tie that the published rank
breaks (:mod:`awq_autoselect.ranking`). docs/selection.md explains the policy and its sources.

Invariant: nothing is chosen that the hardware or the installed modules cannot run, and every rejected kernel keeps
the reasons it was rejected for. Selection never starts a trial and imports neither torch nor awq: detection and
the environment probe it falls back on do, inside their own functions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from awq_autoselect.capability import CapabilityLike
from awq_autoselect.catalogue import CATALOGUE, Kernel, parse_kernel
from awq_autoselect.checkpoint import CheckpointInfo, QuantConfig
from awq_autoselect.environment import Environment, probe_environment
from awq_autoselect.errors import NoCompatibleKernelError, VersionUnavailableError
from awq_autoselect.ranking import RequestTime, order
from awq_autoselect.trials.records import TrialReport
from awq_autoselect.workload import Workload

from .checks import judge
from .inputs import CheckpointLike, checkpoint_inputs, resolve_machine
from .measurements import apply_measurements
from .records import Candidate, Selection

__all__ = ["select_awq_version"]


def __dir__() -> list[str]:
    return __all__


logger = logging.getLogger(__name__)


def select_awq_version(
    checkpoint: CheckpointLike = None,
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

    quant, info = checkpoint_inputs(checkpoint, revision)
    env = environment if environment is not None else probe_environment()
    machine = resolve_machine(capability, device, env)
    device_type, capabilities = machine.device, machine.capabilities

    notes = list(machine.notes)
    if quant is None:
        notes.append("no checkpoint given: bits, zero point, group size, layout and layer shapes were not checked")
    elif info is None or not info.layers:
        notes.append("only the quantization config was given: layer shapes were not checked")

    judged = judge(
        device=device_type,
        capabilities=capabilities,
        env=env,
        quant=quant,
        info=info,
        requested=requested,
        regime=work.regime,
    )
    measured = apply_measurements(
        judged, measurements, info, device=device_type, index=machine.gpu_index, work=work, env=env
    )
    notes.extend(measured.notes)
    candidates = _rank(measured.candidates, measured.times)
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
