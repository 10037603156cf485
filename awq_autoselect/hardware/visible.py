"""``CUDA_VISIBLE_DEVICES`` read with CUDA's rules, before any device is looked at (docs/detection.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from awq_autoselect.errors import InvalidDeviceSpecError

__all__ = ["MIG_LEGACY_PATTERN", "DeviceId", "DeviceIdKind", "VisibleDevices", "parse_cuda_visible_devices"]


class DeviceIdKind(str, Enum):
    """The forms an entry of ``CUDA_VISIBLE_DEVICES`` can take."""

    INDEX = "index"  # 0, 1, ...: CUDA's ordinal of the GPU, see CUDA_DEVICE_ORDER
    GPU_UUID = "gpu-uuid"  # GPU-8932f937-d72c-4106-c12f-20bd9faed9f6, or any unique prefix of it
    MIG_UUID = "mig-uuid"  # MIG-<uuid>, as `nvidia-smi -L` prints it (R470 and later)
    MIG_LEGACY = "mig-legacy"  # MIG-GPU-<uuid>/<GPU instance id>/<compute instance id> (R450, R460)


@dataclass(frozen=True)
class DeviceId:
    """One entry of ``CUDA_VISIBLE_DEVICES``, as CUDA reads it.

    Attributes:
        kind: the entry's form.
        text: the entry as written, without surrounding spaces.
        index: the device ordinal, for :attr:`DeviceIdKind.INDEX`.
        gpu_uuid: the parent GPU's ``GPU-...`` UUID, for :attr:`DeviceIdKind.MIG_LEGACY`.
        gpu_instance: the GPU instance id, for :attr:`DeviceIdKind.MIG_LEGACY`.
        compute_instance: the compute instance id, for :attr:`DeviceIdKind.MIG_LEGACY`.
    """

    kind: DeviceIdKind
    text: str
    index: int | None = None
    gpu_uuid: str | None = None
    gpu_instance: int | None = None
    compute_instance: int | None = None


@dataclass(frozen=True)
class VisibleDevices:
    """``CUDA_VISIBLE_DEVICES`` read the way CUDA reads it, before looking at any device.

    Attributes:
        raw: the variable's value; ``None`` when it is unset.
        entries: the entries CUDA honours, in order; ``None`` when every device is visible (variable unset);
            empty when no device is visible.
        problems: what CUDA would do silently that the user probably did not mean: entries ignored after an
            invalid one, a repeated entry (which hides every device), digits read from a malformed entry.
    """

    raw: str | None
    entries: tuple[DeviceId, ...] | None
    problems: tuple[str, ...] = ()

    @property
    def all_devices(self) -> bool:
        """Whether the variable is unset, so that every device is visible."""
        return self.entries is None


_LEADING_INT = re.compile(r"[+-]?\d+")
#: ``MIG-GPU-<uuid>/<GPU instance>/<compute instance>`` (drivers R450, R460).
MIG_LEGACY_PATTERN = re.compile(r"MIG-(GPU-[0-9A-Za-z-]+)/(\d+)/(\d+)")


def _entry_form(entry: str) -> DeviceIdKind:
    if entry.startswith("MIG-"):
        return DeviceIdKind.MIG_UUID
    if entry.startswith("GPU-"):
        return DeviceIdKind.GPU_UUID
    return DeviceIdKind.INDEX


def parse_cuda_visible_devices(value: str | None, *, strict: bool = False) -> VisibleDevices:
    """Read ``CUDA_VISIBLE_DEVICES`` with CUDA's rules (no device is looked at; see docs/detection.md).

    - unset (``None``): every device is visible; an empty or blank string: none is.
    - entries are separated by commas; spaces around an entry are ignored.
    - integer entries are read like C's ``strtoul``: ``"1gpu"`` is ``1``; an entry without leading digits, or a
      negative number, ends the list (CUDA's documented example: ``0,2,-1,1`` shows devices 0 and 2).
    - the first entry fixes the form: after ``GPU-...`` entries, anything not starting with ``GPU-`` ends the
      list, and likewise for ``MIG-...`` and for indices (this is how PyTorch models CUDA; mixing is undocumented).
    - a repeated entry makes CUDA show no device at all.

    Entries that name no existing device (an index out of range, an unknown or ambiguous UUID prefix) also end
    the list; that needs the device table and is done by :func:`detect_compute_capability`.

    Args:
        value: the variable's value, ``None`` when unset.
        strict: raise instead of recording a problem in :attr:`VisibleDevices.problems`.

    Returns:
        The entries CUDA honours, and the problems found.

    Raises:
        InvalidDeviceSpecError: only with ``strict=True``, when CUDA would silently ignore or reinterpret part of
            the value (an entry after an invalid one, a repeated entry, ``1gpu`` read as ``1``, mixed forms).
    """
    if value is None:
        return VisibleDevices(None, None)
    items = [item.strip() for item in value.split(",")]
    if not value.strip():
        return VisibleDevices(value, ())
    form = _entry_form(items[0])
    entries: list[DeviceId] = []
    problems: list[str] = []
    for position, item in enumerate(items):
        entry, note, deliberate = _parse_entry(item, form)
        if entry is None:
            ignored = [rest for rest in items[position + 1 :] if rest]
            if ignored:
                problems.append(f"{note}: CUDA ignores what follows ({','.join(ignored)})")
            elif not deliberate:
                problems.append(f"{note}, so CUDA ignores it")
            break
        if note:
            problems.append(note)
        if any(entry.text == seen.text or (entry.index is not None and entry.index == seen.index) for seen in entries):
            problems.append(f"{item!r} is listed twice, and then CUDA shows no device at all")
            entries = []
            break
        entries.append(entry)
    if strict and problems:
        raise InvalidDeviceSpecError(
            f"CUDA_VISIBLE_DEVICES={value!r}: {problems[0]}. Expected a comma-separated list of device indices "
            "('0,1'), GPU UUIDs or unique UUID prefixes ('GPU-8932f937'), or a MIG identifier ('MIG-<uuid>'); "
            "fix the variable or unset it."
        )
    return VisibleDevices(value, tuple(entries), tuple(problems))


def _parse_entry(item: str, form: DeviceIdKind) -> tuple[DeviceId | None, str, bool]:
    """One entry -> (the entry, or None where it ends the list; a note; whether such an end looks deliberate)."""
    if form is DeviceIdKind.INDEX:
        match = _LEADING_INT.match(item)
        if not item:
            return None, "an empty entry ends the list", True
        if match is None:
            if item.startswith(("GPU-", "MIG-")):
                return None, f"{item!r} follows an index, and CUDA does not mix indices with UUIDs", False
            return None, f"{item!r} is not a device index", False
        number = int(match.group())
        if number < 0:
            return None, f"{item!r} is negative and ends the list", True
        note = ""
        if match.end() < len(item):
            note = f"{item!r} is read as index {number} (CUDA reads only the leading digits)"
        return DeviceId(DeviceIdKind.INDEX, item, index=number), note, False
    if form is DeviceIdKind.GPU_UUID:
        if not item.startswith("GPU-"):
            return None, f"{item!r} follows a GPU UUID, and CUDA does not mix UUIDs with other forms", not item
        return DeviceId(DeviceIdKind.GPU_UUID, item), "", False
    if not item.startswith("MIG-"):
        return None, f"{item!r} follows a MIG identifier, and CUDA does not mix it with other forms", not item
    if item.startswith("MIG-GPU-"):
        legacy = MIG_LEGACY_PATTERN.fullmatch(item)
        if legacy is None:
            return None, f"{item!r} is not of the form MIG-GPU-<uuid>/<GPU instance>/<compute instance>", False
        entry = DeviceId(
            DeviceIdKind.MIG_LEGACY,
            item,
            gpu_uuid=legacy.group(1),
            gpu_instance=int(legacy.group(2)),
            compute_instance=int(legacy.group(3)),
        )
        return entry, "", False
    return DeviceId(DeviceIdKind.MIG_UUID, item), "", False
