"""The per-kernel checks: whether a kernel of the catalogue can run a checkpoint here, and if not, every reason.

Every kernel of :data:`~awq_autoselect.catalogue.CATALOGUE` is checked in two stages, as GPTQModel's kernel
classes are: the machine (device type, compute capability of every GPU the model spans, the kernel's module
in the :class:`~awq_autoselect.environment.Environment`, the torch version), then the checkpoint (bits,
zero point, group size, packed layout, layer shapes). Each check gives its reason; a kernel is viable when none
does. Then the rules that need more than one kernel's table: the zero points AutoAWQ's ExLlama repacking cannot
store (read from the checkpoint's weights, only when such a kernel is otherwise viable), and experimental kernels,
chosen only by name (docs/selection.md explains the policy and its sources).

Invariant: a check never ranks and never measures; a rejected kernel keeps every reason it was rejected for.
Imports neither torch nor awq (the zero-point count reads the weights with numpy).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from packaging.specifiers import SpecifierSet

from awq_autoselect._packages import satisfies
from awq_autoselect.capability import ComputeCapability
from awq_autoselect.catalogue import CATALOGUE, Kernel, KernelSpec, Layout
from awq_autoselect.checkpoint import CheckpointInfo, QuantConfig, QuantizedLayer, count_zero_point_zeros
from awq_autoselect.environment import Environment
from awq_autoselect.workload import Regime

from .records import Candidate, Selection

__all__ = ["checkpoint_rejections", "judge", "layout_conversion"]


def __dir__() -> list[str]:
    return __all__


logger = logging.getLogger(__name__)

_ZERO_POINT_LAYOUTS = frozenset({Layout.GEMM, Layout.GEMV, Layout.GEMV_FAST})


def judge(
    *,
    device: str,
    capabilities: tuple[ComputeCapability, ...],
    env: Environment,
    quant: QuantConfig | None,
    info: CheckpointInfo | None,
    requested: Kernel | None,
    regime: Regime,
) -> list[Candidate]:
    """Every catalogue kernel judged, in catalogue order: each kernel's checks, then the zero-point rule (with
    ``info``, the checkpoint directory read, the weights' zero points are counted) and the experimental rule (an
    experimental kernel is viable only when ``requested``).

    Raises:
        CorruptCheckpointError: the zero points were to be counted and a weights file cannot be read.
    """
    layers = info.layers if info is not None else ()
    judged = [
        _judge(
            spec,
            device=device,
            capabilities=capabilities,
            env=env,
            quant=quant,
            layers=layers,
            regime=regime,
        )
        for spec in CATALOGUE.values()
    ]
    judged = _zero_point_rule(judged, quant, info)
    return [_experimental_rule(c, requested) for c in judged]


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
