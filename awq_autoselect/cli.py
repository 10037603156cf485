"""The ``awq-autoselect`` command line. ``main(argv) -> int`` is callable in-process (tests do).

Exit codes:
    0  success (``detect`` finding no GPU is a success: "no GPU" is a result)
    1  nothing could run: no compatible kernel, every kernel failed, or the requested version is unavailable
    2  usage error: bad arguments, unknown version name, malformed capability
    3  bad input: the checkpoint is missing, not AWQ, unsupported or corrupt; a conversion is impossible
    4  the CUDA context was poisoned by a kernel (retry in a fresh process)
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn, TextIO

from .errors import (
    AwqAutoselectError,
    CudaContextPoisonedError,
    FallbackWarning,
    InputError,
    InvalidArgumentError,
    KernelError,
)

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CODES",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_POISONED",
    "EXIT_USAGE",
    "entrypoint",
    "exit_code",
    "main",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_POISONED = 4


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _emit_json(data: object, out: TextIO) -> None:
    json.dump(data, out, indent=2, sort_keys=False, default=str)
    out.write("\n")


#: Every error base and its exit code; the most specific base that matches wins (they do not overlap).
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (CudaContextPoisonedError, EXIT_POISONED),
    (InvalidArgumentError, EXIT_USAGE),
    (InputError, EXIT_BAD_INPUT),
    (KernelError, EXIT_FAILED),
)


def exit_code(error: BaseException) -> int:
    """The exit code for an exception: by its base (:data:`EXIT_CODES`), 1 for anything else."""
    for base, code in EXIT_CODES:
        if isinstance(error, base):
            return code
    return EXIT_FAILED


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _run(func: Callable[[argparse.Namespace, TextIO], int], args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run a command; every error becomes one line on ``err`` and an exit code, never a traceback."""
    try:
        return func(args, out)
    except AwqAutoselectError as exc:
        lines = str(exc).splitlines()
        err.write(f"error: {lines[0] if lines else type(exc).__name__}\n")
        for line in lines[1:]:  # a multi-line reason list (no kernel fits) is detail, indented
            err.write(f"  {line.strip()}\n")
        return exit_code(exc)
    except KeyboardInterrupt:
        err.write("error: interrupted\n")
        return 130
    except Exception as exc:  # a bug or an environment failure we did not foresee: still one line
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        err.write(
            f"error: unexpected {type(exc).__name__}: {_one_line(str(exc))[:500]} (run with -vv for the traceback)\n"
        )
        return EXIT_FAILED


# ----------------------------------------------------------------------------------------------------------
# commands


def _cmd_detect(args: argparse.Namespace, out: TextIO) -> int:
    from .hardware import detect_compute_capability

    detection = detect_compute_capability(use_torch=args.torch or None, refresh=True)
    if args.json:
        _emit_json(detection.to_dict(), out)
    else:
        out.write(_format_detection(detection))
    if args.require_gpu and not detection:
        return EXIT_FAILED
    return EXIT_OK


def _format_detection(detection: object) -> str:
    from .hardware import Detection

    assert isinstance(detection, Detection)
    lines = []
    if detection.gpus:
        for gpu in detection.gpus:
            mem = f"{gpu.total_memory / 1024**3:.1f} GiB" if gpu.total_memory else "? GiB"
            lines.append(
                f"cuda:{gpu.index}  {gpu.name}  compute capability {gpu.capability} ({gpu.architecture})  {mem}"
                f"  {gpu.mig_uuid or gpu.uuid or ''}  [via {gpu.source.value}]"
            )
    else:
        lines.append("no GPU visible to this process")
    for attempt in detection.attempts:
        status = "ok" if attempt.ok else "failed"
        lines.append(f"  {attempt.source.value}: {status}: {attempt.detail} ({attempt.seconds * 1000:.0f} ms)")
    lines += [f"  warning: {w}" for w in detection.warnings]
    return "\n".join(lines) + "\n"


def _cmd_env(args: argparse.Namespace, out: TextIO) -> int:
    from .environment import probe_environment

    env = probe_environment(refresh=True)
    if args.json:
        _emit_json(env.to_dict(), out)
    else:
        out.write(_format_environment(env))
    return EXIT_OK


def _format_environment(env: object) -> str:
    from .environment import Environment

    assert isinstance(env, Environment)
    lines = [f"torch {env.torch_version or '-'} (CUDA {env.torch_cuda_version or '-'})"]
    for name, status in sorted(env.modules.items()):
        version = f" {status.version}" if status.version else ""
        lines.append(f"  {name:<28} {status.state.value:<20}{version}  {status.reason}")
    return "\n".join(lines) + "\n"


def _workload(args: argparse.Namespace) -> object:
    from .selection import Workload

    return Workload(
        batch_size=args.batch_size if args.batch_size is not None else 1,
        prompt_tokens=args.prompt_tokens if args.prompt_tokens is not None else 128,
        new_tokens=args.new_tokens if args.new_tokens is not None else 128,
    )


def _select_from_args(args: argparse.Namespace) -> object:
    from .checkpoint import QuantConfig
    from .environment import Environment
    from .selection import Workload, select_awq_version

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
    workload = _workload(args)
    assert isinstance(workload, Workload)
    # Without a checkpoint, assume what AutoAWQ writes by default: 4-bit, group 128, zero point, GEMM layout.
    checkpoint: str | QuantConfig = args.checkpoint if args.checkpoint is not None else QuantConfig()
    return select_awq_version(
        checkpoint,
        version=args.version,
        capability=capability,
        device=device,
        environment=environment,
        workload=workload,
    )


def _cmd_select(args: argparse.Namespace, out: TextIO) -> int:
    from .selection import Selection

    selection = _select_from_args(args)
    assert isinstance(selection, Selection)
    if args.json:
        _emit_json(selection.to_dict(), out)
    else:
        if args.capability and args.kernels is None:
            out.write("planning with every kernel module assumed installed (say which with --kernels)\n")
        if args.checkpoint is None:
            out.write(
                "no --checkpoint: assuming AutoAWQ's default quantization (4-bit, group size 128, zero point, "
                "GEMM layout)\n"
            )
        out.write(selection.explain().rstrip("\n") + "\n")
    return EXIT_OK


def _cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    """Detection, environment and selection for this machine; with --demo, an end-to-end load."""
    from .environment import probe_environment
    from .hardware import detect_compute_capability
    from .selection import select_awq_version

    detection = detect_compute_capability(refresh=True)
    env = probe_environment(refresh=True)
    checkpoint = args.checkpoint
    if args.demo is not None and checkpoint is None:
        from .testing import make_synthetic_checkpoint

        checkpoint = str(make_synthetic_checkpoint(args.demo, shape="tiny", version="gemv", overwrite=True))
    from .checkpoint import QuantConfig

    selection = select_awq_version(checkpoint if checkpoint is not None else QuantConfig(), environment=env)
    report: dict[str, object] = {
        "schema": "awq-autoselect.report/1",
        "detection": detection.to_dict(),
        "environment": env.to_dict(),
        "selection": selection.to_dict(),
    }
    text = [
        "== GPU detection ==",
        _format_detection(detection),
        "== kernel modules ==",
        _format_environment(env),
        "== selection ==",
        selection.explain().rstrip("\n") + "\n",
    ]
    if checkpoint is not None and args.demo is not None:
        from .loading import load_quantized_auto

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
        _emit_json(report, out)
    else:
        out.write("\n".join(text))
    return EXIT_OK


def _cmd_load(args: argparse.Namespace, out: TextIO) -> int:
    from .loading import load_quantized_auto

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FallbackWarning)
        result = load_quantized_auto(
            args.path,
            version=args.version,
            device=args.device,
            probe=not args.no_probe,
            fallback=not args.no_fallback,
            fuse_layers=args.fuse_layers,
        )
    fallback_warnings = [str(w.message) for w in caught if issubclass(w.category, FallbackWarning)]
    data = result.report.to_dict()
    data["warnings"] = fallback_warnings
    generated_text: str | None = None
    if args.generate is not None:
        generated_text = _generate(result.model, args.path, args.generate, args.max_new_tokens)
        data["generated"] = generated_text
    if args.json:
        _emit_json(data, out)
    else:
        out.write(str(result.report) + "\n")
        for message in fallback_warnings:
            out.write(f"warning: {message}\n")
        if generated_text is not None:
            out.write(f"generated: {generated_text!r}\n")
    return EXIT_OK


def _generate(model: object, path: str, prompt: str, max_new_tokens: int) -> str:
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    assert isinstance(model, torch.nn.Module)
    device = next(model.parameters()).device
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    generate = getattr(model, "generate")  # noqa: B009 - AutoAWQ's wrapper method, untyped
    with torch.no_grad():
        generated = generate(input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False)
    text = tokenizer.decode(generated[0][ids.shape[1] :], skip_special_tokens=True)
    return str(text)


def _cmd_convert(args: argparse.Namespace, out: TextIO) -> int:
    from .conversion import convert_checkpoint

    result = convert_checkpoint(args.src, args.dst, args.to, overwrite=args.overwrite)
    out.write(f"wrote {result} ({args.to} layout)\n")
    return EXIT_OK


def _cmd_catalogue(args: argparse.Namespace, out: TextIO) -> int:
    from .catalogue import CATALOGUE, Regime

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
                    "priority": {r.value: spec.priority[r] for r in Regime},
                    "failure_stage": spec.failure_stage.value,
                    "silent_failure": spec.silent_failure,
                    "caveats": list(spec.caveats),
                    "sources": list(spec.sources),
                }
            )
        _emit_json(data, out)
        return EXIT_OK
    for spec in CATALOGUE.values():
        groups = ",".join(str(g) for g in sorted(spec.group_sizes)) if spec.group_sizes else "any"
        cc = f">= {spec.min_capability}" if spec.min_capability else "-"
        out.write(
            f"{spec.kernel.value:<12} {spec.layout.value:<10} {spec.extension or 'torch':<28} "
            f"{'/'.join(sorted(spec.devices)):<18} cc {cc:<7} groups {groups:<18} {spec.summary}\n"
        )
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace, out: TextIO) -> int:
    from .bench import benchmark_versions, plot

    batch_sizes = tuple(int(b) for b in _split_list(args.batch_size)) if args.batch_size else (1,)
    report = benchmark_versions(
        args.path,
        versions=tuple(_split_list(args.versions)),
        prompt_tokens=args.prompt_tokens,
        new_tokens=args.new_tokens,
        batch_sizes=batch_sizes,
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
        include_fp16=args.fp16,
        cuda_graph=args.cuda_graph,
        seed=args.seed,
        prompt=args.prompt,
        kernel_time=not args.no_kernel_time,
        peak_bandwidth_gbps=args.peak_bandwidth,
        progress=None,
    )
    if args.json:
        report.write_json(args.json)
    if args.csv:
        report.write_csv(args.csv)
    if args.markdown:
        report.write_markdown(args.markdown)
    if args.plot:
        plot(report, args.plot)
    out.write(report.to_markdown() + "\n")
    return EXIT_OK


def _cmd_make_synthetic(args: argparse.Namespace, out: TextIO) -> int:
    from .testing import make_synthetic_checkpoint

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


# ----------------------------------------------------------------------------------------------------------
# parser


def _add_workload_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per forward (default 1)")
    parser.add_argument("--prompt-tokens", type=int, default=None, help="prompt length (default 128)")
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens generated (default 128)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="awq-autoselect",
        description="Pick, load, verify and benchmark the AutoAWQ kernel version for this GPU.",
        epilog="exit codes: 0 ok, 1 nothing could run, 2 usage error, 3 bad checkpoint, 4 CUDA context poisoned",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log diagnostics to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("detect", help="GPU compute capability, name, memory, UUID (NVML; no CUDA context)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--torch", action="store_true", help="also allow the torch fallback (creates a CUDA context)")
    p.add_argument("--require-gpu", action="store_true", help="exit 1 when no GPU is visible")
    p.set_defaults(func=_cmd_detect)

    p = sub.add_parser("env", help="which AutoAWQ kernel modules import here, and why not")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_env)

    p = sub.add_parser("catalogue", help="every kernel version and its requirements")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_catalogue)

    p = sub.add_parser("select", help="choose a kernel version (for this machine, or plan for another)")
    p.add_argument("--checkpoint", metavar="PATH", help="AWQ checkpoint directory (reads config + headers only)")
    p.add_argument(
        "--capability",
        action="append",
        metavar="X.Y",
        help="plan for a GPU of this compute capability (repeat for a model spread over GPUs)",
    )
    p.add_argument(
        "--kernels",
        metavar="LIST",
        help="assume these kernel versions' modules are installed (e.g. gemv,gemm), or 'none'",
    )
    p.add_argument("--device", choices=["cuda", "cpu", "xpu"], default=None)
    p.add_argument("--version", default="auto", help="validate this version instead of choosing (default auto)")
    _add_workload_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_select)

    p = sub.add_parser("report", help="detection + kernel modules + selection (the main job)")
    p.add_argument("--checkpoint", metavar="PATH")
    p.add_argument(
        "--demo",
        metavar="DIR",
        help="write a tiny synthetic AWQ checkpoint to DIR, load it (asking for gemv) and generate",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("load", help="load a checkpoint with a working kernel, probe it, print the report")
    p.add_argument("path")
    p.add_argument("--version", default="auto")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available)")
    p.add_argument("--no-probe", action="store_true", help="skip the numeric probe (not recommended)")
    p.add_argument("--no-fallback", action="store_true", help="fail instead of falling back to another kernel")
    fuse = p.add_mutually_exclusive_group()
    fuse.add_argument("--fuse-layers", dest="fuse_layers", action="store_true", default=None)
    fuse.add_argument("--no-fuse-layers", dest="fuse_layers", action="store_false")
    p.add_argument("--generate", metavar="PROMPT", help="generate from PROMPT with the checkpoint's tokenizer")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_load)

    p = sub.add_parser("convert", help="write a copy of a checkpoint in another packed layout")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--to", required=True, choices=["gemm", "gemv", "gemv_fast", "marlin"])
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("bench", help="single-query latency of each version, side by side")
    p.add_argument("path")
    p.add_argument("--versions", default="gemv,gemm", help="comma-separated (default gemv,gemm)")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--batch-size", default="1", help="comma-separated batch sizes (default 1)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fp16", action="store_true", help="add a dense fp16 baseline of the same shape")
    p.add_argument("--cuda-graph", action="store_true", help="decode with a captured CUDA graph")
    p.add_argument("--prompt", metavar="TEXT", help="prompt text (default: random token ids)")
    p.add_argument("--no-kernel-time", action="store_true", help="skip the profiler run for GPU kernel time")
    p.add_argument("--peak-bandwidth", type=float, metavar="GBPS", help="card memory bandwidth for the % column")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--csv", metavar="FILE")
    p.add_argument("--markdown", metavar="FILE")
    p.add_argument("--plot", metavar="FILE", help="draw TPOT per version (needs matplotlib)")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("make-synthetic", help="write a real-format AWQ checkpoint with random weights")
    p.add_argument("out")
    p.add_argument("--shape", default="llama-2-7b", choices=["llama-2-7b", "llama-3-8b", "tiny"])
    p.add_argument("--version", default="gemm", choices=["gemm", "gemv"])
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--num-layers", type=int, default=None, help="override the shape's layer count")
    p.add_argument("--device", default=None, help="generate the random weights on this device (e.g. cuda)")
    p.add_argument("--max-shard-size", type=int, default=2_000_000_000, metavar="BYTES")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_make_synthetic)
    return parser


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so that writers remove their staging folders on the way out.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run the CLI. Returns the exit code instead of exiting."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    if args.verbose:
        logging.basicConfig(
            level=logging.DEBUG if args.verbose > 1 else logging.INFO,
            stream=err,
            format="%(levelname)s %(name)s: %(message)s",
        )
    func: Callable[[argparse.Namespace, TextIO], int] = args.func
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run(func, args, out, err)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def entrypoint() -> NoReturn:
    """Console-script entry point."""
    sys.exit(main())
