"""What :func:`~awq_autoselect.loading.load_quantized_auto` reports: every attempt, the probe, the result."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from awq_autoselect.catalogue import Kernel, Layout

if TYPE_CHECKING:
    import torch

    from awq_autoselect.hub import HubOrigin
    from awq_autoselect.selection import Selection

__all__ = [
    "Attempt",
    "FirstCompile",
    "LayerCheck",
    "LoadReport",
    "LoadResult",
    "ProbeResult",
    "StageTimes",
    "json_float",
]


@dataclass(frozen=True)
class Attempt:
    """One step of the fallback walk."""

    kernel: Kernel
    fused: bool
    # "trial" (broke in its trial), "unmeasured" (its trial was inconclusive: timeout, memory; ranked by its
    # published score, not a failure of the kernel), "skipped" (rejected before loading), "load", "probe", or "ok"
    stage: str
    ok: bool
    error_type: str | None = None
    message: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "kernel": self.kernel.value,
            "fused": self.fused,
            "stage": self.stage,
            "ok": self.ok,
            "error_type": self.error_type,
            "message": self.message,
            "seconds": round(self.seconds, 4),
        }

    def __str__(self) -> str:
        fused = " (fused)" if self.fused else ""
        if self.ok:
            return f"{self.kernel}{fused}: ok ({self.seconds:.2f} s)"
        if self.stage == "skipped":
            return f"{self.kernel}{fused}: not tried: {self.message}"
        if self.stage == "trial":
            return f"{self.kernel}{fused}: not loaded: {self.message}"
        if self.stage == "unmeasured":
            return f"{self.kernel}{fused}: not measured: {self.message}"
        error = f"{self.error_type}: " if self.error_type else ""
        return f"{self.kernel}{fused}: failed at {self.stage}: {error}{self.message}"


@dataclass(frozen=True)
class LayerCheck:
    """One quantized layer's output compared with ``x @ dequantize(W).T + b`` computed in float32."""

    name: str
    rows: int
    rel_error: float
    max_abs_error: float
    finite: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "rows": self.rows,
            "rel_error": json_float(self.rel_error),
            "max_abs_error": json_float(self.max_abs_error),
            "finite": self.finite,
        }


@dataclass(frozen=True)
class ProbeResult:
    """The numeric check run after loading."""

    ok: bool
    tolerance: float
    checks: tuple[LayerCheck, ...]
    logits_finite: bool
    message: str

    @property
    def max_rel_error(self) -> float:
        return max((c.rel_error for c in self.checks), default=0.0)

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "tolerance": self.tolerance,
            "max_rel_error": json_float(self.max_rel_error),
            "logits_finite": self.logits_finite,
            "message": self.message,
            "checks": [c.to_dict() for c in self.checks],
        }


@dataclass(frozen=True)
class StageTimes:
    """Wall seconds each stage of a load took. The stages do not overlap: their sum is at most the load's
    ``seconds``; the rest (installing fast decode, freeing a failed attempt's memory) belongs to none."""

    resolve: float  # arguments, checkpoint headers, device, kernel modules, selection (zero-point count included)
    trials: float  # kernels run in child processes (cache lookups included: near 0 when every answer was cached)
    load: float  # AutoAWQ's from_quantized and the kernel's layers, every attempt, conversion excluded
    conversion: float  # packed layouts converted in memory, torch_int4's repack and fusion
    probe: float  # the numeric probe, every attempt

    @property
    def total(self) -> float:
        return self.resolve + self.trials + self.load + self.conversion + self.probe

    def to_dict(self) -> dict[str, float]:
        return {name: round(getattr(self, name), 4) for name in _STAGES}

    def __str__(self) -> str:
        return ", ".join(f"{name} {getattr(self, name):.2f} s" for name in _STAGES)


_STAGES = ("resolve", "trials", "load", "conversion", "probe")


class FirstCompile:
    """How long the model's first ``generate()`` spent compiling its decode step or capturing its CUDA graph.

    The load cannot know it: the first call compiles (tens of seconds for a 7B model on CUDA), so the model's fast
    decode path fills this in then (:class:`~awq_autoselect.decode.fast.FastGenerate`). It is the one part of a
    :class:`LoadReport` that changes after the load: :attr:`seconds` is None until that call.

    Args:
        expected: whether the decode path compiles or captures at all (plain eager steps do neither).
    """

    def __init__(self, expected: bool = False) -> None:
        self.expected = expected
        self.seconds: float | None = None

    def note(self, seconds: float) -> None:
        """Record the first compile's seconds (later calls are ignored)."""
        if self.seconds is None:
            self.seconds = float(seconds)

    def __repr__(self) -> str:
        return f"FirstCompile(expected={self.expected}, seconds={self.seconds})"

    def __str__(self) -> str:
        if self.seconds is not None:
            return f"{self.seconds:.2f} s, at the first generate()"
        return "at the first generate() (not run yet)" if self.expected else "none (eager decode steps)"


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_quantized_auto` did: the request, the result, every attempt and conversion."""

    path: str
    requested: str
    kernel: Kernel | None
    device: str
    dtype: str
    fused: bool
    checkpoint_layout: Layout
    loaded_layout: Layout | None
    conversions: tuple[str, ...]
    attempts: tuple[Attempt, ...]
    probe: ProbeResult | None
    selection: Selection | None = field(default=None, compare=False)
    seconds: float = 0.0
    decode: str = "transformers"  # how model.generate decodes: "compile", "graph", "eager" or "transformers"
    # where model.generation_config came from: "generation_config.json", or "config.json" when the checkpoint has
    # no (readable) generation_config.json, as transformers' from_pretrained builds it
    generation_config_source: str = "config.json"
    stages: StageTimes | None = None  # None for a report built by hand
    first_compile: FirstCompile = field(default_factory=FirstCompile, compare=False, repr=False)
    hub: HubOrigin | None = None  # the Hugging Face Hub model ``path`` is the local snapshot of, if any

    def __repr__(self) -> str:
        # The full account is str(report) / explain(); a repr stays one short line.
        kernel = self.kernel.value if self.kernel else None
        probe = None if self.probe is None else self.probe.ok
        return (
            f"LoadReport(kernel={kernel!r}, device={self.device!r}, requested={self.requested!r}, "
            f"fell_back={self.fell_back}, probe_ok={probe}, decode={self.decode!r})"
        )

    def explain(self) -> str:
        """The full account (the same as ``str(report)``)."""
        return str(self)

    @property
    def fallbacks(self) -> tuple[Attempt, ...]:
        """The failed attempts that make this load a fallback: the requested kernel, or a chosen one, not used.

        With ``requested == "auto"``, kernels that failed their trial were never chosen: not a fallback. A trial
        that was inconclusive (``"unmeasured"``) is never one: the kernel kept its place.
        """
        return tuple(
            a
            for a in self.attempts
            if not a.ok and a.stage != "unmeasured" and not (self.requested == "auto" and a.stage == "trial")
        )

    @property
    def fell_back(self) -> bool:
        """True when the kernel used is not the one requested, or a chosen kernel failed to load or pass the probe."""
        return bool(self.fallbacks)

    def to_dict(self) -> dict[str, object]:
        return {
            "schema": "awq-autoselect.load/1",
            "path": self.path,
            "requested": self.requested,
            "kernel": self.kernel.value if self.kernel else None,
            "device": self.device,
            "dtype": self.dtype,
            "fused": self.fused,
            "checkpoint_layout": self.checkpoint_layout.value,
            "loaded_layout": self.loaded_layout.value if self.loaded_layout else None,
            "conversions": list(self.conversions),
            "fell_back": self.fell_back,
            "attempts": [a.to_dict() for a in self.attempts],
            "probe": self.probe.to_dict() if self.probe else None,
            "selection": self.selection.to_dict() if self.selection else None,
            "seconds": round(self.seconds, 3),
            "decode": self.decode,
            "generation_config_source": self.generation_config_source,
            "stages": None if self.stages is None else self.stages.to_dict(),
            "first_compile_seconds": self.first_compile.seconds,
            "hub": None if self.hub is None else self.hub.to_dict(),
        }

    def __str__(self) -> str:
        lines = [
            f"checkpoint: {self.path} ({self.checkpoint_layout.value} layout)",
            f"requested:  {self.requested}",
            f"loaded:     {self.kernel.value if self.kernel else '-'} on {self.device} ({self.dtype}"
            f"{', fused layers' if self.fused else ''}) in {self.seconds:.1f} s",
        ]
        if self.hub is not None:
            lines.insert(1, f"from hub:   {self.hub}")
        lines += [f"conversion: {c}" for c in self.conversions]
        lines.append("attempts:")
        lines += [f"  - {a}" for a in self.attempts]
        if self.probe is not None:
            lines.append(f"probe:      {'ok' if self.probe.ok else 'FAILED'}: {self.probe.message}")
        lines.append(f"generate:   {_DECODE_WORDS.get(self.decode, self.decode)}")
        lines.append(f"generation: settings from {self.generation_config_source}")
        if self.stages is not None:
            lines.append(f"stages:     {self.stages}; first compile: {self.first_compile}")
        if self.selection is not None:
            measured = [c for c in self.selection.candidates if c.measured_ms is not None]
            if measured:
                lines.append("measured here (trials in child processes):")
                lines += [
                    f"  - {c.kernel.value}: {c.measured_ms:.2f} ms per request of the workload"
                    + (f" (spread {c.spread_ms:.2f})" if c.spread_ms is not None else "")
                    + (f"; {c.standing()}" if c.standing() else "")
                    for c in measured
                ]
        return "\n".join(lines)


class LoadResult(NamedTuple):
    """``model, report = load_quantized_auto(path)``. ``model`` is AutoAWQ's model wrapper (``.generate()``,
    ``.model`` is the Hugging Face model)."""

    model: torch.nn.Module
    report: LoadReport


_DECODE_WORDS = {
    "compile": "fast: static KV cache, decode step compiled (torch.compile) and replayed from a CUDA graph",
    "graph": "fast: static KV cache, decode step replayed from a CUDA graph",
    "eager": "static KV cache, eager decode steps",
    "transformers": "transformers' own generate",
}


def json_float(value: float) -> float | str:
    """A float for JSON: finite values as they are, ``inf``/``nan`` as text."""
    return value if math.isfinite(value) else str(value)
