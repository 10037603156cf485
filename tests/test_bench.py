"""benchmark_versions() on CPU with real AutoAWQ checkpoints and the real loader. No timing assertions."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import re
import subprocess
import sys
import typing
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from awq_autoselect._awq import hf_model_of
from awq_autoselect.bench import (
    JSON_SCHEMA,
    SCHEMA,
    BatchResult,
    BenchmarkMode,
    BenchmarkReport,
    BenchmarkRow,
    BenchmarkSettings,
    KernelShare,
    LatencyStats,
    LoadSummary,
    RunKind,
    RunMetadata,
    RunRef,
    RunSample,
    Status,
    VersionResult,
    benchmark_versions,
    datasheet_bandwidth_gbps,
    plot,
    read_csv,
    validate_report_dict,
)
from awq_autoselect.bench.runner import default_loader, plan_mode, prompt_ids
from awq_autoselect.bench.traffic import kv_bytes_per_token, weight_bytes_per_token
from awq_autoselect.checkpoint import read_checkpoint
from awq_autoselect.errors import InvalidArgumentError, InvalidReportError, MissingDependencyError, UnknownVersionError
from awq_autoselect.loading import LoadResult
from tests.helpers import TINY_LLAMA, QuantizedFactory

PROMPT, NEW, REPEATS, WARMUP, SIZES = 8, 3, 2, 1, (1, 2)


@pytest.fixture(scope="module")
def checkpoint(quantized: QuantizedFactory) -> Path:
    return quantized(version="gemm", group_size=64)


Loader = Callable[[str, str, "str | None"], LoadResult]


@pytest.fixture(scope="module")
def loader() -> Loader:
    """The real loader (load_quantized_auto / load_dense_baseline), each version loaded once for this module.

    Benchmarks do not modify the models they run, so the tests share them instead of paying a load each.
    """
    cache: dict[tuple[str, str, str | None], LoadResult] = {}

    def load(path: str, version: str, device: str | None) -> LoadResult:
        key = (path, version, device)
        if key not in cache:
            cache[key] = default_loader(path, version, device)
        return cache[key]

    return load


def bench(checkpoint: Path, versions: tuple[str, ...], loader: Loader, **overrides: typing.Any) -> BenchmarkReport:
    """benchmark_versions() through its private seam, with the shared loader."""
    args: dict[str, typing.Any] = {
        "prompt_tokens": PROMPT,
        "new_tokens": NEW,
        "batch_sizes": (1,),
        "repeats": REPEATS,
        "warmup": WARMUP,
        "device": "cpu",
        "include_fp16": True,
        "cuda_graph": False,
        "decode": None,
        "prompt": None,
        "seed": 0,
        "progress": False,
        "kernel_time": True,
        "peak_bandwidth_gbps": None,
        **overrides,
    }
    return benchmark_versions(checkpoint, versions, loader=loader, **args)


@pytest.fixture(scope="module")
def report(checkpoint: Path, loader: Loader) -> BenchmarkReport:
    """gemm (needs CUDA: unavailable here), gemm_torch (runs) and the dense baseline, at batch sizes 1 and 2."""
    return bench(checkpoint, ("gemm", "gemm_torch"), loader, batch_sizes=SIZES)


def measured(report: BenchmarkReport) -> list[BatchResult]:
    return [b for r in report.results for b in r.batches if b.status is Status.OK]


# --- what was measured ------------------------------------------------------------------------------------


def test_versions_and_statuses(report: BenchmarkReport) -> None:
    assert report.settings.versions == ("gemm", "gemm_torch", "float32")  # the dense baseline is float32 on CPU
    assert report.mode is BenchmarkMode.INTERLEAVED
    assert [r.version for r in report.results] == ["gemm", "gemm_torch", "float32"]
    gemm_torch, dense = report.result("gemm_torch"), report.result("float32")
    assert gemm_torch.status is Status.OK
    assert gemm_torch.load is not None
    assert gemm_torch.kernel == "gemm_torch"
    assert dense.status is Status.OK
    assert dense.kernel is None
    assert [b.batch_size for b in gemm_torch.batches] == list(SIZES)
    assert all(b.status is Status.OK for b in (*gemm_torch.batches, *dense.batches))


def test_unavailable_version_has_a_reason_and_no_numbers(report: BenchmarkReport) -> None:
    gemm = report.result("gemm")
    assert gemm.status is Status.UNAVAILABLE
    assert gemm.reason is not None
    assert "cuda" in gemm.reason.lower()
    assert gemm.batches == ()
    assert gemm.load is None
    rows = [r for r in report.rows() if r.version == "gemm"]
    assert [r.batch_size for r in rows] == list(SIZES)
    assert all(r.status is Status.UNAVAILABLE and r.reason == gemm.reason and r.tpot_ms_median is None for r in rows)


def test_statistics_are_consistent(report: BenchmarkReport) -> None:
    batches = measured(report)
    assert len(batches) == 2 * len(SIZES)
    for batch in batches:
        for stats in (batch.ttft_ms, batch.tpot_ms, batch.e2e_ms):
            assert stats is not None
            assert stats.min <= stats.median <= stats.p90 <= stats.p99 <= stats.max
            assert stats.min <= stats.mean <= stats.max
            assert stats.std >= 0
        assert batch.tpot_ms is not None
        assert batch.tpot_ms.count == REPEATS * (NEW - 1)
        assert batch.tokens_per_s == pytest.approx(1000.0 / batch.tpot_ms.median)
        assert batch.aggregate_tokens_per_s == pytest.approx(batch.batch_size * 1000.0 / batch.tpot_ms.median)
        for sample in (*batch.warmups, *batch.samples):
            assert len(sample.step_ms) == NEW - 1
            assert sample.e2e_ms == pytest.approx(sample.ttft_ms + sum(sample.step_ms))
        # CPU: wall times only
        assert batch.kernel_ms_per_token is None
        assert batch.kernel_time_note is not None
        assert batch.peak_memory_bytes is None
        assert batch.bandwidth_fraction is None


def test_warmups_are_kept_apart_and_counted(report: BenchmarkReport) -> None:
    for batch in measured(report):
        assert [s.repeat for s in batch.warmups] == list(range(WARMUP))
        assert [s.repeat for s in batch.samples] == list(range(REPEATS))
        warm_orders = {s.order for s in batch.warmups}
        assert max(warm_orders) < min(s.order for s in batch.samples)  # every warmup before the measured runs
    kinds = [ref.kind for ref in report.run_order]
    runs_per_kind = 2 * len(SIZES)  # two loaded versions
    assert kinds.count(RunKind.WARMUP) == WARMUP * runs_per_kind
    assert kinds.count(RunKind.MEASURED) == REPEATS * runs_per_kind
    assert kinds.count(RunKind.PROFILE) == 0  # no CUDA, no profiler run
    assert [ref.order for ref in report.run_order] == list(range(len(report.run_order)))


def test_runs_are_interleaved(report: BenchmarkReport) -> None:
    for size in SIZES:
        refs = [ref for ref in report.run_order if ref.batch_size == size]
        assert [(r.kind, r.version) for r in refs] == [
            (RunKind.WARMUP, "gemm_torch"),
            (RunKind.WARMUP, "float32"),
            (RunKind.MEASURED, "gemm_torch"),
            (RunKind.MEASURED, "float32"),
            (RunKind.MEASURED, "gemm_torch"),
            (RunKind.MEASURED, "float32"),
        ]
    # every sample points at its entry in the run order
    for result in report.results:
        for batch in result.batches:
            for sample in (*batch.warmups, *batch.samples):
                ref = report.run_order[sample.order]
                assert (ref.version, ref.batch_size, ref.repeat) == (result.version, batch.batch_size, sample.repeat)


def test_weight_and_kv_bytes_are_reported(report: BenchmarkReport, checkpoint: Path) -> None:
    info = read_checkpoint(checkpoint)
    for batch in measured(report):
        assert batch.weight_bytes_per_token is not None
        assert batch.weight_bytes_per_token > info.quantized_bytes
        assert batch.kv_bytes_per_token == kv_bytes_per_token(info.config, PROMPT, NEW, batch.batch_size)


def test_metadata_and_load_summary(report: BenchmarkReport) -> None:
    meta = report.metadata
    assert meta.device == "cpu"
    assert meta.gpu_name is None
    assert meta.torch_version == torch.__version__
    assert meta.autoawq_version == "0.2.9"
    assert meta.transformers_version
    assert meta.awq_autoselect_version
    load = report.result("gemm_torch").load
    assert load is not None
    assert load.requested == "gemm_torch"
    assert load.device == "cpu"
    assert load.attempts
    assert load.probe is not None
    assert load.probe.startswith("ok")
    assert any("CPU" in note for note in report.notes)


# --- export -----------------------------------------------------------------------------------------------


def test_json_validates_against_the_declared_schema(report: BenchmarkReport) -> None:
    data = json.loads(report.to_json())
    assert data["schema"] == SCHEMA
    assert validate_report_dict(data) == []
    try:  # not a dependency: cross-check with a full validator where one is installed
        jsonschema = importlib.import_module("jsonschema")
    except ImportError:
        pass
    else:
        jsonschema.validate(data, JSON_SCHEMA)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(schema="awq-autoselect.bench/0"), "expected 'awq-autoselect.bench/2'"),
        (lambda d: d.pop("metadata"), "missing 'metadata'"),
        (lambda d: d.update(extra=1), "unexpected key 'extra'"),
        (lambda d: d["settings"].update(repeats=0), "$.settings.repeats: 0 is below the minimum 1"),
        (lambda d: d["results"][1]["batches"][0].update(status="great"), "'great' is not one of"),
        (lambda d: d["results"][1]["batches"][0]["tpot_ms"].update(median="fast"), "matches none"),
        (lambda d: d["run_order"][0].update(kind="practice"), "$.run_order[0].kind"),
    ],
)
def test_schema_violations_are_found(
    report: BenchmarkReport, mutate: Callable[[dict[str, object]], object], expected: str
) -> None:
    data = json.loads(report.to_json())
    mutate(data)
    problems = validate_report_dict(data)
    assert any(expected in p for p in problems), problems
    with pytest.raises(InvalidReportError, match=re.escape(f"not a valid {SCHEMA}")):
        BenchmarkReport.from_dict(data)


def test_schema_declares_exactly_the_record_fields() -> None:
    defs = JSON_SCHEMA["$defs"]
    assert isinstance(defs, dict)
    records: dict[str, type[object]] = {
        "settings": BenchmarkSettings,
        "metadata": RunMetadata,
        "run": RunRef,
        "stats": LatencyStats,
        "sample": RunSample,
        "kernel_share": KernelShare,
        "load": LoadSummary,
        "batch": BatchResult,
        "version": VersionResult,
    }
    for name, cls in records.items():
        schema = defs[name]
        assert isinstance(schema, dict)
        props = schema["properties"]
        assert isinstance(props, dict)
        assert set(props) == {f.name for f in dataclasses.fields(cls)}, name  # type: ignore[arg-type]
    props = JSON_SCHEMA["properties"]
    assert isinstance(props, dict)
    assert set(props) == {f.name for f in dataclasses.fields(BenchmarkReport)}


def test_json_round_trip(report: BenchmarkReport, tmp_path: Path) -> None:
    assert BenchmarkReport.from_json(report.to_json()) == report
    path = report.write_json(tmp_path / "bench.json")
    again = BenchmarkReport.read_json(path)
    assert again == report
    assert isinstance(again.results[1].batches[0].tpot_ms, LatencyStats)
    assert again.results[1].status is Status.OK


@pytest.mark.parametrize(
    ("text", "expected"),
    [("{", "not valid JSON"), ("[1]", "expected a JSON object"), ('{"schema": "x"}', "missing 'settings'")],
)
def test_from_json_rejects_what_is_not_a_report(text: str, expected: str) -> None:
    with pytest.raises(InvalidReportError, match=expected):
        BenchmarkReport.from_json(text)


def test_csv_round_trip(report: BenchmarkReport, tmp_path: Path) -> None:
    path = report.write_csv(tmp_path / "bench.csv")
    rows = read_csv(path)
    assert rows == report.rows()
    assert len(rows) == len(report.settings.versions) * len(SIZES)
    assert {(r.version, r.batch_size) for r in rows} == {(v, b) for v in report.settings.versions for b in SIZES}
    assert path.read_text(encoding="utf-8") == report.to_csv()


def test_read_csv_rejects_other_files(tmp_path: Path, report: BenchmarkReport) -> None:
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(InvalidReportError, match="header"):
        read_csv(other)
    bad = tmp_path / "bad.csv"
    bad.write_text(report.to_csv().replace(",1,eager,ok,", ",one,eager,ok,", 1), encoding="utf-8")
    with pytest.raises(InvalidReportError, match="'one' is not a valid int"):
        read_csv(bad)


def test_markdown_lists_every_version_and_batch_size(report: BenchmarkReport) -> None:
    text = report.to_markdown()
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(table) == len(report.rows())
    for version in report.settings.versions:
        assert any(line.startswith(f"| {version} |") for line in table)
    assert "unavailable" in text
    assert "gemm at batch 1, eager decode:" in text  # the reason is spelled out under the table


def test_plot_draws_or_says_what_is_missing(report: BenchmarkReport, tmp_path: Path) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="matplotlib"):
            plot(report, tmp_path / "tpot.png")
    else:
        out = plot(report, tmp_path / "tpot.png")
        assert out.stat().st_size > 0


# --- other modes and inputs (the dense baseline only: fast) -------------------------------------------------


def test_sequential_mode_runs_each_version_alone(checkpoint: Path, loader: Loader) -> None:
    report = bench(checkpoint, ("gemm_torch",), loader, mode=BenchmarkMode.SEQUENTIAL, new_tokens=2)
    assert report.mode is BenchmarkMode.SEQUENTIAL
    per_version = WARMUP + REPEATS
    assert [r.version for r in report.run_order] == ["gemm_torch"] * per_version + ["float32"] * per_version
    assert all(r.status is Status.OK for r in report.results)


def test_cuda_graph_decoder_on_cpu_runs_eagerly_and_says_why(checkpoint: Path, loader: Loader) -> None:
    report = bench(checkpoint, ("gemm_torch",), loader, cuda_graph=True, new_tokens=NEW)
    assert report.settings.decode == ("graph",)
    for result in report.results:
        batch = result.batch(1)
        assert batch.status is Status.OK, batch.reason
        assert batch.graph_enabled is False
        assert batch.graph_fallback_reason is not None
        assert "cpu" in batch.graph_fallback_reason
        assert batch.tpot_ms is not None
        assert batch.tpot_ms.count == REPEATS * (NEW - 1)
    assert "decode graph" in report.to_markdown()
    # the eager path leaves the graph fields empty
    assert all(b.graph_enabled is None for b in measured(bench(checkpoint, (), loader, new_tokens=2)))


def test_prompt_text_is_tokenized_and_repeated_to_length(checkpoint: Path) -> None:
    from transformers import AutoTokenizer

    text = "the quick brown fox"
    ids = list(AutoTokenizer.from_pretrained(str(checkpoint))(text)["input_ids"])
    assert 0 < len(ids) < 12
    report = benchmark_versions(
        checkpoint,
        (),
        include_fp16=True,
        prompt=text,
        prompt_tokens=12,
        new_tokens=2,
        repeats=1,
        warmup=0,
        batch_sizes=(2,),
        device="cpu",
        progress=False,
    )
    assert report.settings.prompt == text
    assert report.results[0].status is Status.OK
    prompts = prompt_ids(read_checkpoint(checkpoint), report.settings, 512)
    expected = (ids * 12)[:12]
    assert prompts.tolist() == [expected, expected]
    truncated = dataclasses.replace(report.settings, prompt_tokens=2)
    assert prompt_ids(read_checkpoint(checkpoint), truncated, 512).tolist() == [ids[:2], ids[:2]]


def test_random_prompts_are_seeded(checkpoint: Path, report: BenchmarkReport) -> None:
    info = read_checkpoint(checkpoint)
    a = prompt_ids(info, report.settings, 512)
    b = prompt_ids(info, report.settings, 512)
    c = prompt_ids(info, dataclasses.replace(report.settings, seed=1), 512)
    assert a.shape == (max(SIZES), PROMPT)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert int(a.max()) < 512


def test_progress_bar_is_optional(checkpoint: Path, loader: Loader, capsys: pytest.CaptureFixture[str]) -> None:
    bench(checkpoint, (), loader, new_tokens=2, repeats=1, warmup=0, progress=True)
    assert "benchmark" in capsys.readouterr().err
    bench(checkpoint, (), loader, new_tokens=2, repeats=1, warmup=0, progress=None)  # not a terminal: no bar
    assert "benchmark" not in capsys.readouterr().err


def test_a_version_failing_mid_run_is_a_result_not_a_crash(checkpoint: Path, loader: Loader) -> None:
    """A run that raises (as CUDA out of memory does at a too-large batch) fails that version at that size only.

    The failure is injected: running out of memory cannot be provoked on the CPU.
    """
    model = hf_model_of(loader(str(read_checkpoint(checkpoint).path), "gemm_torch", "cpu").model)
    calls = 0

    def boom(module: torch.nn.Module, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
        nonlocal calls
        calls += 1
        if calls > NEW:  # the warmup run (prefill + NEW - 1 steps) passes, the first measured run fails
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    handle = model.register_forward_pre_hook(boom, with_kwargs=True)
    try:
        report = bench(checkpoint, ("gemm_torch",), loader)
    finally:
        handle.remove()
    failed = report.result("gemm_torch").batch(1)
    assert failed.status is Status.FAILED
    assert failed.reason is not None
    assert "measured run 0 failed: OutOfMemoryError" in failed.reason
    assert len(failed.warmups) == WARMUP
    assert failed.samples == ()
    assert failed.tpot_ms is None
    dense = report.result("float32").batch(1)
    assert dense.status is Status.OK
    assert len(dense.samples) == REPEATS
    assert [r.status for r in report.rows()] == [Status.FAILED, Status.OK]
    assert BenchmarkReport.from_json(report.to_json()) == report


# --- settings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"new_tokens": 1}, "new_tokens=1: expected an integer >= 2"),
        ({"prompt_tokens": 0}, "prompt_tokens=0"),
        ({"repeats": 0}, "repeats=0"),
        ({"warmup": -1}, "warmup=-1"),
        ({"batch_sizes": ()}, "batch_sizes"),
        ({"batch_sizes": (1, 1)}, "repeats a size"),
        ({"batch_sizes": (0,)}, "batch_sizes"),
        ({"versions": ("gemm", "GEMM")}, "lists 'gemm' twice"),
        ({"versions": ()}, "nothing to benchmark"),
        ({"peak_bandwidth_gbps": 0.0}, "peak_bandwidth_gbps"),
        (
            {"prompt_tokens": 500, "new_tokens": 13},
            r"new_tokens \(13\) is 513 tokens, more than the model's context of 512",
        ),
    ],
)
def test_bad_settings_are_rejected_before_loading(
    checkpoint: Path, kwargs: dict[str, typing.Any], expected: str
) -> None:
    args: dict[str, typing.Any] = {"versions": ("gemm_torch",), "device": "cpu", "progress": False, **kwargs}
    with pytest.raises(InvalidArgumentError, match=expected):
        benchmark_versions(checkpoint, **args)


def test_unknown_version_name(checkpoint: Path) -> None:
    with pytest.raises(UnknownVersionError, match="gemmx"):
        benchmark_versions(checkpoint, ("gemmx",), device="cpu")


# --- pure helpers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([5.0], LatencyStats(1, 5.0, 5.0, 5.0, 5.0, 0.0, 5.0, 5.0)),
        ([4.0, 1.0, 3.0, 2.0], LatencyStats(4, 2.5, 2.5, 3.7, 3.97, math.sqrt(5 / 3), 1.0, 4.0)),
        ([1.0] * 10 + [11.0], LatencyStats(11, 21 / 11, 1.0, 1.0, 10.0, math.sqrt(100 * 10 / 11 / 10), 1.0, 11.0)),
    ],
)
def test_latency_stats(values: list[float], expected: LatencyStats) -> None:
    got = LatencyStats.of(values)
    for field in dataclasses.fields(LatencyStats):
        assert getattr(got, field.name) == pytest.approx(getattr(expected, field.name)), field.name


def test_latency_stats_needs_values() -> None:
    with pytest.raises(ValueError, match="at least one"):
        LatencyStats.of([])


def testweight_bytes_per_token(checkpoint: Path) -> None:
    info = read_checkpoint(checkpoint)
    hidden, vocab, layers = TINY_LLAMA["hidden_size"], TINY_LLAMA["vocab_size"], TINY_LLAMA["num_hidden_layers"]
    norms = (2 * layers + 1) * hidden  # input + post-attention norm per layer, final norm
    for itemsize in (2, 4):
        dense_rest = (vocab * hidden + norms) * itemsize  # lm_head + norms, read whole every step
        for batch in (1, 3):
            rows = batch * hidden * itemsize  # only the gathered embedding rows
            assert (
                weight_bytes_per_token(info, batch, itemsize, dense=False) == info.quantized_bytes + dense_rest + rows
            )
            dense_layers = sum(layer.in_features * layer.out_features for layer in info.layers) * itemsize
            assert weight_bytes_per_token(info, batch, itemsize, dense=True) == dense_layers + dense_rest + rows


def testkv_bytes_per_token() -> None:
    config = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "hidden_size": 4096}
    # prompt 128, 128 new tokens: decode steps attend over 129 ... 255 positions, mean 192
    per_position = 2 * 32 * 8 * 128 * 2
    assert kv_bytes_per_token(config, 128, 128, 1) == per_position * 192
    assert kv_bytes_per_token(config, 128, 128, 4) == per_position * 192 * 4
    assert kv_bytes_per_token({"hidden_size": 4096}, 128, 128, 1) is None


@pytest.mark.parametrize(
    ("name", "gbps"),
    [
        ("NVIDIA H100 80GB HBM3", 3350.0),
        ("NVIDIA H100 PCIe", 2000.0),
        ("NVIDIA H100 NVL", 3900.0),
        ("NVIDIA H200", 4800.0),
        ("NVIDIA GH200 480GB", 4000.0),
        ("NVIDIA A100-SXM4-80GB", 2039.0),
        ("NVIDIA A100 80GB PCIe", 1935.0),
        ("NVIDIA A100-PCIE-40GB", 1555.0),
        ("NVIDIA A100-SXM4-40GB", 1555.0),
        ("NVIDIA L4", 300.0),
        ("NVIDIA L40S", 864.0),
        ("NVIDIA A10G", 600.0),
        ("NVIDIA GeForce RTX 4090", 1008.0),
        ("NVIDIA GeForce RTX 3090", 936.0),
        ("Tesla T4", 320.0),
        ("Tesla V100-SXM2-32GB", 900.0),
        ("NVIDIA RTX A6000", 768.0),
        ("Some Future GPU", None),
    ],
)
def test_datasheet_bandwidth(name: str, gbps: float | None) -> None:
    found = datasheet_bandwidth_gbps(name)
    assert (found[0] if found else None) == gbps


@pytest.mark.parametrize(
    ("free", "footprints", "run", "mode"),
    [
        (None, [10**12], 0, BenchmarkMode.INTERLEAVED),  # CPU: no device limit
        (100, [40, 40], 10, BenchmarkMode.INTERLEAVED),
        (100, [40, 40], 11, BenchmarkMode.SEQUENTIAL),
        (100, [95], 0, BenchmarkMode.SEQUENTIAL),
    ],
)
def testplan_mode(free: int | None, footprints: list[int], run: int, mode: BenchmarkMode) -> None:
    assert plan_mode(free, footprints, run) is mode


def test_row_fields_are_csv_scalars() -> None:
    hints = typing.get_type_hints(BenchmarkRow)
    allowed = {str, int, float, bool, Status, type(None)}
    for name, hint in hints.items():
        assert set(typing.get_args(hint) or (hint,)) <= allowed, name


def test_importing_the_module_does_not_import_torch() -> None:
    code = "import sys, awq_autoselect.bench; sys.exit('torch' in sys.modules or 'awq' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
