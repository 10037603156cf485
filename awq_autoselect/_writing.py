"""Writing outputs without touching anything awq_autoselect did not write itself.

Invariant: a writing command (``convert``, ``make-synthetic``, ``report --demo``, ``bench --json/--csv/...``,
the trial cache) never deletes or replaces a file or directory that it did not create. Concretely:

- A destination that is, contains, or lies inside a source (after resolving links) is refused.
- A directory destination must be new, empty, or a directory awq_autoselect wrote: those carry a marker file,
  :data:`MARKER_NAME`, listing every entry written. Replacing one (``overwrite``) is refused while it holds
  anything the marker does not list.
- A directory is built in a hidden staging folder beside the destination and renamed into place, so a failure
  leaves nothing half-written. Staging folders record the process that made them; one left by a process that
  no longer runs (killed) is removed by the next write to the same destination.
- A file destination that exists is replaced only when it is recognisably ours (the caller says how), through a
  temporary file in the same folder and an atomic rename.
- New files and folders get the permissions the process's umask gives (not the 0600/0700 of ``tempfile``).

Imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .errors import OutputPathError

__all__ = [
    "MARKER_NAME",
    "check_directory_destination",
    "check_file_destination",
    "check_not_overlapping",
    "read_marker",
    "staged_directory",
    "write_file",
]

logger = logging.getLogger(__name__)

#: The file every directory awq_autoselect writes carries: what wrote it and every entry it wrote.
MARKER_NAME = ".awq-autoselect.json"
_TOOL = "awq-autoselect"
_STAGING = ".awq-autoselect-staging-"
_RETIRED = ".awq-autoselect-retired-"

PathLike = str | os.PathLike[str]


def _resolved(path: PathLike) -> Path:
    return Path(os.fspath(path)).expanduser().resolve()


def check_not_overlapping(destination: PathLike, sources: Sequence[PathLike], *, what: str) -> None:
    """Refuse a destination that is, contains, or lies inside one of ``sources`` (links resolved).

    Raises:
        OutputPathError: the destination overlaps a source.
    """
    dst = _resolved(destination)
    for source in sources:
        src = _resolved(source)
        if dst == src:
            relation = "is"
        elif dst in src.parents:
            relation = "contains"
        elif src in dst.parents:
            relation = "lies inside"
        else:
            continue
        raise OutputPathError(
            f"{what} {str(destination)!r} {relation} the source {str(source)!r}: writing there could destroy the "
            "source; choose a directory outside it"
        )


def read_marker(directory: PathLike) -> dict[str, object] | None:
    """The marker of a directory awq_autoselect wrote, or None (no marker, or not one of ours)."""
    path = Path(os.fspath(directory)) / MARKER_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("tool") != _TOOL or not isinstance(data.get("entries"), list):
        return None
    return data


def _entries(marker: dict[str, object]) -> set[str]:
    entries = marker.get("entries")
    return {str(e) for e in entries} if isinstance(entries, list) else set()


def check_directory_destination(
    destination: PathLike, *, sources: Sequence[PathLike] = (), overwrite: bool, what: str
) -> None:
    """Check that a directory may be written at ``destination`` (see the module docstring).

    Raises:
        OutputPathError: it overlaps a source, is a file, or is a non-empty directory that is not ours,
            that is ours but ``overwrite`` is false, or that holds entries we did not write.
    """
    check_not_overlapping(destination, sources, what=what)
    dst = Path(os.fspath(destination)).expanduser()
    if not dst.exists() and not dst.is_symlink():
        return
    if not dst.is_dir():
        raise OutputPathError(f"{what} {str(dst)!r} is a file: choose a new or empty directory")
    names = sorted(entry.name for entry in dst.iterdir())
    if not names:
        return
    marker = read_marker(dst)
    if marker is None:
        raise OutputPathError(
            f"{what} {str(dst)!r} is not empty and was not written by awq-autoselect (it has no {MARKER_NAME}): "
            "choose a new or empty directory; nothing was changed"
        )
    if not overwrite:
        raise OutputPathError(
            f"{what} {str(dst)!r} already holds a checkpoint awq-autoselect wrote: pass --overwrite "
            "(overwrite=True) to replace it, or choose another directory"
        )
    ours = _entries(marker)
    foreign = [name for name in names if name != MARKER_NAME and name not in ours]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputPathError(
            f"{what} {str(dst)!r} holds entries awq-autoselect did not write ({shown}): move them out or choose "
            "another directory; nothing was changed"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: the process exists, under another user
        return True
    return True


def _remove_abandoned(parent: Path, name: str) -> None:
    """Remove staging and retired folders for ``name`` left by processes of this host that no longer run."""
    host = socket.gethostname()
    for tag in (_STAGING, _RETIRED):
        prefix = f".{name}{tag}"
        try:
            candidates = [p for p in parent.iterdir() if p.name.startswith(prefix) and p.is_dir()]
        except OSError:
            return
        for folder in candidates:
            marker = read_marker(folder)
            if marker is None or marker.get("host") != host:
                continue
            pid = marker.get("pid")
            if isinstance(pid, int) and not _pid_alive(pid):
                logger.info("removing %s, left by process %d that no longer runs", folder, pid)
                shutil.rmtree(folder, ignore_errors=True)


def _umask() -> int:
    """This process's umask, read without changing it where the system allows (Linux: /proc)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def _apply_umask(root: Path) -> None:
    """Give everything under ``root`` the permissions a plain ``open``/``mkdir`` would (some writers, e.g.
    safetensors, create their files 0600)."""
    mask = _umask()
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o777 & ~mask)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)
    os.chmod(root, 0o777 & ~mask)


def _write_marker(directory: Path, *, kind: str, entries: Sequence[str], staging: bool) -> None:
    from ._version import __version__

    data = {
        "tool": _TOOL,
        "version": __version__,
        "kind": kind,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "staging": staging,
        "entries": sorted(entries),
    }
    _write_text(directory / MARKER_NAME, json.dumps(data, indent=1) + "\n")


def _new_name(parent: Path, base: str) -> Path:
    return parent / f"{base}{os.getpid()}-{secrets.token_hex(4)}"


def _remove_our_entries(folder: Path, entries: set[str]) -> None:
    """Delete the entries the marker lists, the marker, then the folder if nothing else is left in it."""
    for name in entries | {MARKER_NAME}:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


@contextlib.contextmanager
def staged_directory(
    destination: PathLike,
    *,
    kind: str,
    sources: Sequence[PathLike] = (),
    overwrite: bool = False,
    what: str = "output directory",
) -> Iterator[Path]:
    """Build a directory in a staging folder and move it to ``destination`` when the block succeeds.

    The block writes into the yielded folder. On success the marker is written (listing every entry), and the
    folder replaces ``destination``: a new or empty one directly; one of ours (``overwrite``) by moving it aside
    and deleting only what its marker lists. On any exception, ``KeyboardInterrupt`` and ``SystemExit``
    included, the staging folder is removed and ``destination`` is untouched.

    Raises:
        OutputPathError: see :func:`check_directory_destination` (checked before the block and again
            before the swap).
    """
    dst = Path(os.fspath(destination)).expanduser()
    check_directory_destination(dst, sources=sources, overwrite=overwrite, what=what)
    parent = dst.parent
    staging = _new_name(parent, f".{dst.name}{_STAGING}")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(parent, dst.name)
        os.mkdir(staging, 0o777)  # the umask decides the permissions, as for any directory the user makes
    except OSError as exc:
        raise OutputPathError(f"{what} {str(dst)!r} cannot be written: {exc}") from exc
    retired: Path | None = None
    old_entries: set[str] = set()
    try:
        _write_marker(staging, kind=kind, entries=(), staging=True)
        yield staging
        entries = [p.name for p in staging.iterdir() if p.name != MARKER_NAME]
        _write_marker(staging, kind=kind, entries=entries, staging=False)
        _apply_umask(staging)
        check_directory_destination(dst, sources=sources, overwrite=overwrite, what=what)
        if dst.is_dir():
            marker = read_marker(dst)
            if marker is None:  # checked above: an empty directory
                dst.rmdir()
            else:
                old_entries = _entries(marker)
                retired = _new_name(parent, f".{dst.name}{_RETIRED}")
                dst.rename(retired)
        staging.rename(dst)
    except OutputPathError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputPathError(f"writing {what} {str(dst)!r} failed: {exc}; nothing was changed there") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if retired is not None:
        _remove_our_entries(retired, old_entries)


def _write_text(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def check_file_destination(
    path: PathLike, *, owned: Callable[[Path], bool], sources: Sequence[PathLike] = (), what: str
) -> None:
    """Check that a file may be written at ``path``: new, or an existing file ``owned`` recognises as ours, in a
    folder this process may write (or create). Nothing is created: callers check before long work.

    Raises:
        OutputPathError: it lies inside a source, is a directory, exists and is not ours, or cannot be written
            (its folder is a file, or not writable: permissions, a read-only file system).
    """
    target = Path(os.fspath(path)).expanduser()
    check_not_overlapping(target, sources, what=what)
    if target.is_dir():
        raise OutputPathError(f"{what} {str(target)!r} is a directory: pass a file name")
    if target.exists() and not owned(target):
        raise OutputPathError(
            f"{what} {str(target)!r} exists and is not a file awq-autoselect wrote: choose another file name; "
            "nothing was changed"
        )
    _check_writable_folder(target, what)


def _check_writable_folder(target: Path, what: str) -> None:
    """Refuse a file whose folder (or the nearest part of it that exists, for folders still to be made) cannot
    be written."""
    folder = next((p for p in (target.parent, *target.parent.parents) if p.exists()), None)
    if folder is None:
        return
    if not folder.is_dir():
        raise OutputPathError(
            f"{what} {str(target)!r} cannot be written: {str(folder)!r} is a file, not a folder; choose another path"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"{what} {str(target)!r} cannot be written: this process may not write in {str(folder)!r} (permissions "
            "or a read-only file system); choose another folder"
        )


def write_file(
    path: PathLike,
    data: str | bytes | Callable[[Path], None],
    *,
    owned: Callable[[Path], bool],
    sources: Sequence[PathLike] = (),
    what: str = "output file",
) -> Path:
    """Write ``data`` to ``path`` atomically, never replacing a file that is not ours.

    ``data`` is text, bytes, or a function that writes the file at the path it is given (e.g. a plot).

    Raises:
        OutputPathError: see :func:`check_file_destination`.
    """
    target = Path(os.fspath(path)).expanduser()
    check_file_destination(target, owned=owned, sources=sources, what=what)
    parent = target.parent
    temporary = _new_name(parent, f".{target.name}{_STAGING}")
    if target.suffix:
        temporary = temporary.with_name(temporary.name + target.suffix)  # writers that look at the extension
    try:
        parent.mkdir(parents=True, exist_ok=True)
        if callable(data):
            data(temporary)
        else:
            raw = data.encode("utf-8") if isinstance(data, str) else data
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
        os.replace(temporary, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise OutputPathError(f"{what} {str(target)!r} cannot be written: {exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return target
