"""What a selection is asked about, resolved: the checkpoint from whatever form it came in, and the machine (the
device type, the GPU index, the compute capability of every GPU the model spans), given or detected.

Invariant: resolving reads files and asks detection, nothing more; it imports neither torch nor awq (detection
imports its sources inside its own functions, and never initializes a CUDA context).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple, TypeAlias, cast

from awq_autoselect.capability import CapabilityLike, ComputeCapability
from awq_autoselect.checkpoint import CheckpointInfo, QuantConfig, read_checkpoint
from awq_autoselect.devices import parse_device
from awq_autoselect.environment import Environment
from awq_autoselect.errors import InvalidArgumentError, InvalidDeviceSpecError
from awq_autoselect.hub import resolve_checkpoint

__all__ = ["CheckpointLike", "Machine", "checkpoint_inputs", "resolve_machine"]


def __dir__() -> list[str]:
    return __all__


#: Every form :func:`~awq_autoselect.selection.select_awq_version` takes a checkpoint in.
CheckpointLike: TypeAlias = str | os.PathLike[str] | QuantConfig | Mapping[str, object] | CheckpointInfo | None


class Machine(NamedTuple):
    """The machine selected for: ``device`` is a device type (``"cuda"``, ``"cpu"``, ...), ``gpu_index`` the GPU asked
    for (``None``: any), ``capabilities`` those of the GPUs the model spans (empty off CUDA), ``notes`` what the
    selection should say about how they were found."""

    device: str
    gpu_index: int | None
    capabilities: tuple[ComputeCapability, ...]
    notes: tuple[str, ...]


def checkpoint_inputs(
    checkpoint: CheckpointLike, revision: str | None
) -> tuple[QuantConfig | None, CheckpointInfo | None]:
    """The checkpoint's quantization config and, when a directory (or Hub ID) was given, the checkpoint read.

    Raises:
        InvalidArgumentError: ``revision`` with anything but a path or Hub ID.
        CheckpointError: (and subclasses) the checkpoint cannot be read or is not a usable AWQ checkpoint.
    """
    if revision is not None and not isinstance(checkpoint, (str, os.PathLike)):
        given = "no checkpoint" if checkpoint is None else f"a {type(checkpoint).__name__}"
        raise InvalidArgumentError(
            f"revision={revision!r} was given with {given}: a revision selects a version of a Hugging Face Hub "
            "model; pass its ID as the checkpoint, or leave revision out"
        )
    if checkpoint is None:
        return None, None
    if isinstance(checkpoint, CheckpointInfo):
        return checkpoint.quant, checkpoint
    if isinstance(checkpoint, QuantConfig):
        return checkpoint, None
    if isinstance(checkpoint, Mapping):
        nested = checkpoint.get("quantization_config")
        if isinstance(nested, Mapping):
            return QuantConfig.from_dict(nested), None
        return QuantConfig.from_dict(checkpoint), None
    info = read_checkpoint(resolve_checkpoint(checkpoint, revision=revision))
    return info.quant, info


def resolve_machine(
    capability: CapabilityLike | Sequence[CapabilityLike] | None, device: str | None, env: Environment
) -> Machine:
    """The device and capabilities to select for: as given, else detected (a detected GPU that this torch cannot
    use means the CPU).

    Raises:
        InvalidCapabilityError: ``capability`` cannot be parsed.
        InvalidDeviceSpecError: ``device`` is malformed, or names a GPU index this process does not see.
    """
    notes: list[str] = []
    parsed = parse_device(device) if device is not None else None
    device_type, device_index = (parsed.type, parsed.index) if parsed is not None else (None, None)
    capabilities: tuple[ComputeCapability, ...]
    if capability is not None:
        capabilities = _parse_capabilities(capability)
        if device_type is None:
            device_type = "cuda" if capabilities else "cpu"
    elif device_type not in (None, "cuda"):
        capabilities = ()
    else:
        found, capabilities, detect_notes = _detect(device_index)
        if device_type is None:
            gpu_ok, why = env.supports_device("cuda")
            if found and not gpu_ok:
                notes.append(f"a GPU was detected but {why}; selecting for the CPU")
                device_type = "cpu"
            else:
                device_type = "cuda" if found else "cpu"
        if device_type == "cuda" or not found:
            notes.extend(detect_notes)
    if device_type != "cuda":
        capabilities = ()
    return Machine(device_type, device_index, capabilities, tuple(notes))


def _is_single_capability(value: object) -> bool:
    if isinstance(value, (ComputeCapability, str, float, int)):
        return True
    return isinstance(value, tuple) and len(value) == 2 and all(type(v) is int for v in value)


def _parse_capabilities(
    capability: CapabilityLike | Sequence[CapabilityLike],
) -> tuple[ComputeCapability, ...]:
    items: Sequence[CapabilityLike] = (
        [cast("CapabilityLike", capability)]
        if _is_single_capability(capability)
        else cast("Sequence[CapabilityLike]", capability)
    )
    parsed: list[ComputeCapability] = []
    for item in items:
        cc = ComputeCapability.parse(item)
        if cc not in parsed:
            parsed.append(cc)
    return tuple(parsed)


def _detect(index: int | None) -> tuple[bool, tuple[ComputeCapability, ...], tuple[str, ...]]:
    """(a GPU is visible, the capabilities of the GPUs the model would use, notes)."""
    from awq_autoselect.hardware import detect_compute_capability

    detection = detect_compute_capability()
    notes: list[str] = []
    if not detection.gpus:
        reasons = "; ".join(detection.reasons) or "no source answered"
        notes.append(f"no GPU detected ({reasons})")
        return False, (), tuple(notes)
    if any(gpu.capability is None for gpu in detection.gpus):
        notes.append(f"a GPU's compute capability could not be read ({detection}): pass capability=")
    if index is not None:
        if index >= len(detection.gpus):
            raise InvalidDeviceSpecError(
                f"device 'cuda:{index}': this process sees {len(detection.gpus)} GPU(s) (cuda:0 to "
                f"cuda:{len(detection.gpus) - 1}); pick one of those or check CUDA_VISIBLE_DEVICES"
            )
        known = detection.gpus[index].capability
        return True, ((known,) if known is not None else ()), tuple(notes)
    capabilities = detection.capabilities
    if len(capabilities) > 1:
        notes.append(
            "GPUs of different compute capabilities are visible ("
            + ", ".join(str(cc) for cc in capabilities)
            + "): only kernels that run on all of them are considered; pass device='cuda:N' for one GPU"
        )
    return True, capabilities, tuple(notes)
