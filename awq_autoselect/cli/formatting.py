"""What the commands of ``awq-autoselect`` print: detection, the environment, a tune run's table, the trial cache's
entries, trial progress; and JSON on the output stream. Plain text from the library's records; no command logic."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from awq_autoselect.catalogue import Kernel
    from awq_autoselect.selection import Selection
    from awq_autoselect.trials import DecodeMode, TrialReport
    from awq_autoselect.workload import Workload

__all__ = [
    "emit_json",
    "entry_dict",
    "entry_line",
    "format_detection",
    "format_environment",
    "progress_printer",
    "write_tune_table",
]


def emit_json(data: object, out: TextIO) -> None:
    json.dump(data, out, indent=2, sort_keys=False, default=str)
    out.write("\n")


def format_detection(detection: object) -> str:
    from awq_autoselect.hardware import Detection

    assert isinstance(detection, Detection)
    lines = []
    if detection.gpus:
        for gpu in detection.gpus:
            mem = f"{gpu.total_memory / 1024**3:.1f} GiB" if gpu.total_memory else "? GiB"
            lines.append(
                f"cuda:{gpu.index}  {gpu.name}  compute capability {gpu.capability} ({gpu.architecture})  {mem}"
                f"  {gpu.mig_uuid or gpu.uuid or ''}  [via {gpu.source.value}]"
            )
    else:
        lines.append("no GPU visible to this process")
    for attempt in detection.attempts:
        status = "ok" if attempt.ok else "failed"
        lines.append(f"  {attempt.source.value}: {status}: {attempt.detail} ({attempt.seconds * 1000:.0f} ms)")
    lines += [f"  warning: {w}" for w in detection.warnings]
    return "\n".join(lines) + "\n"


def format_environment(env: object) -> str:
    from awq_autoselect.environment import Environment

    assert isinstance(env, Environment)
    lines = [f"torch {env.torch_version or '-'} (CUDA {env.torch_cuda_version or '-'})"]
    for name, status in sorted(env.modules.items()):
        version = f" {status.version}" if status.version else ""
        lines.append(f"  {name:<28} {status.state.value:<20}{version}  {status.reason}")
    return "\n".join(lines) + "\n"


def progress_printer(err: TextIO) -> Callable[[int, int, Kernel, str], None]:
    """A progress callback: a tqdm bar on a terminal, else one line per step on ``err``."""
    bar: object = None
    if err.isatty():
        try:
            from tqdm.auto import tqdm
        except ImportError:
            bar = None
        else:
            bar = tqdm(total=None, desc="trials", unit="kernel", leave=False, file=err)

    def show(index: int, total: int, kernel: Kernel, status: str) -> None:
        if bar is not None:
            bar.total = total  # type: ignore[attr-defined]
            bar.set_postfix_str(f"{kernel.value}: {status}", refresh=True)  # type: ignore[attr-defined]
            if status != "running":
                bar.update(1)  # type: ignore[attr-defined]
        else:
            err.write(f"trial {index}/{total} {kernel.value}: {status}\n")
            err.flush()

    return show


def write_tune_table(out: TextIO, report: TrialReport, work: Workload, mode: DecodeMode, selection: Selection) -> None:
    """One workload's table of a tune run: per kernel its status, per-shape times, modeled step and prefill, the
    modeled request with its spread, and its margin to the winner (or the tie the published rank broke)."""
    from awq_autoselect.trials import DecodeMode

    out.write(f"{work.describe()}\n")
    out.write(
        f"{'kernel':<12} {'status':<7} {'us per call at ' + str(work.decode_rows) + ' row(s), eager / graph':<44} "
        f"{'ms/token (' + mode.value + ')':>16} {'prefill ms':>11} {'request ms':>11} {'spread':>8} {'margin':>9}\n"
    )
    for result in report.results:
        step = result.layers_ms(work.decode_rows, mode)
        prefill = result.layers_ms(work.prefill_rows, DecodeMode.EAGER)
        cells = []
        for shape in result.shapes:
            timing = shape.timing(work.decode_rows)
            if timing is not None:
                graph = "-" if timing.graph_us is None else f"{timing.graph_us:.1f}"
                cells.append(f"{timing.eager_us:.1f}/{graph}")
        candidate = next((c for c in selection.candidates if c.kernel is result.kernel), None)
        request = spread = margin = "-"
        if candidate is not None and candidate.measured_ms is not None:
            request = f"{candidate.measured_ms:.2f}"
            spread = f"{candidate.spread_ms or 0.0:.2f}"
            won = candidate.margin_ms == 0 and not candidate.tie
            margin = "winner" if won else f"{candidate.margin_ms or 0.0:+.2f}"
        out.write(
            f"{result.kernel.value:<12} {result.status.value:<7} {' '.join(cells) or '-':<44} "
            f"{'-' if step is None else f'{step:.3f}':>16} {'-' if prefill is None else f'{prefill:.2f}':>11} "
            f"{request:>11} {spread:>8} {margin:>9}\n"
        )
        if result.reason:
            out.write(f"    {result.reason}\n")
        if result.inconclusive:
            out.write("    not cached: an inconclusive trial says nothing about the kernel\n")
        if candidate is not None and candidate.standing():
            out.write(f"    {candidate.standing()}\n")
        if result.host is not None:
            out.write(f"    host while measuring: {result.host.describe()}\n")
        if result.thin:
            out.write(f"    thin: {result.thin}\n")
        cached = report.cache_note(result.kernel)
        if cached:
            out.write(f"    {cached}\n")
    out.write(f"selected: {selection.kernel.value} (chain: {' > '.join(k.value for k in selection.chain)})\n")
    for note in selection.notes:
        if note.startswith("tie (within noise)") or " won by " in note:
            out.write(f"    {note}\n")


def entry_dict(entry: object) -> dict[str, object]:
    from awq_autoselect._codec import to_json
    from awq_autoselect.trials.cache import CacheEntry

    assert isinstance(entry, CacheEntry)
    return {
        "file": str(entry.path),
        "kernel": entry.kernel.value if entry.kernel else None,
        "checkpoint": entry.checkpoint,
        "signature": None if entry.signature is None else to_json(entry.signature),
        "machine": None if entry.machine is None else to_json(entry.machine),
        "result": None if entry.result is None else to_json(entry.result),
        "problem": entry.problem or None,
    }


def entry_line(entry: object) -> str:
    from awq_autoselect.trials.cache import CacheEntry

    assert isinstance(entry, CacheEntry)
    if entry.result is None or entry.kernel is None:
        return f"  {entry.path.name}: {entry.problem}"
    result, machine = entry.result, entry.machine
    where = "-" if machine is None else (machine.gpu_name or machine.cpu or machine.device_type)
    verdict = result.status.value + (f" ({result.cause.value})" if result.cause else "")
    verdict += " thin" if result.thin else ""
    by = f" by {result.measured_by}" if result.measured_by else ""
    shapes = "" if entry.signature is None else ", ".join(f"{k}x{n}" for k, n in entry.signature.shapes)
    line = f"  {result.measured_on}{by}  {entry.kernel.value:<12} {verdict:<16} on {where}; shapes {shapes}"
    if entry.checkpoint:
        line += f"; for {entry.checkpoint}"
    if entry.problem:
        line += f" [not used: {entry.problem}]"
    if not result.ok:
        line += f"\n      {result.reason}"
    if result.host is not None:
        line += f"\n      host while measuring: {result.host.describe()}"
    if result.thin:
        line += f"\n      thin: {result.thin}"
    return line
