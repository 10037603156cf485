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


@pytest.mark.parametrize("device", ["mps", "xpu", "xpu:0"])
def test_a_device_this_torch_cannot_use_is_refused_here(device: str) -> None:
    """A well-formed device that this torch cannot use (MPS on Linux) is an argument error now, not at the first
    tensor moved there after trials and a load."""
    backend = torch.backends.mps if device == "mps" else getattr(torch, "xpu", None)
    if backend is not None and backend.is_available():
        assert resolve_device(device).type == device.split(":", maxsplit=1)[0]
        return
    with pytest.raises(InvalidDeviceSpecError, match=rf"device '{device}': torch .* cannot use"):
        resolve_device(device)
