"""What a selection decided and why, as records: :class:`Candidate` (one kernel judged, with its measurement,
its spread and its margin to the selected kernel) and :class:`Selection` (the choice, the chain, every candidate),
each with a text (:meth:`Selection.explain`) and a JSON form. :func:`~awq_autoselect.selection.select_awq_version`
makes them.

Imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

from awq_autoselect.capability import ComputeCapability
from awq_autoselect.catalogue import CATALOGUE, Kernel, KernelSpec, Layout, parse_kernel
from awq_autoselect.checkpoint import QuantConfig
from awq_autoselect.workload import Workload

__all__ = ["Candidate", "Selection"]


def __dir__() -> list[str]:
    return __all__


@dataclass(frozen=True)
class Candidate:
    """One catalogue kernel judged for this selection.

    Attributes:
        kernel: the kernel version.
        viable: whether every check passed.
        reasons: why it was rejected (empty when viable).
        score: its catalogue priority for the workload's regime (higher is preferred).
        notes: caveats, conversions and silent-failure risks worth knowing even when viable.
        conversion: ``(checkpoint layout, kernel layout)`` when the weights are repacked at load, else ``None``.
        measured_ms: modeled milliseconds of the workload's request (prefill once, then every decode step) for the
            checkpoint's quantized layers, from a trial on this machine; ``None`` when not measured (ranked by
            :attr:`score`, the published priority).
        measurement: what the trial measured, in words (empty when not measured).
        spread_ms: milliseconds between the request modeled from the trial's slowest rounds and from its fastest
            (``None`` when not measured).
        margin_ms: ``measured_ms`` less the winner's (the first measured kernel of the ranking; negative when a tie
            put a slower kernel first; ``None`` when not measured).
        noise_ms: the noise that margin is judged against: the mean of the two kernels' spreads.
        tie: the kernels it was within noise of when a place in the ranking was decided: the published rank decided
            between them.
    """

    kernel: Kernel
    viable: bool
    reasons: tuple[str, ...]
    score: int
    notes: tuple[str, ...]
    conversion: tuple[Layout, Layout] | None
    measured_ms: float | None = None
    measurement: str = ""
    spread_ms: float | None = None
    margin_ms: float | None = None
    noise_ms: float | None = None
    tie: tuple[Kernel, ...] = ()

    @property
    def rank_source(self) -> str:
        """``"measured"`` when a trial on this machine ranks it, else ``"published"``."""
        return "measured" if self.measured_ms is not None else "published"

    @property
    def spec(self) -> KernelSpec:
        """The catalogue entry."""
        return CATALOGUE[self.kernel]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "kernel": self.kernel.value,
            "viable": self.viable,
            "score": self.score,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "conversion": None if self.conversion is None else [layout.value for layout in self.conversion],
            "rank_source": self.rank_source,
            "measured_ms": self.measured_ms,
            "measurement": self.measurement,
            "spread_ms": self.spread_ms,
            "margin_ms": self.margin_ms,
            "noise_ms": self.noise_ms,
            "tie": [k.value for k in self.tie],
        }

    def standing(self) -> str:
        """``"+37.12 ms to the winner (noise 0.84 ms)"`` and, for a tie, ``"tie (within noise) with gemm_torch:
        published rank decided"``; empty for the winner by a margin, or when not measured."""
        parts = []
        if self.margin_ms is not None and self.noise_ms is not None and self.margin_ms != 0:
            parts.append(f"{self.margin_ms:+.2f} ms to the winner (noise {self.noise_ms:.2f} ms)")
        if self.tie:
            names = ", ".join(k.value for k in self.tie)
            parts.append(f"tie (within noise) with {names}: published rank decided")
        return "; ".join(parts)


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select_awq_version`.

    Attributes:
        kernel: the kernel to use (``chain[0]``).
        chain: every viable kernel, best first: a loader walks it when one fails at run time.
        candidates: every catalogue kernel, viable ones first (by score), then the rejected ones.
        requested: ``"auto"`` or the explicitly requested version.
        device: the device type selected for (``"cuda"``, ``"cpu"``, ...).
        capabilities: compute capabilities of the GPUs the model spans (empty off CUDA).
        workload: the workload ranked for.
        quant: the checkpoint's quantization settings, or ``None`` when no checkpoint was given.
        environment_assumed: the environment was planned (:meth:`Environment.assume`), not probed here.
        notes: remarks about the selection as a whole (e.g. what was not checked).
        request_rejected: when an explicit version was requested with ``strict=False`` and is not viable,
            why; the chain is then the automatic one.
        tie: the measured kernels tied within noise for the first place (best first: the published rank decided
            among them); empty when the first place was won by a margin larger than the noise, or not measured.
    """

    kernel: Kernel
    chain: tuple[Kernel, ...]
    candidates: tuple[Candidate, ...]
    requested: str
    device: str
    capabilities: tuple[ComputeCapability, ...]
    workload: Workload
    quant: QuantConfig | None
    environment_assumed: bool
    notes: tuple[str, ...] = ()
    request_rejected: tuple[str, ...] = ()
    tie: tuple[Kernel, ...] = ()

    @property
    def rejected(self) -> dict[Kernel, tuple[str, ...]]:
        """Every rejected kernel and its reasons."""
        return {c.kernel: c.reasons for c in self.candidates if not c.viable}

    @property
    def fell_back(self) -> bool:
        """Whether an explicitly requested version was replaced by the automatic choice."""
        return self.requested not in ("auto", self.kernel.value)

    def candidate(self, kernel: str | Kernel) -> Candidate:
        """The judged candidate for one kernel.

        Raises:
            UnknownVersionError: ``kernel`` is not a catalogue name.
        """
        wanted = parse_kernel(kernel)
        return next(c for c in self.candidates if c.kernel is wanted)

    def explain(self) -> str:
        """A multi-line, human-readable account: the choice, the chain, every candidate with its reasons."""
        where = self.device
        if self.capabilities:
            where += " " + ", ".join(f"{cc} ({cc.architecture})" for cc in self.capabilities)
        lines = [
            f"selected: {self.kernel.value} for {self.workload.describe()} on {where}"
            + (" [planned environment]" if self.environment_assumed else ""),
        ]
        if self.quant is not None:
            q = self.quant
            group = "per-channel" if q.group_size == -1 else f"group size {q.group_size}"
            lines.append(
                f"checkpoint: {q.layout.value} layout, {q.bits}-bit, {group}, "
                + ("zero point (asymmetric)" if q.zero_point else "symmetric (no zero point)")
            )
        if self.requested != "auto":
            if self.request_rejected:
                lines.append(f"requested: {self.requested}, not viable here, so the automatic choice is used:")
                lines.extend(f"    - {reason}" for reason in self.request_rejected)
            else:
                lines.append(f"requested: {self.requested}")
        lines.append("chain: " + " > ".join(k.value for k in self.chain))
        lines.extend(f"note: {note}" for note in self.notes)
        lines.append("candidates:")
        width = max(len(k.value) for k in Kernel)
        for rank, candidate in enumerate(self.candidates, start=1):
            status = "viable" if candidate.viable else "rejected"
            if candidate.measured_ms is not None:
                basis = f"measured {candidate.measured_ms:8.2f} ms/request"
                if candidate.spread_ms is not None:
                    basis += f", spread {candidate.spread_ms:.2f}"
            else:
                basis = f"published score {candidate.score:>3}      "
            lines.append(f"  {rank:>2}. {candidate.kernel.value:<{width}}  {basis}  {status}")
            standing = candidate.standing()
            if standing:
                lines.append(f"        {standing}")
            if candidate.measurement:
                lines.append(f"        measured: {candidate.measurement}")
            lines.extend(f"        - {reason}" for reason in candidate.reasons)
            lines.extend(f"        note: {note}" for note in candidate.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.explain()

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "kernel": self.kernel.value,
            "chain": [k.value for k in self.chain],
            "requested": self.requested,
            "request_rejected": list(self.request_rejected),
            "device": self.device,
            "capabilities": [str(cc) for cc in self.capabilities],
            "workload": self.workload.to_dict(),
            "quant": None if self.quant is None else self.quant.to_dict(),
            "environment_assumed": self.environment_assumed,
            "notes": list(self.notes),
            "tie": [k.value for k in self.tie],
            "candidates": [c.to_dict() for c in self.candidates],
        }
