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
file, so two processes tuning at once cannot corrupt an entry. A process about to run a trial holds that entry's
own lock (``<entry>.lock``) while the trial runs: another process that wants the same entry waits for it (a bounded
wait) and reads the result instead of measuring it again. A corrupt, unreadable or stale entry is ignored with a
log line, never an exception.

Only what a trial says about the kernel is kept: *ok* results, and *broken* ones that a second child process
repeated (:attr:`~.records.TrialResult.cacheable`). An ok result may be marked *thin* (:meth:`TrialCache.mark_thin`:
it tied with another kernel within the noise while the host was busy); the next result stored for it replaces the
mark with the rest. :class:`CacheLookup` answers for one checkpoint on one device; :func:`cached_trials` is what
selection reads when it is given no measurements. A folder that cannot be written, a file in its place, or a
folder inside a model checkpoint is refused (:meth:`TrialCache.problem`): one
:class:`~awq_autoselect.errors.TrialCacheWarning` per process, and nothing is read or written there.
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
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from awq_autoselect import settings
from awq_autoselect._codec import from_json, to_json
from awq_autoselect._packages import dist_version
from awq_autoselect._writing import write_file
from awq_autoselect.catalogue import CATALOGUE, Kernel
from awq_autoselect.checkpoint import CheckpointInfo
from awq_autoselect.errors import TrialCacheWarning

from .records import LayerShape, RowTiming, TrialReport, TrialResult, TrialStatus

__all__ = [
    "CACHE_ENV",
    "PROTOCOL",
    "CacheEntry",
    "CacheLookup",
    "MachineKey",
    "QuantSignature",
    "TrialCache",
    "cache_dir",
    "cached_trials",
    "layer_shapes",
    "machine_key",
    "module_fingerprint",
    "signature_of",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the cache folder (:mod:`awq_autoselect.settings`).
CACHE_ENV = settings.CACHE_DIR
#: Version of what a trial measures and how; a new protocol invalidates every entry. 2: kernels that cannot store
#: a zero point of 0 (ExLlama, ExLlamaV2) are tried with zero points 1-15 (protocol 1 found them "wrong numbers").
#: 3: results carry a failure cause; only ok results and broken ones confirmed by a second child are stored
#: (protocol 2 stored timeouts and out-of-memory failures as broken).
#: 4: the kernels of a run are timed in rounds, in alternation; each timing keeps its rounds (the spread), each
#: result the host's load, and a CPU trial on a busy host runs its calls on the free CPUs' threads (protocol 3 timed
#: kernels one after another, and a busy moment decided which was faster).
PROTOCOL = 4
_SCHEMA = "awq-autoselect.trial/3"
_ENTRY = re.compile(r"[0-9a-f]{32}\.json")
_LOCK = re.compile(r"[0-9a-f]{32}\.lock")
_POLL_S = 0.2

_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def cache_dir() -> Path:
    """The cache folder (see the module docstring); not created until something is written.

    Raises:
        InvalidArgumentError: an ``AWQ_AUTOSELECT_*`` variable holds a bad value (:mod:`awq_autoselect.settings`).
    """
    explicit = settings.current().cache_dir
    if explicit is not None:
        return explicit
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


def _looks_like_checkpoint(folder: Path) -> bool:
    """A model's folder: a config.json next to weights (what transformers and AutoAWQ load)."""
    try:
        if not (folder / "config.json").is_file():
            return False
        return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")) or any(folder.glob("*.index.json"))
    except OSError:
        return False


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor or "/")


@dataclass(frozen=True)
class CacheEntry:
    """One file of the cache as ``awq-autoselect cache list`` shows it."""

    path: Path
    kernel: Kernel | None  # None: unreadable, or written by another protocol
    signature: QuantSignature | None
    machine: MachineKey | None
    checkpoint: str  # the checkpoint directory it was last measured for ("" when unknown)
    result: TrialResult | None
    problem: str = ""  # why the entry is not used ("" for a current one)


class TrialCache:
    """Read and write trial results in a cache folder (default :func:`cache_dir`)."""

    def __init__(self, root: Path | None = None) -> None:
        self.base = root if root is not None else cache_dir()
        self.root = self.base / "trials"

    def _path(self, key: Mapping[str, object]) -> Path:
        return self.root / f"{_digest(key)}.json"

    def problem(self, checkpoint: str | os.PathLike[str] | None = None) -> str | None:
        """Why this folder must not be used (``None``: it can be), checked without writing anything: it lies inside
        ``checkpoint`` or inside any folder that looks like a model checkpoint, it or a parent is a file, or it
        cannot be written."""
        try:
            resolved = self.base.expanduser().resolve()
        except (OSError, RuntimeError) as exc:
            return f"its path cannot be resolved ({exc})"
        if checkpoint is not None:
            model = Path(checkpoint).expanduser().resolve()
            if resolved == model or model in resolved.parents:
                return f"it lies inside the checkpoint being loaded ({model}), which must not be written to"
        for folder in (resolved, *resolved.parents):
            if _looks_like_checkpoint(folder):
                return f"it lies inside {folder}, which looks like a model checkpoint (config.json and weights)"
        existing = _nearest_existing(self.root)
        if not existing.is_dir():
            return f"{existing} is a file, not a folder"
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"{existing} cannot be written (permissions or a read-only file system)"
        return None

    def usable(self, checkpoint: str | os.PathLike[str] | None = None) -> bool:
        """Whether this folder may be read and written for ``checkpoint``'s trials; when not, warns once per
        process and folder with a :class:`~awq_autoselect.errors.TrialCacheWarning` naming the fix."""
        problem = self.problem(checkpoint)
        if problem is None:
            return True
        with _warned_lock:
            first = (str(self.base), problem) not in _warned
            _warned.add((str(self.base), problem))
        if first:
            warnings.warn(
                f"the trial cache folder {self.base} is not used: {problem}. Trial results are not cached, so "
                f"every load measures the kernels again; set {CACHE_ENV} to a writable folder outside any model "
                "checkpoint",
                TrialCacheWarning,
                stacklevel=3,
            )
        logger.info("trial cache %s not used: %s", self.base, problem)
        return False

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
        if result is not None and not result.cacheable:  # written by hand or by a bug: never trusted
            logger.warning("ignoring trial cache entry of %s: a %s result is never cached", kernel.value, result.status)
            return None
        return None if result is None else _with_counts(result, shapes)

    @contextlib.contextmanager
    def claim(
        self,
        machine: MachineKey,
        kernel: Kernel,
        signature: QuantSignature,
        *,
        wait_s: float,
        on_wait: Callable[[], None] | None = None,
    ) -> Iterator[bool]:
        """Hold the lock of one entry while its trial runs, so that another process wanting the same entry waits
        for the result instead of measuring it again. Waits up to ``wait_s`` for a process that holds it
        (``on_wait`` is called once when waiting starts); yields whether the lock is held (``False``: the wait ran
        out, and the caller runs its own trial)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no waiting, atomic renames alone
            yield True
            return
        self.root.mkdir(parents=True, exist_ok=True)
        lock = self.root / f"{_digest(_entry_key(machine, kernel, signature))}.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        held = False
        try:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    held = True
                    break
                except BlockingIOError:
                    if on_wait is not None:
                        on_wait()
                        on_wait = None
                    if time.monotonic() >= deadline:
                        logger.warning(
                            "waited %.0f s for another process's trial of %s; running it here", wait_s, kernel.value
                        )
                        break
                    time.sleep(_POLL_S)
            yield held
        finally:
            if held:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def entries(self) -> tuple[CacheEntry, ...]:
        """Every entry file of the folder, readable or not, oldest measurement first."""
        if not self.root.is_dir():
            return ()
        found: list[CacheEntry] = []
        for path in sorted(p for p in self.root.iterdir() if _ENTRY.fullmatch(p.name)):
            found.append(_entry_of(path))
        return tuple(sorted(found, key=lambda e: (e.result is None, e.result.measured_at if e.result else "")))

    def clear(self, signature: QuantSignature | None = None) -> tuple[Path, ...]:
        """Delete the entries for ``signature`` (every machine and kernel), or every entry; returns the files
        deleted. Only this cache's own files are touched (entry and lock files, by their names)."""
        if not self.root.is_dir():
            return ()
        removed: list[Path] = []
        with self._locked():
            for entry in self.entries():
                if signature is not None and entry.signature != signature:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    entry.path.unlink()
                    removed.append(entry.path)
                self._remove_lock(entry.path.with_suffix(".lock"))
            if signature is None:
                for lock in [p for p in self.root.iterdir() if _LOCK.fullmatch(p.name)]:
                    self._remove_lock(lock)
        return tuple(removed)

    @staticmethod
    def _remove_lock(lock: Path) -> None:
        """Delete an entry's lock file unless a process holds it (its trial is running)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock files
            return
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock.unlink()
        except OSError:
            pass  # held: its trial is running; the file stays
        finally:
            os.close(fd)

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

    def put(
        self,
        machine: MachineKey,
        kernel: Kernel,
        signature: QuantSignature,
        result: TrialResult,
        checkpoint: str | os.PathLike[str] | None = None,
    ) -> Path:
        """Store ``result`` (merged with the row counts already stored for the same key); returns the file.

        ``checkpoint`` (the directory measured for) is kept for ``awq-autoselect cache list``; it is not part of
        the key: checkpoints with the same quantization signature share their entries.

        Raises:
            ValueError: ``result`` is not cacheable (inconclusive, or broken and not confirmed).
            OutputPathError: the entry cannot be written.
        """
        if not result.cacheable:
            raise ValueError(f"a {result.status} trial result that is not confirmed is never cached")
        key = _entry_key(machine, kernel, signature)
        path = self._path(key)
        with self._locked():
            old = self._read(path, key)
            merged = result if old is None else _merge(old, result)
            record = {"schema": _SCHEMA, "key": key, "checkpoint": "" if checkpoint is None else str(checkpoint)}
            text = json.dumps({**record, "result": to_json(merged)}, indent=1, default=str)
            write_file(
                path, text + "\n", owned=lambda p: _ENTRY.fullmatch(p.name) is not None, what="trial cache entry"
            )
        return path

    def mark_thin(self, machine: MachineKey, kernel: Kernel, signature: QuantSignature, why: str) -> bool:
        """Set the stored result's :attr:`~.records.TrialResult.thin` to ``why`` (a result measured again replaces
        it, and the mark with it); whether there was an ok entry to mark.

        Raises:
            OutputPathError: the entry cannot be written.
        """
        key = _entry_key(machine, kernel, signature)
        path = self._path(key)
        with self._locked():
            old = self._read(path, key)
            if old is None or not old.ok or old.thin == why:
                return old is not None and old.ok
            data = json.loads(path.read_text(encoding="utf-8"))
            data["result"] = to_json(dataclasses.replace(old, thin=why))
            write_file(
                path,
                json.dumps(data, indent=1, default=str) + "\n",
                owned=lambda p: _ENTRY.fullmatch(p.name) is not None,
                what="trial cache entry",
            )
        return True


def _entry_of(path: Path) -> CacheEntry:
    """What one entry file holds, or why it cannot be used."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return CacheEntry(path, None, None, None, "", None, f"unreadable ({exc})")
    if not isinstance(data, dict) or data.get("schema") != _SCHEMA:
        schema = data.get("schema") if isinstance(data, dict) else None
        return CacheEntry(path, None, None, None, "", None, f"written by another version ({schema})")
    key = data.get("key")
    try:
        assert isinstance(key, dict)
        result = from_json(TrialResult, data.get("result"))
        assert isinstance(result, TrialResult)
        raw = key["signature"]
        signature = QuantSignature(
            bits=int(raw["bits"]),
            group_size=int(raw["group_size"]),
            zero_point=bool(raw["zero_point"]),
            shapes=tuple((int(k), int(n)) for k, n in raw["shapes"]),
        )
        machine = MachineKey(**key["machine"])
    except Exception as exc:  # a malformed entry, whatever the error: listed as such
        return CacheEntry(path, None, None, None, "", None, f"malformed ({type(exc).__name__}: {exc})")
    problem = "" if key.get("protocol") == PROTOCOL else f"trial protocol {key.get('protocol')}, not {PROTOCOL}"
    if not problem and result.status is TrialStatus.INCONCLUSIVE:
        problem = "an inconclusive result (never used)"
    checkpoint = data.get("checkpoint")
    return CacheEntry(
        path, result.kernel, signature, machine, checkpoint if isinstance(checkpoint, str) else "", result, problem
    )


def layer_shapes(info: CheckpointInfo) -> tuple[LayerShape, ...]:
    """The checkpoint's distinct quantized layer shapes, with how many layers have each."""
    counts: dict[tuple[int, int], int] = {}
    for layer in info.layers:
        key = (layer.in_features, layer.out_features)
        counts[key] = counts.get(key, 0) + 1
    return tuple(LayerShape(k, n, c) for (k, n), c in sorted(counts.items()))


def signature_of(info: CheckpointInfo) -> QuantSignature:
    """The checkpoint's quantization signature (the cache key's checkpoint part)."""
    return QuantSignature(
        bits=info.quant.bits, group_size=info.quant.group_size, zero_point=info.quant.zero_point, shapes=info.shapes()
    )


class CacheLookup:
    """The cache entries that answer for one checkpoint on one device at some row counts."""

    def __init__(self, info: CheckpointInfo, device: str, rows: Sequence[int], cache: TrialCache | None) -> None:
        self.store = cache if cache is not None else TrialCache()
        self.enabled = self.store.usable(info.path)  # a refused folder is neither read nor written
        self.checkpoint = info.path
        self.machine: MachineKey = machine_key(device)
        self.signature = signature_of(info)
        self.shapes = layer_shapes(info)
        self.wanted = frozenset(int(r) for r in rows)

    def answer(self, kernel: Kernel) -> TrialResult | None:
        """The cached result if it answers: broken, or measured at every wanted row count."""
        if not self.enabled:
            return None
        cached = self.store.get(self.machine, kernel, self.signature, self.shapes)
        if cached is not None and (not cached.ok or self.wanted <= cached.rows_measured()):
            return cached
        return None

    def keep(self, kernel: Kernel, result: TrialResult) -> None:
        """Cache ``result`` when it may be cached; an unwritable entry costs a re-run later, nothing more."""
        if not self.enabled or not result.cacheable:
            return
        try:
            self.store.put(self.machine, kernel, self.signature, result, self.checkpoint)
        except Exception as exc:
            logger.warning("could not cache the trial of %s: %s", kernel.value, exc)

    def mark_thin(self, kernel: Kernel, why: str) -> bool:
        """Mark the cached result of ``kernel`` thin (:attr:`TrialResult.thin`), so that the next load on a quiet
        host measures it again; whether an entry was marked."""
        if not self.enabled:
            return False
        try:
            return self.store.mark_thin(self.machine, kernel, self.signature, why)
        except Exception as exc:
            logger.warning("could not mark the trial of %s thin: %s", kernel.value, exc)
            return False


def cached_trials(info: CheckpointInfo, kernels: Sequence[Kernel], *, device: str, rows: Sequence[int]) -> TrialReport:
    """What the cache knows for ``kernels`` (no trial is run); kernels without an answer are left out.

    Raises:
        InvalidArgumentError: an ``AWQ_AUTOSELECT_*`` variable holds a bad value (:mod:`awq_autoselect.settings`).
    """
    lookup = CacheLookup(info, device, rows, None)
    found = [cached for kernel in kernels if (cached := lookup.answer(kernel)) is not None]
    return TrialReport(
        device=device, results=tuple(found), from_cache=tuple(r.kernel for r in found), checkpoint=str(info.path)
    )
