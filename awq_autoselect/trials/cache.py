"""The on-disk cache of trial results, keyed by everything that changes the answer.

Where: ``$AWQ_AUTOSELECT_CACHE_DIR/trials``, else ``$XDG_CACHE_HOME/awq_autoselect/trials``, else
``~/.cache/awq_autoselect/trials``. One JSON file per entry, named by a hash of its key; the key is stored in the
file and compared on every read, so a hash collision or a file from another version is a miss, never a wrong
answer.

The key: the machine (GPU name, UUID and compute capability, driver, or the CPU model; torch, triton and Python
versions), the kernel and its extension module's file and content hash (a rebuilt ``awq_ext`` is a new key), the
checkpoint's quantization signature (bits, group size, zero point, the distinct layer shapes) and the trial
protocol's version. Timings are stored per row count; a later trial at other row counts adds to the entry.

Writes are atomic (a temporary file and a rename in the same folder) and serialised between processes by a lock
file, so two processes tuning at once cannot corrupt an entry. A corrupt, unreadable or stale entry is ignored
with a log line, never an exception.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import platform
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from awq_autoselect._codec import from_json, to_json
from awq_autoselect._packages import dist_version
from awq_autoselect._writing import write_file
from awq_autoselect.catalogue import CATALOGUE, Kernel

from .records import LayerShape, RowTiming, TrialResult

__all__ = [
    "CACHE_ENV",
    "PROTOCOL",
    "MachineKey",
    "QuantSignature",
    "TrialCache",
    "cache_dir",
    "machine_key",
    "module_fingerprint",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the cache folder.
CACHE_ENV = "AWQ_AUTOSELECT_CACHE_DIR"
#: Version of what a trial measures and how; a new protocol invalidates every entry. 2: kernels that cannot store
#: a zero point of 0 (ExLlama, ExLlamaV2) are tried with zero points 1-15 (protocol 1 found them "wrong numbers").
PROTOCOL = 2
_SCHEMA = "awq-autoselect.trial/1"
_ENTRY = re.compile(r"[0-9a-f]{32}\.json")


def cache_dir() -> Path:
    """The cache folder (see the module docstring); not created until something is written."""
    explicit = os.environ.get(CACHE_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "awq_autoselect"


@dataclass(frozen=True)
class MachineKey:
    """The machine a trial ran on, as far as it changes the answer."""

    device_type: str
    gpu_name: str | None
    gpu_uuid: str | None
    capability: str | None
    driver: str | None
    cpu: str | None
    torch: str | None
    triton: str | None
    python: str


@dataclass(frozen=True)
class QuantSignature:
    """What of a checkpoint changes a kernel's speed and correctness: bits, group size, zero point, shapes."""

    bits: int
    group_size: int
    zero_point: bool
    shapes: tuple[tuple[int, int], ...]  # distinct (in_features, out_features), sorted


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def machine_key(device: str) -> MachineKey:
    """The key of this machine for trials on ``device`` (``"cuda:0"``, ``"cpu"``). Imports no torch and creates
    no CUDA context (detection goes through NVML)."""
    device_type, _, index_text = device.partition(":")
    gpu_name = gpu_uuid = capability = driver = None
    if device_type == "cuda":
        from awq_autoselect.hardware import detect_compute_capability, driver_version

        detection = detect_compute_capability()
        index = int(index_text) if index_text else 0
        if index < len(detection.gpus):
            gpu = detection.gpus[index]
            gpu_name, gpu_uuid = gpu.name, gpu.mig_uuid or gpu.uuid
            capability = None if gpu.capability is None else str(gpu.capability)
        driver = driver_version()
    return MachineKey(
        device_type=device_type,
        gpu_name=gpu_name,
        gpu_uuid=gpu_uuid,
        capability=capability,
        driver=driver,
        cpu=_cpu_model() if device_type == "cpu" else None,
        torch=dist_version("torch"),
        triton=dist_version("triton"),
        python=platform.python_version(),
    )


_HASHES: dict[tuple[str, int, int], str] = {}


def module_fingerprint(name: str | None) -> str | None:
    """``"<file>:<sha256 prefix>"`` of an importable module (found without importing it), or ``None``."""
    if name is None:
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = None if spec is None else spec.origin
    if not origin or not os.path.isfile(origin):
        return None if spec is None else f"{name}:namespace"
    stat = os.stat(origin)
    key = (origin, stat.st_mtime_ns, stat.st_size)
    digest = _HASHES.get(key)
    if digest is None:
        sha = hashlib.sha256()
        with open(origin, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                sha.update(block)
        digest = _HASHES[key] = sha.hexdigest()[:16]
    return f"{origin}:{digest}"


def _entry_key(machine: MachineKey, kernel: Kernel, signature: QuantSignature) -> dict[str, object]:
    spec = CATALOGUE[kernel]
    return {
        "protocol": PROTOCOL,
        "machine": dataclasses.asdict(machine),
        "kernel": kernel.value,
        "module": module_fingerprint(spec.extension),
        "signature": dataclasses.asdict(signature),
    }


def _digest(key: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _with_counts(result: TrialResult, shapes: Sequence[LayerShape]) -> TrialResult:
    counts = {(s.in_features, s.out_features): s.count for s in shapes}
    fixed = tuple(
        dataclasses.replace(
            r,
            shape=dataclasses.replace(r.shape, count=counts.get((r.shape.in_features, r.shape.out_features), 1)),
        )
        for r in result.shapes
    )
    return dataclasses.replace(result, shapes=fixed)


def _merge(old: TrialResult, new: TrialResult) -> TrialResult:
    """``new``, plus the row counts only ``old`` measured (same kernel and outcome)."""
    if old.status is not new.status or not new.ok:
        return new
    by_shape = {(r.shape.in_features, r.shape.out_features): r for r in old.shapes}
    merged = []
    for shape in new.shapes:
        previous = by_shape.get((shape.shape.in_features, shape.shape.out_features))
        rows = {t.rows for t in shape.timings}
        extra: tuple[RowTiming, ...] = ()
        if previous is not None:
            extra = tuple(t for t in previous.timings if t.rows not in rows)
        merged.append(dataclasses.replace(shape, timings=tuple(sorted((*shape.timings, *extra), key=lambda t: t.rows))))
    return dataclasses.replace(new, shapes=tuple(merged))


class TrialCache:
    """Read and write trial results in a cache folder (default :func:`cache_dir`)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root if root is not None else cache_dir()) / "trials"

    def _path(self, key: Mapping[str, object]) -> Path:
        return self.root / f"{_digest(key)}.json"

    def _read(self, path: Path, key: Mapping[str, object]) -> TrialResult | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            logger.warning("ignoring unreadable trial cache entry %s: %s", path, exc)
            return None
        if not isinstance(data, dict) or data.get("schema") != _SCHEMA:
            logger.warning("ignoring trial cache entry %s: not a %s entry", path, _SCHEMA)
            return None
        if json.loads(json.dumps(data.get("key"), default=str)) != json.loads(json.dumps(key, default=str)):
            logger.info("ignoring stale trial cache entry %s: its key differs", path)
            return None
        try:
            result = from_json(TrialResult, data.get("result"))
        except Exception as exc:  # a malformed entry, whatever the error: a miss, never a crash
            logger.warning("ignoring corrupt trial cache entry %s: %s", path, exc)
            return None
        assert isinstance(result, TrialResult)
        return result

    def get(
        self, machine: MachineKey, kernel: Kernel, signature: QuantSignature, shapes: Sequence[LayerShape]
    ) -> TrialResult | None:
        """The cached result, with ``shapes``' layer counts, or ``None``."""
        key = _entry_key(machine, kernel, signature)
        result = self._read(self._path(key), key)
        return None if result is None else _with_counts(result, shapes)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: atomic renames alone
            yield
            return
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def put(self, machine: MachineKey, kernel: Kernel, signature: QuantSignature, result: TrialResult) -> Path:
        """Store ``result`` (merged with the row counts already stored for the same key); returns the file."""
        key = _entry_key(machine, kernel, signature)
        path = self._path(key)
        with self._locked():
            old = self._read(path, key)
            merged = result if old is None else _merge(old, result)
            text = json.dumps({"schema": _SCHEMA, "key": key, "result": to_json(merged)}, indent=1, default=str)
            write_file(
                path, text + "\n", owned=lambda p: _ENTRY.fullmatch(p.name) is not None, what="trial cache entry"
            )
        return path
