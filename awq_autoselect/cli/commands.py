"""The commands of ``awq-autoselect``: each takes the parsed arguments and the output stream, returns an exit
code, and raises the library's errors for :func:`awq_autoselect.cli.main` to report."""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from awq_autoselect.errors import CheckpointWarning, FallbackWarning, TrialCacheWarning

from .exits import EXIT_FAILED, EXIT_OK
from .formatting import (
    emit_json,
    entry_dict,
    entry_line,
    format_detection,
    format_environment,
    progress_printer,
    write_tune_table,
)

if TYPE_CHECKING:
    from awq_autoselect.hub import CheckpointSource
    from awq_autoselect.workload import Workload

__all__ = [
    "cmd_bench",
    "cmd_cache",
    "cmd_catalogue",
    "cmd_convert",
    "cmd_detect",
    "cmd_env",
    "cmd_load",
    "cmd_make_synthetic",
    "cmd_report",
    "cmd_select",
    "cmd_tune",
]


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def cmd_detect(args: argparse.Namespace, out: TextIO) -> int:
    from awq_autoselect.hardware import detect_compute_capability

    detection = detect_compute_capability(use_torch=args.torch or None, refresh=True)
    if args.json:
        emit_json(detection.to_dict(), out)
    else:
        out.write(format_detection(detection))
    if args.require_gpu and not detection:
        return EXIT_FAILED
    return EXIT_OK


def cmd_env(args: argparse.Namespace, out: TextIO) -> int:
    from awq_autoselect.environment import probe_environment

    env = probe_environment(refresh=True)
    if args.json:
        emit_json(env.to_dict(), out)
    else:
        out.write(format_environment(env))
    return EXIT_OK


def _workload(args: argparse.Namespace, decode: str | None = None, batch_size: int | None = None) -> Workload:
    from awq_autoselect.workload import Workload

    batch = batch_size if batch_size is not None else args.batch_size
    return Workload(
        batch_size=batch if batch is not None else 1,
        prompt_tokens=args.prompt_tokens if args.prompt_tokens is not None else 128,
        new_tokens=args.new_tokens if args.new_tokens is not None else 128,
        **({} if decode is None else {"decode": decode}),
    )


def _source(path: str | None, revision: str | None, flag: str) -> CheckpointSource | None:
    """The checkpoint a command was given (a Hub ID resolved once, here), or None without one."""
    from awq_autoselect.errors import InvalidArgumentError
    from awq_autoselect.hub import resolve_checkpoint

    if path is None:
        if revision is not None:
            raise InvalidArgumentError(
                f"--revision {revision} was given without {flag}: it selects a version of a Hugging Face Hub model"
            )
        return None
    return resolve_checkpoint(path, revision=revision)


def _select_from_args(args: argparse.Namespace) -> tuple[object, CheckpointSource | None]:
    from awq_autoselect.checkpoint import CheckpointInfo, QuantConfig, read_checkpoint
    from awq_autoselect.environment import Environment
    from awq_autoselect.planning import TrialPolicy, plan

    environment = None
    if args.kernels is not None:
        names = [] if args.kernels.strip().lower() in ("", "none") else _split_list(args.kernels)
        environment = Environment.assume(names)
    elif args.capability:
        # Planning for another machine: this machine's modules say nothing about that one's.
        environment = Environment.assume(None)
    capability: list[str] | None = args.capability or None
    device = args.device
    if capability and device is None:
        device = "cuda"
    workload = _workload(args, args.decode)
    source = _source(args.checkpoint, args.revision, "--checkpoint")
    # Without a checkpoint, assume what AutoAWQ writes by default: 4-bit, group 128, zero point, GEMM layout.
    checkpoint: CheckpointInfo | QuantConfig = read_checkpoint(source) if source is not None else QuantConfig()
    planned = plan(  # what the trial cache holds on this machine: select runs no trial
        checkpoint,
        version=args.version,
        capability=capability,
        device=device,
        environment=environment,
        workload=workload,
        fallback=False,
        trials=TrialPolicy.CACHED,
    )
    return planned.selection, source


def cmd_select(args: argparse.Namespace, out: TextIO) -> int:
    from awq_autoselect.selection import Selection

    selection, source = _select_from_args(args)
    assert isinstance(selection, Selection)
    if args.json:
        emit_json({**selection.to_dict(), "checkpoint": None if source is None else source.to_dict()}, out)
    else:
        if source is not None and source.hub is not None:
            out.write(f"checkpoint: {source.describe()}\n")
        if args.capability and args.kernels is None:
            out.write("planning with every kernel module assumed installed (say which with --kernels)\n")
        if args.checkpoint is None:
            out.write(
                "no --checkpoint: assuming AutoAWQ's default quantization (4-bit, group size 128, zero point, "
                "GEMM layout)\n"
            )
        out.write(selection.explain().rstrip("\n") + "\n")
    return EXIT_OK


def cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    """Detection, environment and selection for this machine; with --demo, an end-to-end load."""
    from awq_autoselect.environment import probe_environment
    from awq_autoselect.hardware import detect_compute_capability
    from awq_autoselect.selection import select_awq_version

    checkpoint = _source(args.checkpoint, args.revision, "--checkpoint")
    detection = detect_compute_capability(refresh=True)
    env = probe_environment(refresh=True)
    if args.demo is not None and checkpoint is None:
        from awq_autoselect.hub import resolve_checkpoint
        from awq_autoselect.testing import make_synthetic_checkpoint

        checkpoint = resolve_checkpoint(
            make_synthetic_checkpoint(args.demo, shape="tiny", version="gemv", overwrite=True)
        )
    from awq_autoselect.checkpoint import QuantConfig

    selection = select_awq_version(checkpoint if checkpoint is not None else QuantConfig(), environment=env)
    report: dict[str, object] = {
        "schema": "awq-autoselect.report/1",
        "detection": detection.to_dict(),
        "environment": env.to_dict(),
        "checkpoint": None if checkpoint is None else checkpoint.to_dict(),
        "selection": selection.to_dict(),
    }
    text = [
        "== GPU detection ==",
        format_detection(detection),
        "== kernel modules ==",
        format_environment(env),
        "== selection ==",
        ("" if checkpoint is None else f"checkpoint: {checkpoint.describe()}\n")
        + selection.explain().rstrip("\n")
        + "\n",
    ]
    if checkpoint is not None and args.demo is not None:
        from awq_autoselect.loading import load_quantized_auto

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FallbackWarning)
            result = load_quantized_auto(checkpoint, version="gemv")
        text += ["== load (demo checkpoint, version='gemv' requested) ==", str(result.report) + "\n"]
        text += [f"warning: {w.message}\n" for w in caught if issubclass(w.category, FallbackWarning)]
        report["load"] = result.report.to_dict()
        import torch

        model = result.model
        device = next(model.parameters()).device
        ids = torch.tensor([[1, 5, 9, 13]], device=device)
        generate = getattr(model, "generate")  # noqa: B009 - AutoAWQ's wrapper method, untyped
        generated = generate(input_ids=ids, max_new_tokens=4, do_sample=False)
        report["generated_ids"] = generated[0].tolist()
        text.append(f"generated token ids: {generated[0].tolist()}\n")
    if args.json:
        emit_json(report, out)
    else:
        out.write("\n".join(text))
    return EXIT_OK


def cmd_load(args: argparse.Namespace, out: TextIO) -> int:
    from awq_autoselect.checkpoint import check_fits_context, read_checkpoint
    from awq_autoselect.hub import resolve_checkpoint
    from awq_autoselect.loading import load_quantized_auto

    source = resolve_checkpoint(args.path, revision=args.revision)
    tokenizer: object = None
    if args.generate is not None:  # before a minute of loading: the tokenizer, and a request the model can hold
        info = read_checkpoint(source)
        tokenizer = _tokenizer(source)
        prompt = _token_count(tokenizer, args.generate)
        check_fits_context(
            info, prompt, args.max_new_tokens, prompt_name="the --generate prompt", new_name="--max-new-tokens"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FallbackWarning)
        warnings.simplefilter("always", CheckpointWarning)
        warnings.simplefilter("always", TrialCacheWarning)
        result = load_quantized_auto(
            source,
            version=args.version,
            device=args.device,
            probe=not args.no_probe,
            fallback=not args.no_fallback,
            fuse_layers=args.fuse_layers,
        )
    shown = (FallbackWarning, CheckpointWarning, TrialCacheWarning)
    fallback_warnings = [str(w.message) for w in caught if issubclass(w.category, shown)]
    data = result.report.to_dict()
    data["warnings"] = fallback_warnings
    generated_text: str | None = None
    if args.generate is not None:
        generated_text = _generate(result.model, tokenizer, args.generate, args.max_new_tokens)
        data["generated"] = generated_text
    if args.json:
        emit_json(data, out)
    else:
        out.write(str(result.report) + "\n")
        for message in fallback_warnings:
            out.write(f"warning: {message}\n")
        if generated_text is not None:
            out.write(f"generated: {generated_text!r}\n")
    return EXIT_OK


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "spiece.model")


def _tokenizer(path: str | os.PathLike[str]) -> object:
    """The checkpoint's tokenizer, or a CheckpointError naming what is missing."""
    from transformers import AutoTokenizer

    from awq_autoselect.errors import CheckpointError

    root = Path(path).expanduser()
    if root.is_dir() and not any((root / name).is_file() for name in _TOKENIZER_FILES):
        raise CheckpointError(
            f"{root} has no tokenizer ({', '.join(_TOKENIZER_FILES)} are all missing): --generate needs one; copy "
            "the tokenizer files of the original model into the checkpoint, or leave out --generate"
        )
    try:
        return AutoTokenizer.from_pretrained(str(root))
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{root}: its tokenizer cannot be loaded ({exc}); --generate needs one") from exc


def _token_count(tokenizer: object, prompt: str) -> int:
    assert callable(tokenizer)
    return len(tokenizer(prompt).input_ids)


def _generate(model: object, tokenizer: object, prompt: str, max_new_tokens: int) -> str:
    import torch

    assert isinstance(model, torch.nn.Module)
    assert callable(tokenizer)
    device = next(model.parameters()).device
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    generate = getattr(model, "generate")  # noqa: B009 - AutoAWQ's wrapper method, untyped
    with torch.no_grad():
        generated = generate(input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False)
    decode = getattr(tokenizer, "decode")  # noqa: B009 - a transformers tokenizer, untyped
    text = decode(generated[0][ids.shape[1] :], skip_special_tokens=True)
    return str(text)


def cmd_convert(args: argparse.Namespace, out: TextIO) -> int:
    from awq_autoselect.conversion import convert_checkpoint

    result = convert_checkpoint(args.src, args.dst, args.to, overwrite=args.overwrite, revision=args.revision)
    out.write(f"wrote {result} ({args.to} layout)\n")
    return EXIT_OK


def cmd_catalogue(args: argparse.Namespace, out: TextIO) -> int:
    from awq_autoselect.catalogue import CATALOGUE
    from awq_autoselect.workload import Regime

    if args.json:
        data = []
        for spec in CATALOGUE.values():
            data.append(
                {
                    "kernel": spec.kernel.value,
                    "summary": spec.summary,
                    "module_class": spec.module_class,
                    "layout": spec.layout.value,
                    "extension": spec.extension,
                    "devices": sorted(spec.devices),
                    "min_capability": str(spec.min_capability) if spec.min_capability else None,
                    "sass_targets": sorted(t.sm for t in spec.sass_targets) if spec.sass_targets else None,
                    "group_sizes": sorted(spec.group_sizes) if spec.group_sizes else None,
                    "zero_point": sorted(spec.zero_point),
                    "priority": {r.value: spec.priority.of(r) for r in Regime},
                    "torch": None if spec.torch is None else str(spec.torch),
                    "torch_ops": {device: list(ops) for device, ops in spec.torch_ops},
                    "activation_dtypes": dict(spec.activation_dtypes),
                    "failure_stage": spec.failure_stage.value,
                    "silent_failure": spec.silent_failure,
                    "experimental": spec.experimental,
                    "traceable": spec.traceable,
                    "caveats": list(spec.caveats),
                    "sources": list(spec.sources),
                }
            )
        emit_json(data, out)
        return EXIT_OK
    for spec in CATALOGUE.values():
        groups = ",".join(str(g) for g in sorted(spec.group_sizes)) if spec.group_sizes else "any"
        cc = f">= {spec.min_capability}" if spec.min_capability else "-"
        out.write(
            f"{spec.kernel.value:<12} {spec.layout.value:<10} {spec.extension or 'torch':<28} "
            f"{'/'.join(sorted(spec.devices)):<18} cc {cc:<7} groups {groups:<18} {spec.summary}"
            + (f" [experimental: not chosen by auto; {spec.experimental}]" if spec.experimental else "")
            + "\n"
        )
    return EXIT_OK


def _bench_outputs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The files bench writes, as (kind, path), each checked before anything is measured.

    Raises:
        InvalidArgumentError: two options name the same file.
        MissingDependencyError: ``--plot`` without matplotlib.
        OutputPathError: a destination that cannot or may not be written.
    """
    from awq_autoselect.bench import check_plot_destination, check_report_destination
    from awq_autoselect.errors import InvalidArgumentError

    outputs = [(kind, path) for kind in ("json", "csv", "markdown", "plot") if (path := getattr(args, kind))]
    seen: dict[Path, str] = {}
    for kind, path in outputs:
        where = Path(path).expanduser().resolve()
        if where in seen:
            raise InvalidArgumentError(f"--{seen[where]} and --{kind} both name {path!r}: give each its own file")
        seen[where] = kind
        if kind == "plot":
            check_plot_destination(path, args.path)
        else:
            check_report_destination(path, kind, args.path)
    return outputs


def cmd_bench(args: argparse.Namespace, out: TextIO) -> int:
    from awq_autoselect.bench import Status, benchmark_versions, plot
    from awq_autoselect.bench.runner import CPU_DENSE_NAME, FP16_NAME
    from awq_autoselect.errors import KernelFailedError, OutputPathError

    outputs = _bench_outputs(args)  # a benchmark runs for minutes: a bad destination fails now, not after it
    batch_sizes: tuple[int, ...] = args.batch_size
    report = benchmark_versions(
        args.path,
        revision=args.revision,
        versions=args.versions,
        prompt_tokens=args.prompt_tokens,
        new_tokens=args.new_tokens,
        batch_sizes=batch_sizes,
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
        include_fp16=args.fp16,
        cuda_graph=args.cuda_graph,
        decode=args.decode,
        seed=args.seed,
        prompt=args.prompt,
        kernel_time=not args.no_kernel_time,
        peak_bandwidth_gbps=args.peak_bandwidth,
        progress=None,
    )
    out.write(report.to_markdown() + "\n")  # first: a file that fails to write must not cost the table
    out.flush()
    writers = {"json": report.write_json, "csv": report.write_csv, "markdown": report.write_markdown}
    failed: list[str] = []
    for kind, path in outputs:
        try:
            if kind == "plot":
                plot(report, path)
            else:
                writers[kind](path)
        except OutputPathError as exc:  # checked before the run; the folder changed since (or the disk is full)
            failed.append(str(exc))
    if failed:
        raise OutputPathError("; ".join(failed) + " (the table above has the results)")
    quantized = [r for r in report.results if r.version not in (FP16_NAME, CPU_DENSE_NAME)]
    if quantized and not any(b.status is Status.OK for r in quantized for b in r.batches):
        # The reports above say why for each version; the exit code says nothing of the checkpoint could run.
        why = "; ".join(f"{r.version}: {' '.join((r.reason or str(r.status)).split())[:200]}" for r in quantized)
        raise KernelFailedError(f"{args.path}: no version of the checkpoint could run here ({why})")
    return EXIT_OK


def cmd_make_synthetic(args: argparse.Namespace, out: TextIO) -> int:
    from awq_autoselect.testing import make_synthetic_checkpoint

    path = make_synthetic_checkpoint(
        args.out,
        shape=args.shape,
        version=args.version,
        group_size=args.group_size,
        seed=args.seed,
        num_layers=args.num_layers,
        device=args.device,
        max_shard_size=args.max_shard_size,
        overwrite=args.overwrite,
    )
    out.write(f"wrote {path}\n")
    return EXIT_OK


def cmd_tune(args: argparse.Namespace, out: TextIO) -> int:
    """Run every viable kernel on the checkpoint's shapes in child processes; print and cache what was measured."""
    import sys

    from awq_autoselect.checkpoint import read_checkpoint
    from awq_autoselect.devices import resolve_device
    from awq_autoselect.hub import resolve_checkpoint
    from awq_autoselect.planning import TrialPolicy, plan
    from awq_autoselect.selection import select_awq_version
    from awq_autoselect.trials import DecodeMode

    source = resolve_checkpoint(args.path, revision=args.revision)
    info = read_checkpoint(source)
    dev = resolve_device(args.device)
    decode = args.decode or ("graph" if dev.type == "cuda" else "eager")
    works = [_workload(args, decode, batch) for batch in (args.batch_size or (1,))]
    if (args.batch_size, args.prompt_tokens, args.new_tokens) != (None, None, None):
        from awq_autoselect.capacity import check_workload

        for work in works:  # before any trial: a workload the model cannot hold fails in every child
            check_workload(info, work, str(dev))
    planned = plan(
        info,
        device=str(dev),
        workload=works[0],
        trials=TrialPolicy.REFRESH if args.refresh else TrialPolicy.RUN,
        rows=[r for work in works for r in (work.decode_rows, work.prefill_rows)],
        timeout_s=args.timeout,
        progress=progress_printer(sys.stderr),
        show_progress=False,  # the printer above draws the bar
        measured_by="awq-autoselect tune",
    )
    report = planned.report
    assert report is not None  # trials were asked for
    selections = [planned.selection]
    selections += [
        select_awq_version(info, device=str(dev), workload=work, measurements=report, strict=False)
        for work in works[1:]
    ]
    if args.json:
        from awq_autoselect._codec import to_json

        emit_json(
            {
                "schema": "awq-autoselect.tune/1",
                "path": str(info.path),
                "hub": None if source.hub is None else source.hub.to_dict(),
                "device": str(dev),
                "workload": works[0].to_dict(),
                "results": [to_json(r) for r in report.results],
                "selection": selections[0].to_dict(),
                "selections": [
                    {"workload": work.to_dict(), "selection": selection.to_dict()}
                    for work, selection in zip(works, selections, strict=True)
                ],
            },
            out,
        )
    else:
        mode = DecodeMode(decode) if dev.type == "cuda" else DecodeMode.EAGER
        out.write(
            f"trials on {dev} for {source.describe()} ({len(info.layers)} quantized layers, shapes "
            + ", ".join(f"{k}x{n}" for k, n in info.shapes())
            + ")\n"
        )
        for work, selection in zip(works, selections, strict=True):
            write_tune_table(out, report, work, mode, selection)
        out.write(
            "ok results and confirmed broken ones are cached: select, load and bench use them on this machine "
            "(`awq-autoselect cache list` shows them)\n"
        )
    return EXIT_OK if any(r.ok for r in report.results) else EXIT_FAILED


def cmd_cache(args: argparse.Namespace, out: TextIO) -> int:
    """``cache list [PATH]``: the trial cache's entries (for PATH's checkpoint only); ``cache clear [PATH]``: delete
    them (only PATH's), so that the next load or ``tune`` measures again."""
    from awq_autoselect.trials.cache import TrialCache

    cache = TrialCache()
    signature = None
    source = _source(args.path, args.revision, "PATH")
    if source is not None:
        from awq_autoselect.checkpoint import read_checkpoint
        from awq_autoselect.trials.cache import signature_of

        signature = signature_of(read_checkpoint(source))
    if args.action == "clear":
        removed = cache.clear(signature)
        which = "" if signature is None else f" for {args.path} (every checkpoint of its quantization and shapes)"
        count = f"{len(removed)} trial cache entr{'y' if len(removed) == 1 else 'ies'}"
        out.write(f"removed {count}{which} from {cache.root}\n")
        return EXIT_OK
    entries = [e for e in cache.entries() if signature is None or e.signature == signature]
    if args.json:
        emit_json(
            {
                "schema": "awq-autoselect.cache/1",
                "folder": str(cache.root),
                "problem": cache.problem(),
                "entries": [entry_dict(e) for e in entries],
            },
            out,
        )
        return EXIT_OK
    problem = cache.problem()
    out.write(f"trial cache: {cache.root} ({len(entries)} entr{'y' if len(entries) == 1 else 'ies'})\n")
    if problem is not None:
        out.write(f"  not used: {problem}\n")
    for entry in entries:
        out.write(entry_line(entry) + "\n")
    return EXIT_OK
