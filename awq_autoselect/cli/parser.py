"""The argument parser of ``awq-autoselect``: every argument is validated by its argparse type, and a usage
error is one line on stderr (exit 2)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn

from awq_autoselect.capability import ComputeCapability
from awq_autoselect.catalogue import parse_kernel
from awq_autoselect.devices import parse_device
from awq_autoselect.errors import (
    InvalidArgumentError,
    InvalidCapabilityError,
    InvalidDeviceSpecError,
    UnknownVersionError,
)
from awq_autoselect.modes import parse_decode_modes

from .commands import (
    cmd_bench,
    cmd_cache,
    cmd_catalogue,
    cmd_convert,
    cmd_detect,
    cmd_env,
    cmd_load,
    cmd_make_synthetic,
    cmd_report,
    cmd_select,
    cmd_tune,
)

__all__ = ["UsageError", "build_parser"]


class UsageError(Exception):
    """A command line that cannot be parsed; the message is the one line to print (exit 2)."""


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line, raised instead of printed with the usage block."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _integer(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ({what})") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is below {minimum} ({what})")
    return value


def _at_least(minimum: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        return _integer(text, minimum, what)

    parse.__name__ = f"integer >= {minimum}"  # argparse names the type in some messages
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return value


def _batch_sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(_integer(item.strip(), 1, "a batch size is at least 1") for item in text.split(",") if item.strip())
    if not sizes:
        raise argparse.ArgumentTypeError("no batch size given (e.g. 1,8)")
    if len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(f"{text!r} repeats a batch size")
    return sizes


def _version(text: str) -> str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return parse_kernel(text).value
    except UnknownVersionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _versions(text: str) -> tuple[str, ...]:
    names: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name = item.lower() if item.lower() in ("auto", "fp16", "dense") else _version(item)
        if name in names:
            raise argparse.ArgumentTypeError(f"{text!r} names {name!r} twice")
        names.append(name)
    if not names:
        raise argparse.ArgumentTypeError("no version given (e.g. gemv,gemm,torch_int4)")
    return tuple(names)


def _decode_modes(text: str) -> tuple[str, ...]:
    try:
        return parse_decode_modes(text)
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("decode=")) from None


def _capability(text: str) -> ComputeCapability:
    try:
        return ComputeCapability.parse(text)
    except InvalidCapabilityError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _device(text: str) -> str:
    try:
        return str(parse_device(text))
    except InvalidDeviceSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _revision(text: str) -> str:
    if not text.strip() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a revision (a branch, tag or commit hash of a Hub model)")
    return text


def _add_revision_arg(parser: argparse.ArgumentParser, what: str = "PATH") -> None:
    parser.add_argument(
        "--revision",
        type=_revision,
        default=None,
        help=f"when {what} is a Hugging Face Hub ID: the branch, tag or commit to load (default main)",
    )


def _add_workload_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=_at_least(1, "sequences"), default=None, help="sequences (default 1)")
    parser.add_argument(
        "--prompt-tokens", type=_at_least(1, "tokens"), default=None, help="prompt length (default 128)"
    )
    parser.add_argument(
        "--new-tokens", type=_at_least(0, "tokens"), default=None, help="tokens generated (default 128)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; ``args.func(args, out)`` runs the chosen one."""
    parser = _Parser(
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
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("env", help="which AutoAWQ kernel modules import here, and why not")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_env)

    p = sub.add_parser("catalogue", help="every kernel version and its requirements")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_catalogue)

    p = sub.add_parser("select", help="choose a kernel version (for this machine, or plan for another)")
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="AWQ checkpoint directory (reads config + headers only) or Hugging Face Hub ID (org/name)",
    )
    _add_revision_arg(p, "--checkpoint")
    p.add_argument(
        "--capability",
        action="append",
        type=_capability,
        metavar="X.Y",
        help="plan for a GPU of this compute capability (repeat for a model spread over GPUs)",
    )
    p.add_argument(
        "--kernels",
        metavar="LIST",
        help="assume these kernel versions' modules are installed (e.g. gemv,gemm), or 'none'",
    )
    p.add_argument("--device", choices=["cuda", "cpu", "xpu"], default=None)
    p.add_argument(
        "--version", type=_version, default="auto", help="validate this version instead of choosing (default auto)"
    )
    _add_workload_args(p)
    p.add_argument(
        "--decode", choices=["graph", "eager"], default=None, help="how decode steps will run (default graph)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("report", help="detection + kernel modules + selection (the main job)")
    p.add_argument("--checkpoint", metavar="PATH", help="AWQ checkpoint directory or Hugging Face Hub ID (org/name)")
    _add_revision_arg(p, "--checkpoint")
    p.add_argument(
        "--demo",
        metavar="DIR",
        help="write a tiny synthetic AWQ checkpoint to DIR, load it (asking for gemv) and generate",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("load", help="load a checkpoint with a working kernel, probe it, print the report")
    p.add_argument("path", help="AWQ checkpoint directory or Hugging Face Hub ID (org/name)")
    _add_revision_arg(p)
    p.add_argument("--version", type=_version, default="auto")
    p.add_argument("--device", type=_device, default=None, help="cuda, cuda:N or cpu (default: cuda if available)")
    p.add_argument("--no-probe", action="store_true", help="skip the numeric probe (not recommended)")
    p.add_argument("--no-fallback", action="store_true", help="fail instead of falling back to another kernel")
    fuse = p.add_mutually_exclusive_group()
    fuse.add_argument("--fuse-layers", dest="fuse_layers", action="store_true", default=None)
    fuse.add_argument("--no-fuse-layers", dest="fuse_layers", action="store_false")
    p.add_argument("--generate", metavar="PROMPT", help="generate from PROMPT with the checkpoint's tokenizer")
    p.add_argument("--max-new-tokens", type=_at_least(1, "tokens"), default=16)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("convert", help="write a copy of a checkpoint in another packed layout")
    p.add_argument("src", help="AWQ checkpoint directory or Hugging Face Hub ID (org/name)")
    p.add_argument("dst")
    _add_revision_arg(p, "SRC")
    p.add_argument("--to", required=True, choices=["gemm", "gemv", "gemv_fast", "marlin"])
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "tune", help="run every viable kernel on the checkpoint's shapes in child processes; cache the timings"
    )
    p.add_argument("path", help="AWQ checkpoint directory or Hugging Face Hub ID (org/name)")
    _add_revision_arg(p)
    p.add_argument("--device", type=_device, default=None, help="cuda, cuda:N or cpu (default: cuda if available)")
    p.add_argument("--decode", choices=["graph", "eager"], default=None, help="rank for this decode mode")
    p.add_argument(
        "--batch-size",
        type=_batch_sizes,
        default=None,
        help="comma-separated batch sizes to measure and rank for (default 1)",
    )
    p.add_argument("--prompt-tokens", type=_at_least(1, "tokens"), default=None, help="prompt length (default 128)")
    p.add_argument("--new-tokens", type=_at_least(0, "tokens"), default=None, help="tokens generated (default 128)")
    p.add_argument("--timeout", type=_positive_float, default=None, metavar="S", help="seconds per kernel's trial")
    p.add_argument(
        "--refresh", action="store_true", help="measure every kernel again, whatever the cache holds (replacing it)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("cache", help="list or clear the cached trial results (a verdict to measure again)")
    p.add_argument("action", choices=["list", "clear"])
    p.add_argument(
        "path", nargs="?", default=None, help="only the entries for this checkpoint's signature (a directory or Hub ID)"
    )
    _add_revision_arg(p)
    p.add_argument("--json", action="store_true", help="list as JSON")
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("bench", help="single-query latency of each version, side by side")
    p.add_argument("path", help="AWQ checkpoint directory or Hugging Face Hub ID (org/name)")
    _add_revision_arg(p)
    p.add_argument("--versions", type=_versions, default=("gemv", "gemm"), help="comma-separated (default gemv,gemm)")
    p.add_argument("--prompt-tokens", type=_at_least(1, "tokens"), default=128)
    p.add_argument(
        "--new-tokens",
        type=_at_least(2, "the first token comes from the prefill; TPOT needs at least one decode step"),
        default=128,
    )
    p.add_argument("--batch-size", type=_batch_sizes, default=(1,), help="comma-separated batch sizes (default 1)")
    p.add_argument("--repeats", type=_at_least(1, "measured runs"), default=5)
    p.add_argument("--warmup", type=_at_least(0, "warmup runs"), default=1)
    p.add_argument("--device", type=_device, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fp16", action="store_true", help="add a dense fp16 baseline of the same shape")
    p.add_argument("--cuda-graph", action="store_true", help="shorthand for --decode graph")
    p.add_argument(
        "--decode",
        type=_decode_modes,
        default=None,
        metavar="MODES",
        help="comma-separated decode modes, each timed for every version: eager, graph, compiled (the fast path of "
        "loaded models), generate (their generate()), hf-static (transformers' static cache + compile)",
    )
    p.add_argument("--prompt", metavar="TEXT", help="prompt text (default: random token ids)")
    p.add_argument("--no-kernel-time", action="store_true", help="skip the profiler run for GPU kernel time")
    p.add_argument(
        "--peak-bandwidth", type=_positive_float, metavar="GBPS", help="card memory bandwidth for the %% column"
    )
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--csv", metavar="FILE")
    p.add_argument("--markdown", metavar="FILE")
    p.add_argument("--plot", metavar="FILE", help="draw TPOT per version (needs matplotlib)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("make-synthetic", help="write a real-format AWQ checkpoint with random weights")
    p.add_argument("out")
    p.add_argument("--shape", default="llama-2-7b", choices=["llama-2-7b", "llama-3-8b", "tiny"])
    p.add_argument("--version", default="gemm", choices=["gemm", "gemv"])
    p.add_argument("--group-size", type=int, default=128, choices=[32, 64, 128, -1])
    p.add_argument("--num-layers", type=_at_least(1, "layers"), default=None, help="override the shape's layer count")
    p.add_argument(
        "--device", type=_device, default=None, help="generate the random weights on this device (e.g. cuda)"
    )
    p.add_argument("--max-shard-size", type=_at_least(1, "bytes"), default=2_000_000_000, metavar="BYTES")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_make_synthetic)
    return parser
