"""One planner: select, trial what the choice needs, select again by the measurements; for load, bench, tune and
select alike.

:func:`plan` is the only place that sequence is written. It asks :func:`~awq_autoselect.selection.select_awq_version`
for the published ranking (the kernels that can run here, and in which order without measurements), runs the
trials that ranking calls for (:func:`~awq_autoselect.trials.run_trials`: cached, crash-isolated, timed in rounds
in alternation), and asks selection again with the results as data. The rules therefore hold wherever a kernel is
chosen:

- ``version="auto"`` measures every viable kernel (with or without ``fallback``, which only decides what happens
  when the chosen kernel then fails to load); a named version measures only itself, and the rest of the chain only
  when it is broken and ``fallback`` is on (to rank the fallbacks), else when the load moves past it
  (:meth:`Plan.trial_fallbacks`: a fallback is trialed before it is built);
- a measured winner is declared only when its margin exceeds the noise (:mod:`awq_autoselect.ranking`); in a tie
  the published rank decides, and when the tied results were measured on a busy host their cache entries are
  marked *thin*;
- a thin entry is measured again, together with the others it tied with, by the next plan that runs trials while
  the host is quiet (other processes leave at least half the CPUs free, :class:`~awq_autoselect.trials.HostLoad`);
- a trial that could not finish (timeout, memory) ranks everything by the published scores for that call.

Selection never runs a trial; only this module starts them, through the trials API.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from .capability import CapabilityLike
from .catalogue import Kernel, parse_kernel
from .checkpoint import CheckpointInfo, QuantConfig
from .environment import Environment
from .errors import InvalidArgumentError
from .selection import Selection, select_awq_version
from .trials import host as _host
from .trials.cache import CacheLookup
from .trials.records import TrialReport, TrialResult
from .trials.runner import run_trials, trials_enabled
from .workload import Workload

__all__ = ["Plan", "TrialPolicy", "TrialVerdict", "plan"]

logger = logging.getLogger(__name__)


class TrialPolicy(str, enum.Enum):
    """What a plan may do with trials."""

    OFF = "off"  # the published ranking only
    CACHED = "cached"  # what the trial cache holds on this machine; nothing is run (select)
    RUN = "run"  # run the trials the cache cannot answer (load, bench, tune)
    REFRESH = "refresh"  # run every trial again, whatever is cached (tune --refresh)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class TrialVerdict:
    """A kernel a trial kept from being built here (``stage="trial"``: broken), or left unmeasured
    (``stage="unmeasured"``: inconclusive, ranked by its published score for this call)."""

    kernel: Kernel
    stage: str
    message: str


@dataclass(frozen=True)
class _Trials:
    """How this plan runs trials: for the lazy trials of fallbacks, the same as for the first ones."""

    info: CheckpointInfo
    device: str
    rows: tuple[int, ...]
    timeout_s: float | None
    progress: Callable[[int, int, Kernel, str], None] | None
    show_progress: bool | None
    measured_by: str

    def run(self, kernels: Sequence[Kernel], *, use_cache: bool = True) -> TrialReport:
        return run_trials(
            self.info,
            kernels,
            device=self.device,
            rows=self.rows,
            use_cache=use_cache,
            timeout_s=self.timeout_s,
            progress=self.progress,
            show_progress=self.show_progress,
            measured_by=self.measured_by,
        )


@dataclass(frozen=True)
class Plan:
    """What :func:`plan` decided.

    Attributes:
        selection: the ranking, measured where trials were: ``selection.chain`` is what a loader walks.
        report: every trial result the plan ranked by (run now or read from the cache); ``None`` without trials.
        verdicts: the kernels trials kept from being built (broken) or left unmeasured (inconclusive), in the order
            they were tried.
        untrialed: fallbacks not trialed yet (a named version's chain past it): :meth:`trial_fallbacks` before
            building any of them.
        remeasured: thin cache entries measured again by this plan (the host was quiet).
        marked_thin: kernels whose cache entries this plan marked thin (a tie, measured on a busy host).
        trial_seconds: the seconds spent on trials (and on sampling the host's load for thin entries).
    """

    selection: Selection
    report: TrialReport | None = None
    verdicts: tuple[TrialVerdict, ...] = ()
    untrialed: tuple[Kernel, ...] = ()
    remeasured: tuple[Kernel, ...] = ()
    marked_thin: tuple[Kernel, ...] = ()
    trial_seconds: float = 0.0
    _trials: _Trials | None = field(default=None, repr=False, compare=False)

    @property
    def chain(self) -> tuple[Kernel, ...]:
        """The kernels to try, best first."""
        return self.selection.chain

    @property
    def broken(self) -> Mapping[Kernel, str]:
        """Every kernel a trial found broken, with the reason."""
        return {} if self.report is None else self.report.broken

    @property
    def inconclusive(self) -> Mapping[Kernel, str]:
        """Every kernel whose trial could not finish (timeout, memory, ...), with why."""
        return {} if self.report is None else self.report.inconclusive

    def trial_fallbacks(self, kernels: Sequence[Kernel]) -> Plan:
        """This plan with the trials of the ``kernels`` still untrialed run (a load about to build one of them);
        the selection is not re-ranked: a broken one is in :attr:`broken`, and the loader skips it.

        Raises:
            InvalidArgumentError: an ``AWQ_AUTOSELECT_*`` variable holds a bad value.
        """
        wanted = [k for k in kernels if k in self.untrialed]
        if not wanted or self._trials is None:
            return self
        started = time.perf_counter()
        extra = self._trials.run(wanted)
        report = extra if self.report is None else _merged(self.report, extra)
        return dataclasses.replace(
            self,
            report=report,
            verdicts=(*self.verdicts, *_verdicts(extra, wanted)),
            untrialed=tuple(k for k in self.untrialed if k not in wanted),
            trial_seconds=self.trial_seconds + time.perf_counter() - started,
        )


def _policy(trials: TrialPolicy | bool | None) -> TrialPolicy:
    if isinstance(trials, TrialPolicy):
        return trials
    if trials is not None and not isinstance(trials, bool):
        raise InvalidArgumentError(f"trials={trials!r}: expected True, False, None or a TrialPolicy")
    return TrialPolicy.RUN if trials_enabled(trials) else TrialPolicy.OFF


def _only_experimental(reasons: Sequence[str]) -> bool:
    """Whether a kernel was rejected for being experimental and for nothing else (it runs when named)."""
    return bool(reasons) and all(r.startswith("experimental, not chosen automatically") for r in reasons)


def plan(
    info: CheckpointInfo | QuantConfig,
    *,
    version: str | Kernel = "auto",
    device: str | None,
    workload: Workload,
    fallback: bool = True,
    trials: TrialPolicy | bool | None = None,
    capability: CapabilityLike | Sequence[CapabilityLike] | None = None,
    environment: Environment | None = None,
    only: Collection[Kernel] | None = None,
    rows: Sequence[int] = (),
    timeout_s: float | None = None,
    progress: Callable[[int, int, Kernel, str], None] | None = None,
    show_progress: bool | None = None,
    measured_by: str = "plan",
) -> Plan:
    """Choose the kernels for ``info`` on ``device`` for ``workload``: select, trial, select again.

    Args:
        info: the checkpoint (its shapes are what trials run); a bare :class:`QuantConfig` plans without trials.
        version: ``"auto"``, or the version to put first (it alone is trialed, unless it is broken).
        device: ``"cpu"`` or ``"cuda:N"`` (``None``: selection's default; then no trial can run).
        workload: what the model will do: the ranking's request, and the row counts trials time.
        fallback: whether a loader may move past the first kernel; off, a named version that cannot run raises.
        trials: :class:`TrialPolicy`, or ``True``/``False``; ``None``: on unless ``$AWQ_AUTOSELECT_TRIALS`` is 0.
        capability: compute capabilities to select for (default: detected).
        environment: the kernel modules to select with (default: probed here).
        only: trial only these kernels (a benchmark of some versions); the others keep their published rank.
        rows: further row counts to time (several workloads at once).
        timeout_s: seconds one kernel's trial may take (default: ``$AWQ_AUTOSELECT_TRIAL_TIMEOUT`` or 300).
        progress: called as ``progress(index, total, kernel, status)`` around each trial.
        show_progress: a progress bar on stderr while trials run (``None``: on a terminal or in a notebook).
        measured_by: what runs the trials, kept with the cached results.

    Returns:
        The :class:`Plan`.

    Raises:
        InvalidArgumentError: ``trials`` is not a policy or a bool, trials are asked for without a checkpoint
            directory or a device, or an ``AWQ_AUTOSELECT_*`` variable holds a bad value; nothing was run.
        UnknownVersionError: ``version`` is not a catalogue name.
        VersionUnavailableError: ``fallback`` is off and the named version cannot run here.
        NoCompatibleKernelError: no kernel can run the checkpoint here.
    """
    policy = _policy(trials)
    requested = "auto" if str(version).strip().lower() == "auto" else parse_kernel(version).value

    def select(measured: TrialReport | bool | None) -> Selection:
        return select_awq_version(
            info,
            version=requested,
            capability=capability,
            device=device,
            environment=environment,
            workload=workload,
            strict=not fallback,
            measurements=measured,
        )

    if policy is TrialPolicy.OFF:
        return Plan(select(False))
    if policy is TrialPolicy.CACHED or not isinstance(info, CheckpointInfo):
        if policy is not TrialPolicy.CACHED:
            raise InvalidArgumentError(
                "trials need the checkpoint directory (its layer shapes): pass a CheckpointInfo, or trials=False"
            )
        return Plan(select(None))
    if device is None:
        raise InvalidArgumentError("trials need a device: pass device='cpu' or 'cuda:N', or trials=False")
    started = time.perf_counter()
    setup = _Trials(
        info,
        device,
        tuple(sorted({workload.decode_rows, workload.prefill_rows, *rows})),
        timeout_s,
        progress,
        show_progress,
        measured_by,
    )
    published = select(False)
    chain = [k for k in published.chain if only is None or k in only]
    if only is not None:  # a benchmark that names an experimental kernel trials it like any other it names
        chain += [k for k in only if k not in chain and _only_experimental(published.rejected.get(k, ()))]
    to_try = chain if requested == "auto" else chain[:1]
    report = setup.run(to_try, use_cache=policy is not TrialPolicy.REFRESH)
    rest = chain[len(to_try) :] if fallback else []
    if rest and to_try and to_try[0] in report.broken:  # the named version is out: rank its fallbacks now
        report = _merged(report, setup.run(rest))
        to_try, rest = chain, []
    report, remeasured = _remeasure_thin(report, setup)
    selection = select(report)
    marked = _mark_thin(selection, report, setup, workload)
    return Plan(
        selection,
        report,
        tuple(_verdicts(report, to_try)),
        tuple(rest),
        remeasured,
        marked,
        time.perf_counter() - started,
        setup,
    )


def _merged(first: TrialReport, second: TrialReport) -> TrialReport:
    """One report of two runs' results for one device: ``second``'s results replace ``first``'s for its kernels."""
    replaced = {r.kernel for r in second.results}
    kept = tuple(r for r in first.results if r.kernel not in replaced)
    return TrialReport(
        first.device,
        kept + second.results,
        tuple(k for k in first.from_cache if k not in replaced) + second.from_cache,
        first.checkpoint,
    )


def _verdicts(report: TrialReport, kernels: Sequence[Kernel]) -> list[TrialVerdict]:
    """``kernels``' trials that failed, as what they mean for a load: broken ones are never built in this process;
    inconclusive ones (timeout, memory) were not measured and keep their published rank for this call."""
    verdicts = []
    for kernel in kernels:
        result = report.result(kernel)
        if result is None or result.ok:
            continue
        if result.inconclusive:
            why = f"its trial was inconclusive, so it was ranked by its published score for this load: {result.reason}"
            verdicts.append(TrialVerdict(kernel, "unmeasured", why))
        else:
            cached = report.cache_note(kernel)
            why = f"failed its trial in a child process: {result.reason}" + (f" {cached}" if cached else "")
            verdicts.append(TrialVerdict(kernel, "trial", why))
    return verdicts


def _remeasure_thin(report: TrialReport, setup: _Trials) -> tuple[TrialReport, tuple[Kernel, ...]]:
    """Measure the thin cached results again, together, when the host is quiet now."""
    thin = [r.kernel for r in report.results if r.ok and r.thin and r.kernel in report.from_cache]
    if not thin:
        return report, ()
    names = ", ".join(k.value for k in thin)
    now = _host.sample_host()
    if now.quiet is not True:
        logger.info("thin trials of %s kept: the host is not quiet (%s)", names, now.describe())
        return report, ()
    logger.info("measuring %s again: their trials were thin, and the host is quiet now", names)
    return _merged(report, setup.run(thin, use_cache=False)), tuple(thin)


def _mark_thin(selection: Selection, report: TrialReport, setup: _Trials, workload: Workload) -> tuple[Kernel, ...]:
    """Mark the cache entries of the kernels tied for the first place thin when any of them was measured on a host
    that was not quiet: a tie there may be the host's noise, not the kernels'. A tie measured on a quiet host is the
    kernels' own, and stays as it is."""
    results = [report.result(k) for k in selection.tie]
    if not results or not all(isinstance(r, TrialResult) and r.ok for r in results):
        return ()
    if all(r is not None and r.host is not None and r.host.quiet is True for r in results):
        return ()
    loads = "; ".join(
        f"{r.kernel.value}: {r.host.describe() if r.host is not None else 'load not recorded'}"
        for r in results
        if r is not None
    )
    lookup = CacheLookup(setup.info, setup.device, setup.rows, None)
    marked = []
    for kernel in selection.tie:
        others = ", ".join(k.value for k in selection.tie if k is not kernel)
        why = (
            f"tied within noise with {others} for {workload.describe()} while the host was not quiet ({loads}); "
            "measured again by the next load on a quiet host"
        )
        if lookup.mark_thin(kernel, why):
            marked.append(kernel)
    return tuple(marked)
