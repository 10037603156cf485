"""Every ``AWQ_AUTOSELECT_*`` environment variable, in one table, parsed in one place with one policy.

Each :class:`Setting` names the variable, its type, its default, the values it accepts and what it does
(:data:`SETTINGS`). :func:`current` reads them all and returns a frozen :class:`Settings`; it parses again only when
one of the variables changed since the last call, so reading a setting costs a dictionary lookup.

The policy: an unset variable, or one set to the empty string or to spaces, takes its default. Any other value must
parse, or :func:`current` raises :class:`~awq_autoselect.errors.InvalidArgumentError` naming the variable, the value,
the accepted values and the fix (the CLI exits 2). Never a silent default, never a fallback to something slower.

Nothing here reads the environment at import time, and nothing here imports anything heavy.
"""

from __future__ import annotations

import enum
import math
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidArgumentError

__all__ = [
    "CACHE_DIR",
    "DEFAULT_TRIAL_TIMEOUT_S",
    "INT4_DENSE_THRESHOLD",
    "PROGRESS",
    "REPORT_DIR",
    "SETTINGS",
    "TRIALS",
    "TRIAL_TIMEOUT",
    "Setting",
    "SettingType",
    "Settings",
    "current",
    "markdown_table",
    "setting",
]

#: Seconds one kernel's trial may take before its child process is killed (``AWQ_AUTOSELECT_TRIAL_TIMEOUT``).
DEFAULT_TRIAL_TIMEOUT_S = 300.0

TRIALS = "AWQ_AUTOSELECT_TRIALS"
TRIAL_TIMEOUT = "AWQ_AUTOSELECT_TRIAL_TIMEOUT"
CACHE_DIR = "AWQ_AUTOSELECT_CACHE_DIR"
INT4_DENSE_THRESHOLD = "AWQ_AUTOSELECT_INT4_DENSE_THRESHOLD"
REPORT_DIR = "AWQ_AUTOSELECT_REPORT_DIR"
PROGRESS = "AWQ_AUTOSELECT_PROGRESS"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class SettingType(str, enum.Enum):
    """How a variable's text is read."""

    BOOLEAN = "boolean"
    SECONDS = "seconds"
    INTEGER = "integer"
    PATH = "path"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Settings:
    """The parsed values of every variable (see :data:`SETTINGS` for what each one does)."""

    trials: bool = True
    trial_timeout_s: float = DEFAULT_TRIAL_TIMEOUT_S
    cache_dir: Path | None = None  # None: $XDG_CACHE_HOME/awq_autoselect, else ~/.cache/awq_autoselect
    int4_dense_threshold: int | None = None  # None: torch_int4's measured DENSE_THRESHOLD
    report_dir: Path | None = None
    progress: bool | None = None  # None: a bar on a terminal or in a notebook only


def _boolean(text: str) -> bool:
    word = text.lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError


def _seconds(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise ValueError
    return value


def _rows(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError
    return value


def _path(text: str) -> Path:
    return Path(text).expanduser()


@dataclass(frozen=True)
class Setting:
    """One environment variable: the row of the table."""

    name: str
    attribute: str  # the field of :class:`Settings` it sets
    type: SettingType
    default: str  # in words, as the README shows it
    accepted: str  # the values it accepts, in words (the error message quotes this)
    doc: str
    parse: Callable[[str], object]  # raises ValueError for a value outside ``accepted``


#: Every variable awq_autoselect reads. README.md's table of variables is :func:`markdown_table` (tested).
SETTINGS: tuple[Setting, ...] = (
    Setting(
        TRIALS,
        "trials",
        SettingType.BOOLEAN,
        "on",
        "1, true, yes, on (trials on) or 0, false, no, off (trials off), in any case",
        "Whether `load_quantized_auto(version='auto')` and `benchmark_versions` run each kernel in a child process "
        "first (measured, crash-isolated, cached). Off: the published ranking. The `trials=` argument wins.",
        _boolean,
    ),
    Setting(
        TRIAL_TIMEOUT,
        "trial_timeout_s",
        SettingType.SECONDS,
        f"{DEFAULT_TRIAL_TIMEOUT_S:g}",
        "a finite number of seconds above 0, e.g. 300 or 42.5",
        "Seconds one kernel's trial may take before its child process is killed. A trial that times out is not "
        "cached and does not mark the kernel broken. `tune --timeout` and `timeout_s=` win.",
        _seconds,
    ),
    Setting(
        CACHE_DIR,
        "cache_dir",
        SettingType.PATH,
        "`$XDG_CACHE_HOME/awq_autoselect`, else `~/.cache/awq_autoselect`",
        "a folder path (`~` is expanded)",
        "Where trial results are cached (in its `trials/` folder). A folder that cannot be written, or that lies "
        "inside a model checkpoint, is refused with one warning per process, and nothing is cached.",
        _path,
    ),
    Setting(
        INT4_DENSE_THRESHOLD,
        "int4_dense_threshold",
        SettingType.INTEGER,
        "32 (`torch_int4.DENSE_THRESHOLD`, measured on the H200)",
        "a whole number of rows, 1 or more, e.g. 32",
        "Rows from which torch_int4 layers dequantize and call a dense matmul instead of tinygemm (prefill); "
        "for tuning on another GPU (`scripts/measure_int4_threshold.py`).",
        _rows,
    ),
    Setting(
        PROGRESS,
        "progress",
        SettingType.BOOLEAN,
        "automatic: a bar when stderr is a terminal or the code runs in a Jupyter kernel",
        "1, true, yes, on (always a bar) or 0, false, no, off (never), in any case",
        "Whether trials draw a progress bar (tqdm's auto form) on stderr while they run. The `progress=` argument "
        "of `load_quantized_auto` wins.",
        _boolean,
    ),
    Setting(
        REPORT_DIR,
        "report_dir",
        SettingType.PATH,
        "unset (reports are not kept)",
        "a folder path (`~` is expanded)",
        "GPU test runs only (`tests/gpu`): the folder where they keep load reports for docs/gpu-runs.md.",
        _path,
    ),
)

_BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}
_lock = threading.Lock()
_parsed: dict[tuple[str | None, ...], Settings] = {}  # the last environment parsed, and its settings


def _raw() -> tuple[str | None, ...]:
    return tuple(os.environ.get(s.name) for s in SETTINGS)


def _parse(raw: tuple[str | None, ...]) -> Settings:
    values: dict[str, object] = {}
    problems: list[str] = []
    for setting, text in zip(SETTINGS, raw, strict=True):
        if text is None or not text.strip():
            continue
        try:
            values[setting.attribute] = setting.parse(text.strip())
        except (ValueError, OverflowError):
            problems.append(f"{setting.name}={text!r} is not valid: expected {setting.accepted}")
    if problems:
        names = ", ".join(p.split("=", 1)[0] for p in problems)
        raise InvalidArgumentError(
            "; ".join(problems) + f". Set {names} to an accepted value, or unset it for the default "
            "(README.md lists every AWQ_AUTOSELECT_* variable)"
        )
    return Settings(**values)  # type: ignore[arg-type]  # each parser returns its field's type (the table)


def current() -> Settings:
    """The settings of the environment as it is now (parsed again only when a variable changed).

    Raises:
        InvalidArgumentError: a variable holds a value it does not accept; the message names every such variable,
            its value and the accepted values.
    """
    raw = _raw()
    cached = _parsed.get(raw)
    if cached is not None:
        return cached
    with _lock:
        parsed = _parse(raw)  # raises before anything is kept: a bad value raises on every call, never once
        _parsed.clear()
        _parsed[raw] = parsed
    return parsed


def setting(name: str) -> Setting:
    """The table's row for ``name``.

    Raises:
        InvalidArgumentError: ``name`` is not one of awq_autoselect's variables.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(_BY_NAME)
        raise InvalidArgumentError(f"{name!r} is not an awq_autoselect environment variable (known: {known})") from None


def markdown_table() -> str:
    """The table of variables as Markdown (README.md holds this text verbatim)."""
    lines = ["| variable | type | default | accepted values | what it does |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        lines.append(f"| `{s.name}` | {s.type.value} | {s.default} | {s.accepted} | {s.doc} |")
    return "\n".join(lines) + "\n"
