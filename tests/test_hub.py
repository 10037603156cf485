"""hub.py: Hugging Face Hub model IDs resolved to local directories, through every entry point and the CLI.

The cache tests lay real tiny AutoAWQ checkpoints out in a temporary ``HF_HOME`` the way huggingface_hub itself
does (each file's content once in ``blobs/``, named by its hash; ``snapshots/<commit>/<file>`` symlinks into
``../../blobs``; ``refs/<branch>`` holding the commit) and run offline. What only the network can answer (a
gated or missing repository, an HTTP error, a download) comes from a patched ``snapshot_download`` that raises
huggingface_hub's real exception classes, or lays out the files a download with the requested patterns would
fetch (matched by huggingface_hub's own pattern filter). No test reaches a network.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx2
import huggingface_hub
import pytest
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import errors as hf_errors
from huggingface_hub.utils._paths import filter_repo_objects  # the filter snapshot_download applies

from awq_autoselect.bench import Status, benchmark_versions
from awq_autoselect.catalogue import Layout
from awq_autoselect.checkpoint import read_checkpoint
from awq_autoselect.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_USAGE
from awq_autoselect.conversion import convert_checkpoint
from awq_autoselect.errors import (
    CheckpointAccessError,
    CheckpointError,
    CheckpointNotFoundError,
    FallbackWarning,
    InvalidArgumentError,
    OutputPathError,
)
from awq_autoselect.hub import (
    DOWNLOAD_PATTERNS,
    CheckpointSource,
    HubOrigin,
    hub_cache_dir,
    hub_offline,
    is_hub_id,
    resolve_checkpoint,
)
from awq_autoselect.loading import load_quantized_auto
from awq_autoselect.selection import select_awq_version
from tests.helpers import QuantizedFactory, run_cli

REPO = "org/tiny-AWQ"
COMMIT_A = hashlib.sha1(b"commit a").hexdigest()
COMMIT_B = hashlib.sha1(b"commit b").hexdigest()
COMMIT_C = hashlib.sha1(b"commit c").hexdigest()
TOKENIZER = ("tokenizer.json", "tokenizer_config.json")


# --- a Hugging Face cache on disk, as huggingface_hub lays it out ---------------------------------------------


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lay_out(cache: Path, repo_id: str, commit: str, files: Mapping[str, bytes], branches: Sequence[str] = ()) -> Path:
    """Write ``files`` into the cache folder ``cache`` as huggingface_hub does; the snapshot folder.

    Large (LFS) files, the weights, are blobs named by their SHA-256, the others by their git blob id; each
    snapshot entry is a relative symlink to its blob; ``refs/<branch>`` holds the bare commit hash.
    """
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest() if name.endswith(".safetensors") else _git_blob_id(data)
        blob = repo / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(blob, link.parent))
    for branch in branches:
        ref = repo / "refs" / branch
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
    return snapshot


def files_of(checkpoint: Path, *, skip: Sequence[str] = ()) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(checkpoint.iterdir()) if p.is_file() and p.name not in skip}


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary HF_HOME, offline; the cache the resolver uses is ``hf_home / "hub"``."""
    home = tmp_path / "hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def publish(
    hf_home: Path, checkpoint: Path, *, commit: str = COMMIT_A, branches: Sequence[str] = ("main",), **kw: Any
) -> Path:
    """Put ``checkpoint`` in the offline cache as ``REPO`` at ``commit``; the snapshot folder."""
    return lay_out(hf_home / "hub", REPO, commit, files_of(checkpoint, **kw), branches)


# --- the network, where a test needs an answer only it could give ---------------------------------------------


def _response(status: int) -> httpx2.Response:
    return httpx2.Response(status, request=httpx2.Request("GET", f"https://huggingface.co/api/models/{REPO}"))


class FakeHub:
    """``snapshot_download`` answering as the Hub would: an exception, or the files of ``remote`` that the call's
    patterns select (huggingface_hub's own filter), laid out in the call's cache folder at ``COMMIT_A``."""

    def __init__(self, remote: Mapping[str, bytes] | None = None, error: Exception | None = None) -> None:
        self.remote = dict(remote or {})
        self.error = error
        self.calls: list[dict[str, Any]] = []

    def __call__(self, repo_id: str, **kwargs: Any) -> str:
        self.calls.append({"repo_id": repo_id, **kwargs})
        if self.error is not None:
            raise self.error
        assert kwargs["revision"] in ("main", COMMIT_A)
        chosen = filter_repo_objects(
            self.remote, allow_patterns=kwargs["allow_patterns"], ignore_patterns=kwargs["ignore_patterns"]
        )
        snapshot = lay_out(Path(kwargs["cache_dir"]), repo_id, COMMIT_A, {n: self.remote[n] for n in chosen})
        return str(snapshot)


@pytest.fixture
def online(hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeHub], FakeHub]:
    """``online(FakeHub(...))``: offline mode off (in the environment and in huggingface_hub's constants) and the
    download answered by the fake, so nothing can reach the network."""

    def install(hub: FakeHub) -> FakeHub:
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
        return hub

    return install


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fails a test whose code asks huggingface_hub for a download it should not need."""
    asked: list[str] = []

    def refuse(repo_id: str, **kwargs: Any) -> str:
        asked.append(repo_id)
        raise AssertionError(f"snapshot_download({repo_id!r}) was called")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    return asked


# --- what is an ID, where the cache is ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("org/tiny-AWQ", True),
        ("TheBloke/Llama-2-7B-AWQ", True),
        ("Qwen/Qwen2.5-7B-Instruct-AWQ", True),
        ("a_b/c.d", True),
        ("gpt2", False),  # no namespace: taken for a local path
        ("/abs/model", False),
        ("./org/model", False),
        ("~/model", False),
        ("org/sub/model", False),
        ("org/na--me", False),
        ("org/na..me", False),
        ("org/.hidden", False),
        ("org/model.git", False),
        ("org/", False),
        ("org/" + "x" * 97, False),
    ],
)
def test_what_is_a_hub_id(text: str, expected: bool) -> None:
    assert is_hub_id(text) is expected


def test_cache_folder_and_offline_mode_are_read_when_called(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    assert hub_cache_dir() == Path.home() / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "legacy"))
    assert hub_cache_dir() == tmp_path / "legacy"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub_cache_dir() == tmp_path / "cache"

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_offline()  # set after huggingface_hub was imported: still offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not hub_offline()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "yes")
    assert hub_offline()
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    assert hub_offline()  # huggingface_hub would refuse every request anyway


# --- local paths -------------------------------------------------------------------------------------------------


def test_local_paths_stay_local(
    quantized: QuantizedFactory, hf_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_download: list[str]
) -> None:
    path = quantized(version="gemm", group_size=128)
    source = resolve_checkpoint(str(path))
    assert source == CheckpointSource(path)
    assert os.fspath(source) == str(path) == str(source)
    assert resolve_checkpoint(source) is source  # resolved once: never again

    with pytest.raises(InvalidArgumentError, match="revision='main' was given with the local path") as caught:
        resolve_checkpoint(str(path), revision="main")
    assert str(path) in str(caught.value)
    with pytest.raises(InvalidArgumentError, match="revision=' ': expected a branch"):
        resolve_checkpoint(REPO, revision=" ")

    with pytest.raises(CheckpointNotFoundError, match="does not exist") as missing:
        resolve_checkpoint("/nonexistent/model")
    assert "hf download" in str(missing.value)
    assert "huggingface-cli" not in str(missing.value)
    assert "\n" not in str(missing.value)
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        resolve_checkpoint(Path(REPO))  # a Path is a path, never an ID
    with pytest.raises(CheckpointNotFoundError, match="hf download"):
        read_checkpoint("/nonexistent/model")

    # A local directory spelled like an ID wins over the ID, even with the ID in the cache.
    publish(hf_home, quantized(version="gemv", group_size=128))
    monkeypatch.chdir(tmp_path)
    shutil.copytree(path, tmp_path / REPO)
    local = resolve_checkpoint(REPO)
    assert local.hub is None
    assert local.path == Path(REPO)
    quant = select_awq_version(REPO, device="cpu", measurements=False).quant
    assert quant is not None and quant.layout is Layout.GEMM
    assert no_download == []


# --- offline, from the cache -------------------------------------------------------------------------------------


def test_load_by_id_offline_loads_and_generates(
    quantized: QuantizedFactory, hf_home: Path, unchanged: Callable[[Path], None]
) -> None:
    path = quantized(version="gemm", group_size=128)
    snapshot = publish(hf_home, path)
    unchanged(hf_home)
    result = load_quantized_auto(REPO, device="cpu")  # trials as by default: they get the shapes, not the ID
    report = result.report
    assert report.hub == HubOrigin(REPO, "main", COMMIT_A)
    assert report.path == str(snapshot)
    assert Path(report.path).is_relative_to(hf_home / "hub")  # the temporary cache is the one used
    assert report.probe is not None and report.probe.ok
    assert report.to_dict()["hub"] == {"repo_id": REPO, "revision": "main", "commit": COMMIT_A}
    assert f"from hub:   {REPO} at main (commit {COMMIT_A[:12]})" in str(report)

    ids = torch.tensor([[1, 5, 9, 13]])
    generate = getattr(result.model, "generate")  # noqa: B009 - AutoAWQ's wrapper method, untyped
    generated = generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 8)
    assert report.kernel is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        local = load_quantized_auto(path, report.kernel.value, device="cpu", trials=False)
    assert local.report.hub is None
    expected = getattr(local.model, "generate")(input_ids=ids, max_new_tokens=4, do_sample=False)  # noqa: B009
    assert generated.tolist() == expected.tolist()


def test_revision_by_branch_and_by_commit(quantized: QuantizedFactory, hf_home: Path) -> None:
    publish(hf_home, quantized(version="gemm", group_size=128), commit=COMMIT_A, branches=("main",))
    publish(hf_home, quantized(version="gemv", group_size=128), commit=COMMIT_B, branches=("v2",))

    def layout(revision: str | None = None) -> Layout | None:
        quant = select_awq_version(REPO, device="cpu", measurements=False, revision=revision).quant
        return None if quant is None else quant.layout

    assert layout() is Layout.GEMM
    assert layout(revision="main") is Layout.GEMM
    assert layout(revision="v2") is Layout.GEMV
    assert layout(revision=COMMIT_A) is Layout.GEMM
    assert layout(revision=COMMIT_B) is Layout.GEMV

    branch = resolve_checkpoint(REPO, revision="v2")
    assert branch.hub == HubOrigin(REPO, "v2", COMMIT_B)
    assert branch.path.parts[-2:] == ("snapshots", COMMIT_B)
    assert str(branch.hub) == f"{REPO} at v2 (commit {COMMIT_B[:12]})"
    assert resolve_checkpoint(REPO, revision=COMMIT_B).hub == HubOrigin(REPO, COMMIT_B, COMMIT_B)
    assert resolve_checkpoint(branch) is branch
    with pytest.raises(InvalidArgumentError, match="resolved already"):
        resolve_checkpoint(branch, revision="main")

    for revision in ("v3", COMMIT_A[:7]):
        with pytest.raises(CheckpointNotFoundError) as caught:
            resolve_checkpoint(REPO, revision=revision)
        message = str(caught.value)
        assert (
            REPO in message and "HF_HUB_OFFLINE" in message and f"hf download {REPO} --revision {revision}" in message
        )
        assert f"holds this model, but not revision {revision!r}" in message
        assert "a branch or tag resolves only if downloaded before" in message
        assert "\n" not in message
    with pytest.raises(InvalidArgumentError, match="revision='v2' was given with a QuantConfig"):
        select_awq_version(read_checkpoint(branch).quant, revision="v2", device="cpu")


def test_select_convert_and_bench_from_an_id(
    quantized: QuantizedFactory, hf_home: Path, tmp_path: Path, unchanged: Callable[[Path], None]
) -> None:
    snapshot = publish(hf_home, quantized(version="gemm", group_size=128))
    unchanged(hf_home)
    selection = select_awq_version(REPO, device="cpu", measurements=False)
    assert selection.quant is not None and selection.quant.layout is Layout.GEMM

    out = convert_checkpoint(REPO, tmp_path / "as-gemv", "gemv", revision="main")
    assert read_checkpoint(out).layout is Layout.GEMV
    written = [p for p in out.iterdir() if p.name != ".awq-autoselect.json"]
    assert {p.name for p in written} >= {"config.json", "model.safetensors", *TOKENIZER}
    assert not any(p.is_symlink() for p in written)  # copies of the blobs, not links into the cache

    report = benchmark_versions(
        REPO,
        ("gemm_torch",),
        prompt_tokens=4,
        new_tokens=2,
        repeats=1,
        warmup=0,
        device="cpu",
        progress=False,
        kernel_time=False,
        trials=False,
    )
    assert report.settings.path == str(snapshot)  # every load got the local copy
    assert [r.status for r in report.results] == [Status.OK]


def test_a_bad_destination_fails_before_a_download(
    quantized: QuantizedFactory, hf_home: Path, tmp_path: Path, no_download: list[str]
) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("the user's")
    with pytest.raises(OutputPathError, match="not empty"):
        convert_checkpoint("org/never-fetched", foreign, "gemv")
    with pytest.raises(InvalidArgumentError):
        load_quantized_auto("org/never-fetched", device="cuda:x")
    with pytest.raises(InvalidArgumentError):
        benchmark_versions("org/never-fetched", ("gemv", "gemv"), device="cpu")
    assert no_download == []
    assert (foreign / "notes.txt").read_text() == "the user's"


def test_offline_errors_name_the_id_and_the_fix(quantized: QuantizedFactory, hf_home: Path, tmp_path: Path) -> None:
    path = quantized(version="gemm", group_size=128)

    def error(**kwargs: str) -> CheckpointNotFoundError:
        with pytest.raises(CheckpointNotFoundError) as caught:
            resolve_checkpoint(REPO, **kwargs)
        message = str(caught.value)
        assert REPO in message and "HF_HUB_OFFLINE" in message and f"hf download {REPO}" in message, message
        assert "\n" not in message
        return caught.value

    assert "not in the Hugging Face cache" in str(error())  # nothing cached at all

    # Only part of the repository cached (config, tokenizer; no weights): huggingface_hub returns the snapshot.
    publish(hf_home, path, skip=("model.safetensors",))
    assert "has no *.safetensors weights" in str(error())

    # The index names a shard the cache does not hold.
    index = {"metadata": {}, "weight_map": {"a.qweight": "model-00001-of-00002.safetensors", "b.qweight": "x"}}
    files = {**files_of(path), "model.safetensors.index.json": json.dumps(index).encode()}
    lay_out(hf_home / "hub", REPO, COMMIT_B, files, ("sharded",))
    assert "lacks model-00001-of-00002.safetensors" in str(error(revision="sharded"))

    # An empty snapshot: no config.json.
    lay_out(hf_home / "hub", REPO, COMMIT_C, {}, ("empty",))
    assert "has no config.json" in str(error(revision="empty"))


# --- online: the Hub's answers, from real huggingface_hub exception classes ----------------------------------


def _local_entry_error() -> Exception:
    error = hf_errors.LocalEntryNotFoundError("An error happened while trying to locate the files on the Hub")
    error.__cause__ = httpx2.ConnectError("[Errno -3] Temporary failure in name resolution")
    return error


@pytest.mark.parametrize(
    ("make", "expected", "needles"),
    [
        (
            lambda: hf_errors.GatedRepoError("403 Client Error. Cannot access gated repo", response=_response(403)),
            CheckpointAccessError,
            ("is gated", f"https://huggingface.co/{REPO}", "hf auth login", "HF_TOKEN"),
        ),
        (
            lambda: hf_errors.RepositoryNotFoundError(
                "401 Client Error. Repository Not Found", response=_response(401)
            ),
            CheckpointNotFoundError,
            ("was not found", "private", "hf auth login", "HF_TOKEN"),
        ),
        (
            lambda: hf_errors.RevisionNotFoundError("404 Client Error. Revision Not Found", response=_response(404)),
            CheckpointNotFoundError,
            ("has no revision 'main'",),
        ),
        (
            lambda: hf_errors.HfHubHTTPError("401 Client Error: Unauthorized", response=_response(401)),
            CheckpointAccessError,
            ("HTTP 401", "hf auth login"),
        ),
        (
            lambda: hf_errors.HfHubHTTPError("500 Server Error\nInternal Error", response=_response(500)),
            CheckpointError,
            ("HTTP 500", "retry later"),
        ),
        (_local_entry_error, CheckpointError, ("the Hub cannot be reached", "name resolution", "not in the")),
        (
            lambda: hf_errors.IncompleteSnapshotError("1 file(s) are missing", snapshot_path="/cache/snapshot"),
            CheckpointNotFoundError,
            ("is incomplete", f"hf download {REPO}"),
        ),
        (lambda: PermissionError(13, "Permission denied"), OutputPathError, ("set HF_HOME",)),
    ],
    ids=[
        "gated",
        "not-found",
        "revision",
        "unauthorized",
        "server-error",
        "no-network",
        "incomplete-snapshot",
        "cache-not-writable",
    ],
)
def test_hub_answers_become_one_line_errors(
    online: Callable[[FakeHub], FakeHub],
    make: Callable[[], Exception],
    expected: type[Exception],
    needles: tuple[str, ...],
) -> None:
    cause = make()
    online(FakeHub(error=cause))
    with pytest.raises(expected) as caught:
        load_quantized_auto(REPO, device="cpu")
    message = str(caught.value)
    assert type(caught.value) is expected
    assert REPO in message and "\n" not in message
    for needle in needles:
        assert needle in message
    assert caught.value.__cause__ is cause


def test_a_download_fetches_only_what_a_load_reads(
    quantized: QuantizedFactory, online: Callable[[FakeHub], FakeHub], hf_home: Path
) -> None:
    checkpoint = files_of(quantized(version="gemm", group_size=128))
    duplicates = {
        "pytorch_model.bin": b"pickle",
        "model.pt": b"pickle",
        "tf_model.h5": b"hdf5",
        "flax_model.msgpack": b"msgpack",
        "onnx/model.onnx": b"onnx",
        "original/model.safetensors": checkpoint["model.safetensors"],
        "README.md": b"# tiny",
    }
    legacy = {"quant_config.json": b'{"zero_point": true, "q_group_size": 128, "w_bit": 4, "version": "GEMM"}'}
    hub = online(FakeHub({**checkpoint, **duplicates, **legacy}))
    source = resolve_checkpoint(REPO)
    assert source.hub == HubOrigin(REPO, "main", COMMIT_A)
    assert source.path.is_relative_to(hf_home / "hub")
    fetched = {str(p.relative_to(source.path)) for p in source.path.rglob("*") if p.is_file()}
    assert fetched == set(checkpoint) | set(legacy)
    assert read_checkpoint(source).layout is Layout.GEMM

    first, second = hub.calls
    assert first["revision"] == "main" and second["revision"] == COMMIT_A  # the weights come from the same commit
    assert first["local_files_only"] is False and first["cache_dir"] == str(hf_home / "hub")
    assert list(first["allow_patterns"]) == list(DOWNLOAD_PATTERNS)
    assert second["allow_patterns"] == ["*.safetensors"]
    assert not any(p.endswith((".bin", ".pt", ".h5", ".msgpack")) for p in first["allow_patterns"])


def test_a_sharded_download_fetches_the_shards_its_index_lists(
    quantized: QuantizedFactory, online: Callable[[FakeHub], FakeHub], tmp_path: Path
) -> None:
    sharded = convert_checkpoint(
        quantized(version="gemm", group_size=128), tmp_path / "sharded", "gemm", max_shard_bytes=400_000
    )
    files = files_of(sharded, skip=(".awq-autoselect.json",))
    shards = sorted(name for name in files if name.startswith("model-"))
    assert len(shards) > 1 and "model.safetensors.index.json" in files
    hub = online(FakeHub({**files, "consolidated.safetensors": files[shards[0]]}))
    source = resolve_checkpoint(REPO)
    assert sorted(p.name for p in source.path.glob("*.safetensors")) == shards
    assert hub.calls[1]["allow_patterns"] == shards
    assert len(read_checkpoint(source).weight_files) == len(shards)


def test_a_repository_without_safetensors_is_refused(
    quantized: QuantizedFactory, online: Callable[[FakeHub], FakeHub]
) -> None:
    files = files_of(quantized(version="gemm", group_size=128), skip=("model.safetensors",))
    online(FakeHub({**files, "pytorch_model.bin": b"pickle"}))
    with pytest.raises(CheckpointError, match=r"has no \*\.safetensors weights in its top folder") as caught:
        resolve_checkpoint(REPO)
    assert type(caught.value) is CheckpointError
    assert REPO in str(caught.value) and "\n" not in str(caught.value)


# --- the command line ----------------------------------------------------------------------------------------


def test_cli_load_select_report_and_convert_by_id(
    quantized: QuantizedFactory, hf_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWQ_AUTOSELECT_TRIALS", "0")  # trials see shapes only; the load test above runs them
    snapshot = publish(hf_home, quantized(version="gemm", group_size=128))
    publish(hf_home, quantized(version="gemv", group_size=128), commit=COMMIT_B, branches=("v2",))
    hub = {"repo_id": REPO, "revision": "main", "commit": COMMIT_A}

    argv = ("load", REPO, "--revision", "main", "--json", "--device", "cpu", "--generate", "the quick")
    code, out, err = run_cli(*argv, "--max-new-tokens", "3")
    assert code == EXIT_OK, err
    data = json.loads(out)
    assert data["hub"] == hub
    assert data["path"] == str(snapshot)
    assert isinstance(data["generated"], str)  # the tokenizer came down with the model

    code, out, err = run_cli("select", "--checkpoint", REPO, "--revision", "v2", "--device", "cpu", "--json")
    assert code == EXIT_OK, err
    data = json.loads(out)
    assert data["checkpoint"]["hub"] == {"repo_id": REPO, "revision": "v2", "commit": COMMIT_B}
    assert data["quant"]["version"] == "gemv"
    code, out, err = run_cli("select", "--checkpoint", REPO, "--device", "cpu")
    assert code == EXIT_OK, err
    assert out.startswith(f"checkpoint: {REPO} at main (commit {COMMIT_A[:12]}) -> {snapshot}\n")

    code, out, err = run_cli("report", "--checkpoint", REPO, "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["checkpoint"] == {"path": str(snapshot), "hub": hub}

    code, out, err = run_cli("convert", REPO, str(tmp_path / "v"), "--to", "gemv", "--revision", "main")
    assert code == EXIT_OK, err
    assert read_checkpoint(tmp_path / "v").layout is Layout.GEMV


@pytest.mark.parametrize(
    "argv",
    [
        ("load", REPO),
        ("select", "--checkpoint", REPO),
        ("report", "--checkpoint", REPO),
        ("tune", REPO),
        ("bench", REPO),
        ("convert", REPO, "OUT", "--to", "gemv"),
    ],
    ids=lambda argv: argv[0],
)
def test_cli_an_id_that_is_not_cached_offline_exits_3(hf_home: Path, tmp_path: Path, argv: tuple[str, ...]) -> None:
    code, _, err = run_cli(*(str(tmp_path / "out") if a == "OUT" else a for a in argv))
    assert code == EXIT_BAD_INPUT
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert REPO in err and "HF_HUB_OFFLINE" in err and f"hf download {REPO}" in err
    assert not (tmp_path / "out").exists()


def test_cli_hub_errors_exit_3_with_one_line(quantized: QuantizedFactory, online: Callable[[FakeHub], FakeHub]) -> None:
    hub = online(FakeHub(error=hf_errors.GatedRepoError("403 Client Error", response=_response(403))))
    code, _, err = run_cli("load", REPO, "--device", "cpu")
    assert code == EXIT_BAD_INPUT
    assert err.count("\n") == 1 and REPO in err and "hf auth login" in err

    hub.error = hf_errors.RepositoryNotFoundError("404 Client Error", response=_response(404))
    code, _, err = run_cli("bench", REPO, "--revision", "v1")
    assert code == EXIT_BAD_INPUT
    assert err.count("\n") == 1 and f"{REPO!r} (revision 'v1') was not found" in err

    hub.error = None
    hub.remote = {**files_of(quantized(version="gemm", group_size=128), skip=("model.safetensors",))}
    code, _, err = run_cli("select", "--checkpoint", REPO, "--device", "cpu")
    assert code == EXIT_BAD_INPUT
    assert err.count("\n") == 1 and REPO in err and "safetensors" in err


def test_cli_revision_misuse_is_a_usage_error(quantized: QuantizedFactory, hf_home: Path) -> None:
    path = str(quantized(version="gemm", group_size=128))
    for argv in (
        ("load", path, "--revision", "main"),
        ("select", "--revision", "main"),
        ("report", "--revision", "main"),
        ("load", REPO, "--revision", ""),
        ("load", REPO, "--revision", "a b"),
    ):
        code, out, err = run_cli(*argv)
        assert code == EXIT_USAGE, (argv, err)
        assert out == "" and err.count("\n") == 1 and "revision" in err
