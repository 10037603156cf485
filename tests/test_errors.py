"""errors.py: one root, four bases, each class also a builtin; every class maps to a documented exit code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from awq_autoselect import errors
from awq_autoselect.cli import EXIT_CODES, exit_code
from awq_autoselect.cli import __doc__ as cli_doc

ROOT = Path(__file__).resolve().parents[1]
BASES = (errors.InvalidArgumentError, errors.InputError, errors.KernelError, errors.CudaContextPoisonedError)


def _classes() -> list[type[Exception]]:
    found = [getattr(errors, name) for name in errors.__all__]
    return [cls for cls in found if not issubclass(cls, Warning)]


def _instance(cls: type[Exception]) -> Exception:
    if cls is errors.NoCompatibleKernelError:
        return cls("m", {"gemv": ("r",)})
    if cls is errors.VersionUnavailableError:
        return cls("m", "gemv", ("r",))
    return cls("m")


def _documented_codes(text: str) -> set[int]:
    return {int(code) for code in re.findall(r"^\s*(\d)\s{2,}\S", text, flags=re.MULTILINE)}


@pytest.mark.parametrize("cls", _classes(), ids=lambda cls: cls.__name__)
def test_every_error_has_one_base_a_builtin_and_a_documented_exit_code(cls: type[Exception]) -> None:
    assert issubclass(cls, errors.AwqAutoselectError)
    if cls is errors.AwqAutoselectError:
        return
    assert sum(issubclass(cls, base) for base in BASES) == 1, f"{cls.__name__} must sit under exactly one base"
    builtins = [b for b in cls.__mro__ if b.__module__ == "builtins" and b not in (object, Exception, BaseException)]
    assert builtins, f"{cls.__name__} should also subclass the builtin that fits"
    code = exit_code(_instance(cls))
    assert code in {code for _, code in EXIT_CODES}
    assert code in _documented_codes(cli_doc or "")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"{code} " in readme.split("Exit codes:")[1].split("\n\n")[0]


def test_bases_map_to_distinct_codes() -> None:
    assert [base for base, _ in EXIT_CODES] == [errors.CudaContextPoisonedError, *BASES[:3]]
    assert len({code for _, code in EXIT_CODES}) == len(EXIT_CODES)
    assert exit_code(ValueError("not ours")) == 1


def test_payloads_are_typed() -> None:
    no_fit = errors.NoCompatibleKernelError("none", {"gemv": ("no awq_ext",)})
    assert no_fit.reasons == {"gemv": ("no awq_ext",)}
    unavailable = errors.VersionUnavailableError("no", "gemv", ("a", "b"))
    assert (unavailable.version, unavailable.reasons) == ("gemv", ("a", "b"))
    assert errors.KernelFailedError("all failed").attempts == ()


@pytest.mark.parametrize(
    "name",
    [
        "InvalidBenchmarkSettingsError",
        "InvalidWorkloadError",
        "StaticDecodeError",
        "SyntheticSpecError",
        "TorchInt4InputError",
        "UnknownModuleError",
        "PlotUnavailableError",
        "TritonUnavailableError",
        "UnsupportedModelTypeError",
        "UnsupportedQuantConfigError",
        "OutputDirNotEmptyError",
        "NoSuchError",
    ],
)
def test_names_of_0_1_0_merged_into_the_bases_are_gone(name: str) -> None:
    assert name not in errors.__all__
    with pytest.raises(AttributeError):
        getattr(errors, name)


def test_missing_dependency_is_an_import_error_and_an_argument_error() -> None:
    error = errors.MissingDependencyError("needs matplotlib")
    assert isinstance(error, ImportError)
    assert isinstance(error, ValueError)
    assert isinstance(errors.OutputPathError("x"), OSError)
    assert isinstance(errors.CheckpointNotFoundError("x"), FileNotFoundError)
