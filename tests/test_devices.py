"""devices.py: one parser for every device argument, and its resolution to a torch device here."""

from __future__ import annotations

import pytest
import torch

from awq_autoselect.devices import DeviceSpec, parse_device, resolve_device
from awq_autoselect.errors import InvalidDeviceSpecError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cuda", DeviceSpec("cuda", None)),
        ("CUDA:1", DeviceSpec("cuda", 1)),
        (" cpu ", DeviceSpec("cpu", None)),
        ("xpu:0", DeviceSpec("xpu", 0)),
        ("mps", DeviceSpec("mps", None)),
        (torch.device("cpu"), DeviceSpec("cpu", None)),
    ],
)
def test_parse(text: object, expected: DeviceSpec) -> None:
    assert parse_device(text) == expected
    assert str(parse_device(str(expected))) == str(expected)


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:-1", ":0", "", "npu", "cuda 0"])
def test_parse_refuses(bad: str) -> None:
    with pytest.raises(InvalidDeviceSpecError, match="expected 'cuda', 'cuda:N'"):
        parse_device(bad)


def test_resolve_follows_what_this_torch_has() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert resolve_device(None).type == "cuda"
        assert resolve_device("cuda") == torch.device("cuda", torch.cuda.current_device())
        with pytest.raises(InvalidDeviceSpecError, match="this process sees"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        assert resolve_device(None) == torch.device("cpu")
        with pytest.raises(InvalidDeviceSpecError, match="CUDA is not available"):
            resolve_device("cuda")
