"""The table of AWQ_AUTOSELECT_* variables: one parser, one policy (a bad value raises, naming the variable and the
accepted values; the CLI exits 2 with one line), and a README that lists every variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from awq_autoselect import settings
from awq_autoselect.cli import EXIT_USAGE
from awq_autoselect.errors import InvalidArgumentError
from awq_autoselect.settings import SETTINGS, Settings
from awq_autoselect.trials.child import READY_MARKER, RESULT_MARKER, ROUND_MARKER
from tests.helpers import QuantizedFactory, run_cli

ROOT = Path(__file__).resolve().parents[1]

#: Values every variable must refuse (the two path variables accept any folder name: their bad values are folders
#: that cannot be used, which tests/test_trial_cache.py covers).
BAD_VALUES = [
    (settings.TRIALS, "maybe"),
    (settings.TRIALS, "2"),
    (settings.TRIALS, "yes please"),
    (settings.TRIAL_TIMEOUT, "abc"),
    (settings.TRIAL_TIMEOUT, "nan"),
    (settings.TRIAL_TIMEOUT, "-5"),
    (settings.TRIAL_TIMEOUT, "0"),
    (settings.TRIAL_TIMEOUT, "inf"),
    (settings.TRIAL_TIMEOUT, "1e999"),
    (settings.INT4_DENSE_THRESHOLD, "abc"),
    (settings.INT4_DENSE_THRESHOLD, "0"),
    (settings.INT4_DENSE_THRESHOLD, "-3"),
    (settings.INT4_DENSE_THRESHOLD, "1.5"),
    (settings.INT4_DENSE_THRESHOLD, "32 rows"),
]


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for s in SETTINGS:
        if s.name != settings.CACHE_DIR:  # the test session's own cache folder stays (tests/conftest.py)
            monkeypatch.delenv(s.name, raising=False)


def test_unset_and_empty_values_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(settings.CACHE_DIR)
    assert settings.current() == Settings()
    for s in SETTINGS:
        monkeypatch.setenv(s.name, "  ")
    assert settings.current() == Settings()


@pytest.mark.parametrize(
    ("name", "text", "attribute", "value"),
    [
        (settings.TRIALS, "OFF", "trials", False),
        (settings.TRIALS, " no ", "trials", False),
        (settings.TRIALS, "True", "trials", True),
        (settings.TRIALS, "1", "trials", True),
        (settings.TRIAL_TIMEOUT, "42.5", "trial_timeout_s", 42.5),
        (settings.TRIAL_TIMEOUT, " 7 ", "trial_timeout_s", 7.0),
        (settings.INT4_DENSE_THRESHOLD, "24", "int4_dense_threshold", 24),
        (settings.CACHE_DIR, "~/somewhere", "cache_dir", Path.home() / "somewhere"),
        (settings.REPORT_DIR, "/tmp/reports", "report_dir", Path("/tmp/reports")),
    ],
)
def test_good_values_are_parsed(
    monkeypatch: pytest.MonkeyPatch, name: str, text: str, attribute: str, value: object
) -> None:
    monkeypatch.setenv(name, text)
    assert getattr(settings.current(), attribute) == value


@pytest.mark.parametrize(("name", "text"), BAD_VALUES)
def test_a_bad_value_is_an_error_naming_the_variable_and_the_accepted_values(
    monkeypatch: pytest.MonkeyPatch, name: str, text: str
) -> None:
    monkeypatch.setenv(name, text)
    with pytest.raises(InvalidArgumentError) as raised:
        settings.current()
    message = str(raised.value)
    assert f"{name}={text!r}" in message
    assert settings.setting(name).accepted in message
    assert "unset it" in message
    with pytest.raises(InvalidArgumentError):  # every time, not once: never a default after the first refusal
        settings.current()


def test_every_bad_variable_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(settings.TRIALS, "maybe")
    monkeypatch.setenv(settings.TRIAL_TIMEOUT, "abc")
    with pytest.raises(InvalidArgumentError, match=f"{settings.TRIALS}=.*{settings.TRIAL_TIMEOUT}="):
        settings.current()


def test_parsed_once_and_again_when_the_environment_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    first = settings.current()
    assert settings.current() is first
    monkeypatch.setenv(settings.TRIAL_TIMEOUT, "12")
    assert settings.current().trial_timeout_s == 12.0
    monkeypatch.setenv(settings.TRIAL_TIMEOUT, "nan")
    with pytest.raises(InvalidArgumentError):
        settings.current()


@pytest.mark.parametrize(("name", "text"), BAD_VALUES)
def test_the_loader_refuses_a_bad_value_before_reading_the_checkpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, text: str
) -> None:
    from awq_autoselect.loading import load_quantized_auto

    monkeypatch.setenv(name, text)
    # The path does not exist: the variable is refused first, so nothing was read (let alone run).
    with pytest.raises(InvalidArgumentError, match=name):
        load_quantized_auto(tmp_path / "no-such-model", device="cpu", trials=False)


@pytest.mark.parametrize(("name", "text"), BAD_VALUES)
@pytest.mark.parametrize("command", [("select",), ("detect",), ("load", "/no/such/model"), ("tune", "/no/such")])
def test_the_cli_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, text: str, command: tuple[str, ...]
) -> None:
    monkeypatch.setenv(name, text)
    code, out, err = run_cli(*command)
    assert code == EXIT_USAGE
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: {name}={text!r} is not valid")
    assert "Traceback" not in err


def test_a_bad_dense_threshold_never_loads_another_kernel(
    quantized: QuantizedFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was read when torch_int4's layers were built, where the loader took its ValueError for a kernel failure
    and fell back to gemm_torch (12x slower), silently."""
    from awq_autoselect.kernels.torch_int4 import TorchInt4Linear
    from awq_autoselect.loading import load_quantized_auto

    checkpoint = quantized(version="gemm", group_size=128)
    monkeypatch.setenv(settings.INT4_DENSE_THRESHOLD, "0")
    with pytest.raises(InvalidArgumentError, match=settings.INT4_DENSE_THRESHOLD):
        load_quantized_auto(checkpoint, "torch_int4", device="cpu", trials=False)
    with pytest.raises(InvalidArgumentError, match=settings.INT4_DENSE_THRESHOLD):
        TorchInt4Linear(256, 256, 128)
    monkeypatch.setenv(settings.INT4_DENSE_THRESHOLD, "24")
    assert TorchInt4Linear(256, 256, 128).dense_threshold == 24


def test_the_readme_lists_every_variable_as_the_table_says() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert settings.markdown_table() in readme


def test_every_variable_the_project_names_is_in_the_table() -> None:
    known = {s.name for s in SETTINGS}
    named: set[str] = set()
    for folder in ("awq_autoselect", "tests", "scripts", "examples", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".md", ".sh") and path.is_file():
                named.update(re.findall(r"\bAWQ_AUTOSELECT_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")))
    named -= {m.strip() for m in (RESULT_MARKER, READY_MARKER, ROUND_MARKER)}  # the trial child's stdout markers
    assert named <= known, sorted(named - known)
    assert known <= named  # and every row is used somewhere
