"""Where a checkpoint is: a local directory, or a Hugging Face Hub model ID resolved to one.

:func:`resolve_checkpoint` is the one place that turns what a caller passed (``"path/to/dir"``,
``Path(...)``, ``"org/model-AWQ"``) into a local directory; every entry point calls it before
:func:`awq_autoselect.checkpoint.read_checkpoint`, and everything after it (trials in child processes, the
benchmark's loads, AutoAWQ's ``from_quantized``) receives the local directory, never the ID again.

Rules:

- An existing local path wins over a Hub ID of the same spelling. A ``str`` of the form ``namespace/name``
  (Hugging Face's repository-name rules) that is not a local path is a Hub ID; a :class:`os.PathLike`
  (``Path``) is always local.
- Only the files a load reads come down: config.json, generation_config.json, a legacy quant_config.json, the
  safetensors weights (the shards its index lists, when there is one) and the index, tokenizer files and custom
  model code (``*.py``, for ``trust_remote_code``); never ``.bin``/``.pt``/``.h5``/``.msgpack`` duplicates or
  subfolders. huggingface_hub shows its progress bars (``HF_HUB_DISABLE_PROGRESS_BARS=1`` hides them).
- The cache folder and offline mode are read from the environment at call time (``HF_HUB_CACHE``,
  ``HUGGINGFACE_HUB_CACHE``, ``HF_HOME``, ``XDG_CACHE_HOME``; ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``), not
  from the values huggingface_hub read when it was imported: offline, a model resolves from the local cache only.
- Every failure is one line naming the ID and the fix: a :class:`~awq_autoselect.errors.CheckpointError` (or, for
  a cache folder that cannot be written, an :class:`~awq_autoselect.errors.OutputPathError`).

huggingface_hub is imported inside the functions that download; nothing here imports torch.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from ._version import __version__
from .errors import (
    AwqAutoselectError,
    CheckpointAccessError,
    CheckpointError,
    CheckpointNotFoundError,
    InvalidArgumentError,
    OutputPathError,
)

__all__ = [
    "DOWNLOAD_PATTERNS",
    "CheckpointSource",
    "HubOrigin",
    "hub_cache_dir",
    "hub_offline",
    "is_hub_id",
    "resolve_checkpoint",
]


def __dir__() -> list[str]:
    return __all__


logger = logging.getLogger(__name__)

#: Files of a repository's top folder that a load reads (besides the weights: see :func:`resolve_checkpoint`).
DOWNLOAD_PATTERNS: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "quant_config.json",  # AutoAWQ < 0.1.6 kept its quantization settings here
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "spiece.model",
    "*.tiktoken",
    "chat_template.jinja",
    "chat_template.json",
    "*.py",  # custom model code, read only with trust_remote_code=True
)
# fnmatch's "*" crosses "/": this keeps every download to the repository's top folder, which is what is read.
_TOP_FOLDER_ONLY = ["*/*"]
_INDEX = "model.safetensors.index.json"
_DEFAULT_REVISION = "main"
_COMMIT = re.compile(r"[0-9a-f]{40}")
# Hugging Face's rules for a repository name: letters, digits, "-", "_", "."; no "--" or ".."; no leading or
# trailing "-" or "."; at most 96 characters per part. Required here: the "namespace/" part.
_ID_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?")
_LOGIN = "log in with `hf auth login` or set HF_TOKEN"


@dataclass(frozen=True)
class HubOrigin:
    """Where on the Hugging Face Hub a checkpoint came from."""

    repo_id: str  # "org/model-AWQ"
    revision: str  # as asked: a branch, tag or commit ("main" when none was given)
    commit: str  # the commit the local snapshot holds

    def to_dict(self) -> dict[str, str]:
        """A JSON-ready dict."""
        return {"repo_id": self.repo_id, "revision": self.revision, "commit": self.commit}

    def __str__(self) -> str:
        at = "" if self.revision == self.commit else f" at {self.revision}"
        return f"{self.repo_id}{at} (commit {self.commit[:12]})"


@dataclass(frozen=True)
class CheckpointSource:
    """A checkpoint's local directory and, for a Hub model, where it came from.

    It is an :class:`os.PathLike` of the local directory, so it can be passed wherever a checkpoint path is taken
    (it is not resolved again) and to ``os.fspath``, ``Path(...)`` or transformers' ``from_pretrained``.
    """

    path: Path
    hub: HubOrigin | None = None

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        """How to name the checkpoint to a person: the Hub ID, else the directory's name."""
        return self.hub.repo_id if self.hub is not None else self.path.name

    def describe(self) -> str:
        """One line: the Hub origin and the local directory, or the directory alone."""
        return str(self.path) if self.hub is None else f"{self.hub} -> {self.path}"

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict: ``path`` and ``hub`` (``None`` for a local directory)."""
        return {"path": str(self.path), "hub": None if self.hub is None else self.hub.to_dict()}


def is_hub_id(text: str) -> bool:
    """Whether ``text`` has the form of a Hugging Face Hub model ID, ``namespace/name`` (not whether it exists)."""
    parts = text.split("/")
    return (
        len(parts) == 2
        and all(_ID_PART.fullmatch(part) for part in parts)
        and "--" not in text
        and ".." not in text
        and not text.endswith(".git")
    )


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """Whether the Hub must not be contacted: ``$HF_HUB_OFFLINE`` (else ``$TRANSFORMERS_OFFLINE``) now, or
    huggingface_hub's offline mode as it read it at import (it then refuses every request anyway)."""
    from huggingface_hub import constants

    return _is_true(os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")) or bool(
        constants.HF_HUB_OFFLINE
    )


def hub_cache_dir() -> Path:
    """The Hugging Face cache folder, by the environment now: ``$HF_HUB_CACHE``, ``$HUGGINGFACE_HUB_CACHE``,
    ``$HF_HOME/hub``, ``$XDG_CACHE_HOME/huggingface/hub``, ``~/.cache/huggingface/hub``, first set first."""
    env = os.environ
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            return Path(os.path.expandvars(env[name])).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def _one_line(text: object, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def resolve_checkpoint(path: str | os.PathLike[str], *, revision: str | None = None) -> CheckpointSource:
    """The local directory of a checkpoint given as a local path or as a Hugging Face Hub model ID.

    A local path is returned as it is (whether it holds a checkpoint is :func:`read_checkpoint`'s to say). A Hub
    ID is downloaded into the Hugging Face cache, only the files a load reads (:data:`DOWNLOAD_PATTERNS` and the
    safetensors weights), or found there when offline; the snapshot's directory is returned with its
    :class:`HubOrigin`. A :class:`CheckpointSource` is returned unchanged.

    Args:
        path: a local checkpoint directory, or a Hub ID ``namespace/name`` (a ``str``; a local path of the same
            spelling wins).
        revision: for a Hub ID, the branch, tag or commit hash to load (default: ``main``). Offline, a branch or
            tag resolves only when it was downloaded before; a full commit hash always does when cached.

    Raises:
        InvalidArgumentError: ``revision`` is given with a local directory (it would be ignored), or is empty.
        CheckpointNotFoundError: the path does not exist and is not a Hub ID; the model or revision is not on the
            Hub (or is private and this machine is not logged in); offline, it is not in the cache (or only in
            part); the repository has no config.json.
        CheckpointAccessError: the model is gated, or the Hub refused this machine's credentials.
        CheckpointError: the repository has no safetensors weights, or the Hub failed (an HTTP error, no
            network and no cached copy).
        OutputPathError: the cache folder cannot be written.
    """
    if revision is not None and not str(revision).strip():
        raise InvalidArgumentError(
            f"revision={revision!r}: expected a branch, tag or commit hash of a Hub model (or None for main)"
        )
    if isinstance(path, CheckpointSource):
        if revision is not None and (path.hub is None or revision != path.hub.revision):
            raise InvalidArgumentError(
                f"revision={revision!r} was given with {path.describe()}, which is resolved already: leave revision "
                "out, or resolve the Hub ID again with that revision"
            )
        return path
    text = os.fspath(path)
    if not text.strip():
        raise InvalidArgumentError(
            f"checkpoint path {text!r} is empty: pass the directory holding config.json and the *.safetensors "
            "weights ('.' for the current directory), or a Hub model ID such as 'org/model-AWQ'"
        )
    local = Path(text).expanduser()
    if local.exists() or not isinstance(path, str) or not is_hub_id(text):
        if revision is not None and local.exists():
            raise InvalidArgumentError(
                f"revision={revision!r} was given with the local path {text!r}: a revision selects a version of a "
                "Hugging Face Hub model and a local directory has none; leave revision out (or move the directory "
                "away if you meant the Hub ID)"
            )
        if not local.exists():
            raise CheckpointNotFoundError(
                f"checkpoint path {str(local)!r} does not exist: pass the local directory holding config.json and "
                "the *.safetensors weights, or a Hugging Face Hub ID such as 'org/model-AWQ' (to keep a copy in a "
                "folder of your own: hf download org/model-AWQ --local-dir DIR)"
            )
        return CheckpointSource(local)
    return _from_hub(text, revision)


def _from_hub(repo_id: str, revision: str | None) -> CheckpointSource:
    """Download (or find in the cache, offline) what a load of ``repo_id`` reads; the snapshot's directory."""
    asked = revision if revision is not None else _DEFAULT_REVISION
    offline = hub_offline()
    cache = hub_cache_dir()
    where = f"Hugging Face Hub model {repo_id!r}" + ("" if revision is None else f" (revision {revision!r})")

    def missing(what: str) -> NoReturn:
        _missing(where, what, repo_id=repo_id, revision=asked, offline=offline, cache=cache)

    # First what tells which weights to fetch, then the weights at the same commit, so both come from one commit.
    folder = _download(repo_id, asked, list(DOWNLOAD_PATTERNS), cache=cache, offline=offline, where=where)
    commit = folder.name
    if not (folder / "config.json").is_file():
        missing("has no config.json (it is not a Transformers model)")
    shards = _index_shards(folder)
    folder = _download(
        repo_id,
        commit if _COMMIT.fullmatch(commit) else asked,
        sorted(shards) if shards else ["*.safetensors"],
        cache=cache,
        offline=offline,
        where=where,
    )
    if shards:
        absent = sorted(name for name in shards if not (folder / name).is_file())
        if absent:
            missing(f"lacks {absent[0]}, a weights shard its index lists")
    elif not any(folder.glob("*.safetensors")):
        if offline:
            missing("has no *.safetensors weights")
        raise CheckpointError(
            f"{where} has no *.safetensors weights in its top folder (its weights may be PyTorch pickles, .bin): "
            "awq_autoselect reads safetensors only; use an AWQ model published as safetensors, or load this one "
            "with AutoAWQ and save_quantized() it to a local directory"
        )
    origin = HubOrigin(repo_id=repo_id, revision=asked, commit=commit)
    logger.info("%s resolved to %s", origin, folder)
    return CheckpointSource(folder, origin)


def _index_shards(folder: Path) -> set[str]:
    """The shard files the safetensors index names (empty without an index; a bad one is read_checkpoint's)."""
    try:
        weight_map = json.loads((folder / _INDEX).read_text(encoding="utf-8"))["weight_map"]
        return {str(name) for name in weight_map.values() if "/" not in str(name)}
    except FileNotFoundError:
        return set()
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.info("%s: unreadable index (%s); fetching every *.safetensors", folder / _INDEX, exc)
        return set()


def _missing(where: str, what: str, *, repo_id: str, revision: str, offline: bool, cache: Path) -> NoReturn:
    """Raise the error for a file a load needs that the snapshot does not have."""
    if offline:
        raise CheckpointNotFoundError(
            f"{where}: the copy in the Hugging Face cache ({cache}) {what} and HF_HUB_OFFLINE is set, so nothing "
            f"was downloaded: download it once with network access ({_download_command(repo_id, revision)}), or "
            "unset HF_HUB_OFFLINE"
        )
    raise CheckpointNotFoundError(
        f"{where} {what}, so it cannot be loaded: pass the ID of a complete AWQ-quantized model, or another revision"
    )


def _download_command(repo_id: str, revision: str) -> str:
    return f"hf download {repo_id}" + ("" if revision == _DEFAULT_REVISION else f" --revision {revision}")


def _download(repo_id: str, revision: str, patterns: list[str], *, cache: Path, offline: bool, where: str) -> Path:
    import huggingface_hub

    try:
        folder = huggingface_hub.snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=str(cache),
            local_files_only=offline,
            allow_patterns=patterns,
            ignore_patterns=_TOP_FOLDER_ONLY,
            library_name="awq_autoselect",
            library_version=__version__,
        )
    except Exception as exc:
        error = _translate(exc, where=where, repo_id=repo_id, revision=revision, offline=offline, cache=cache)
        if error is None:
            raise
        raise error from exc
    return Path(folder)


def _translate(
    exc: Exception, *, where: str, repo_id: str, revision: str, offline: bool, cache: Path
) -> AwqAutoselectError | None:
    """The project's error for one of huggingface_hub's (``None``: not one we know; it propagates)."""
    from huggingface_hub import errors as hf_errors

    incomplete: type[Exception] | None = getattr(hf_errors, "IncompleteSnapshotError", None)  # huggingface_hub 1.x+
    command = _download_command(repo_id, revision)
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, hf_errors.GatedRepoError):
        return CheckpointAccessError(
            f"{where} is gated: accept its conditions at https://huggingface.co/{repo_id} with your account, then "
            f"{_LOGIN}"
        )
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        return CheckpointNotFoundError(
            f"{where} was not found: it is neither a local directory nor a model on the Hub, or it is private and "
            f"this machine is not logged in ({_LOGIN})"
        )
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return CheckpointNotFoundError(
            f"{where}: the repository has no revision {revision!r}: pass one of its branches, tags or commit hashes, "
            "or leave the revision out for main"
        )
    if incomplete is not None and isinstance(exc, incomplete):
        return CheckpointNotFoundError(
            f"{where}: its copy in the Hugging Face cache ({cache}) is incomplete and the Hub cannot be reached: "
            f"download it once with network access ({command})"
        )
    # huggingface_hub's OfflineModeIsEnabled is a ConnectionError; it falls back to the cache on it, as on others.
    if isinstance(exc, (hf_errors.LocalEntryNotFoundError, ConnectionError)):
        if offline:
            # huggingface_hub's cache keeps a model in models--<namespace>--<name>
            if (cache / f"models--{repo_id.replace('/', '--')}").is_dir():
                what = f"the Hugging Face cache ({cache}) holds this model, but not revision {revision!r}"
                if not _COMMIT.fullmatch(revision):
                    what += " (offline, a branch or tag resolves only if downloaded before; a full commit hash does)"
            else:
                what = f"it is not in the Hugging Face cache ({cache})"
            return CheckpointNotFoundError(
                f"{where}: {what}, and HF_HUB_OFFLINE is set: download it once with network access ({command}), or "
                "unset HF_HUB_OFFLINE"
            )
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        return CheckpointError(
            f"{where} cannot be downloaded (the Hub cannot be reached: {_one_line(cause, 160)}) and is not in the "
            f"Hugging Face cache ({cache}): check the network or proxy, then retry"
        )
    if isinstance(exc, hf_errors.HfHubHTTPError):
        if status in (401, 403):
            return CheckpointAccessError(f"{where}: the Hub refused access (HTTP {status}): {_LOGIN}")
        return CheckpointError(f"{where}: the Hub answered HTTP {status or '?'} ({_one_line(exc, 160)}); retry later")
    if isinstance(exc, PermissionError):
        return OutputPathError(
            f"{where} cannot be written to the Hugging Face cache ({cache}): {_one_line(exc, 160)}; set HF_HOME "
            "(or HF_HUB_CACHE) to a folder you can write"
        )
    if isinstance(exc, OSError):
        return CheckpointError(f"{where} could not be downloaded: {_one_line(exc, 200)}")
    return None
