"""A bar chart of median TPOT per version and batch size, with p90 whiskers and GPU kernel time per token."""

from __future__ import annotations

import os
from pathlib import Path

from awq_autoselect._writing import check_file_destination, write_file
from awq_autoselect.errors import InvalidArgumentError, MissingDependencyError

from .records import BenchmarkReport

__all__ = ["check_plot_destination", "plot"]

_PLOT_SOFTWARE = "awq-autoselect benchmark plot"


def _is_plot(path: Path) -> bool:
    """A PNG whose ``Software`` text chunk says :func:`plot` drew it."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return head.startswith(b"\x89PNG") and b"Software\x00" + _PLOT_SOFTWARE.encode() in head


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401 - only whether it imports
    except ImportError as exc:
        raise MissingDependencyError(
            "plot() needs matplotlib, which is not installed: install it with the 'plot' extra "
            "(awq-autoselect[plot]) or write the report with to_csv() and plot that"
        ) from exc


def _png_path(path: str | os.PathLike[str]) -> Path:
    out = Path(os.fspath(path))
    if out.suffix.lower() != ".png":
        raise InvalidArgumentError(f"plot path {str(out)!r}: the plot is written as PNG; name it *.png")
    return out


def check_plot_destination(path: str | os.PathLike[str], checkpoint: str | os.PathLike[str]) -> None:
    """Check, before a benchmark of ``checkpoint`` runs, that :func:`plot` can draw its report at ``path``.
    Nothing is created.

    Raises:
        MissingDependencyError: matplotlib is not installed.
        InvalidArgumentError: ``path`` does not end in ``.png``.
        OutputPathError: ``path`` lies inside the checkpoint, exists and is not such a plot, or its folder cannot
            be written.
    """
    _require_matplotlib()
    check_file_destination(_png_path(path), owned=_is_plot, sources=[checkpoint], what="--plot")


def plot(report: BenchmarkReport, path: str | os.PathLike[str]) -> Path:
    """Draw median TPOT (bars, with p90 whiskers) and GPU kernel time per token per version and batch size.

    Writes a PNG at ``path`` (an existing file there is replaced only if this function drew it).

    Raises:
        MissingDependencyError: matplotlib is not installed (``pip install awq-autoselect[plot]``).
        InvalidArgumentError: ``path`` does not end in ``.png``.
        OutputPathError: ``path`` lies inside the checkpoint, exists and is not such a plot, or cannot be written.
    """
    _require_matplotlib()
    out = _png_path(path)

    from matplotlib.figure import Figure

    rows = [r for r in report.rows() if r.tpot_ms_median is not None]
    labels = list(dict.fromkeys(r.version for r in rows))
    sizes = list(dict.fromkeys(r.batch_size for r in rows))
    figure = Figure(figsize=(max(4.0, 1.6 * len(labels) * max(1, len(sizes))), 4.0))
    axes = figure.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(sizes))
    for j, size in enumerate(sizes):
        xs, heights, errors, kernels = [], [], [], []
        for i, label in enumerate(labels):
            match = [r for r in rows if r.version == label and r.batch_size == size]
            if not match:
                continue
            row = match[0]
            assert row.tpot_ms_median is not None
            assert row.tpot_ms_p90 is not None
            xs.append(i + (j - (len(sizes) - 1) / 2) * width)
            heights.append(row.tpot_ms_median)
            errors.append(row.tpot_ms_p90 - row.tpot_ms_median)
            kernels.append(row.kernel_ms_per_token)
        axes.bar(
            xs,
            heights,
            width=width * 0.95,
            yerr=[[0.0] * len(errors), errors],
            capsize=3,
            label=f"wall TPOT, batch {size}",
        )
        points = [(x, k) for x, k in zip(xs, kernels, strict=True) if k is not None]
        if points:
            axes.scatter(
                [p[0] for p in points],
                [p[1] for p in points],
                marker="_",
                s=300,
                color="black",
                label=f"GPU kernel ms/token, batch {size}" if j == 0 else None,
                zorder=3,
            )
    axes.set_xticks(range(len(labels)))
    axes.set_xticklabels(labels)
    axes.set_ylabel("ms per token (median; whisker: p90)")
    where = report.metadata.gpu_name or "CPU"
    axes.set_title(f"Decode latency per token, {where}, prompt {report.settings.prompt_tokens}")
    if rows:
        axes.legend(fontsize="small")
    figure.tight_layout()
    return write_file(
        out,
        lambda target: figure.savefig(target, format="png", metadata={"Software": _PLOT_SOFTWARE}),
        owned=_is_plot,
        sources=[report.settings.path],
        what="--plot",
    )
