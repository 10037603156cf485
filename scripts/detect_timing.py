#!/usr/bin/env python3
"""Time compute-capability detection: awq_autoselect's NVML path against torch's, each in fresh processes.

Cases, each run ``--runs`` times (default 5) in a new Python process so nothing is warm:

- ``nvml_detect``: ``import awq_autoselect; detect_compute_capability()``. Also records whether that imported
  torch or initialized CUDA (it must do neither).
- ``torch_capability``: ``import torch; torch.cuda.get_device_capability()`` (this initializes CUDA).

Each sample is the wall time of those statements inside the child (``in_process``, split into ``import`` and
``call``), and of the whole child process, interpreter start included (``process``). Reports median, min and
max, and writes everything as JSON with ``--json PATH``. Runs on a machine without a GPU too, reporting no GPU.

    python scripts/detect_timing.py --runs 5 --json detect-timing.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1

NVML_CHILD = """
import json, sys, time
started = time.perf_counter()
import awq_autoselect
from awq_autoselect.hardware import detect_compute_capability
imported = time.perf_counter()
detection = detect_compute_capability()
seconds = time.perf_counter() - started
torch = sys.modules.get("torch")
print(json.dumps({
    "seconds": seconds,
    "import_seconds": imported - started,
    "torch_imported": torch is not None,
    "cuda_initialized": bool(torch is not None and torch.cuda.is_initialized()),
    "result": str(detection),
    "capability": None if detection.capability is None else str(detection.capability),
    "source": None if detection.source is None else detection.source.value,
    "error": None,
}))
"""

TORCH_CHILD = """
import json, time
started = time.perf_counter()
import torch
imported = time.perf_counter()
try:
    major, minor = torch.cuda.get_device_capability()
    capability, error = f"{major}.{minor}", None
except Exception as exc:  # a CPU build or no driver: report it, do not fail the run
    capability, error = None, f"{type(exc).__name__}: {exc}"
seconds = time.perf_counter() - started
print(json.dumps({
    "seconds": seconds,
    "import_seconds": imported - started,
    "torch_imported": True,
    "cuda_initialized": bool(torch.cuda.is_initialized()),
    "result": capability if error is None else f"no GPU: {error}",
    "capability": capability,
    "torch": torch.__version__,
    "torch_cuda": torch.version.cuda,
    "error": error,
}))
"""

CASES = {
    "nvml_detect": ("import awq_autoselect; detect_compute_capability()", NVML_CHILD),
    "torch_capability": ("import torch; torch.cuda.get_device_capability()", TORCH_CHILD),
}


@dataclass
class CaseResult:
    """Every sample of one case."""

    statement: str
    samples_s: list[float] = field(default_factory=list)
    import_s: list[float] = field(default_factory=list)
    process_s: list[float] = field(default_factory=list)
    torch_imported: list[bool] = field(default_factory=list)
    cuda_initialized: list[bool] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "statement": self.statement,
            "samples_s": self.samples_s,
            "import_s": self.import_s,
            "process_s": self.process_s,
            "in_process": summarize(self.samples_s),
            "import": summarize(self.import_s),
            "call": summarize([total - part for total, part in zip(self.samples_s, self.import_s, strict=True)]),
            "process": summarize(self.process_s),
            "torch_imported": self.torch_imported,
            "cuda_initialized": self.cuda_initialized,
            "results": self.results,
            "errors": self.errors,
            **self.extra,
        }


def summarize(samples: list[float]) -> dict[str, float | None]:
    """Median, min and max of ``samples`` (None when there are none)."""
    if not samples:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def run_child(code: str) -> tuple[dict[str, object], float]:
    """Run ``code`` in a fresh interpreter; return its JSON line and the process's wall time."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=600)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"error": f"child exited with {done.returncode}: {tail[0]}"}, elapsed
    lines = done.stdout.strip().splitlines()
    parsed: object = json.loads(lines[-1]) if lines else {"error": "child printed nothing"}
    if not isinstance(parsed, dict):
        return {"error": f"child printed {parsed!r}"}, elapsed
    return {str(key): value for key, value in parsed.items()}, elapsed


def measure(runs: int) -> dict[str, CaseResult]:
    """Run every case ``runs`` times, alternating cases so drift affects both alike."""
    results = {name: CaseResult(statement) for name, (statement, _) in CASES.items()}
    for _ in range(runs):
        for name, (_, code) in CASES.items():
            output, elapsed = run_child(code)
            case = results[name]
            case.process_s.append(elapsed)
            error = output.get("error")
            if isinstance(error, str):
                case.errors.append(error)
            seconds = output.get("seconds")
            if not isinstance(seconds, (int, float)):
                continue  # the child failed before timing anything
            case.samples_s.append(float(seconds))
            import_seconds = output.get("import_seconds")
            case.import_s.append(float(import_seconds) if isinstance(import_seconds, (int, float)) else 0.0)
            case.torch_imported.append(bool(output.get("torch_imported")))
            case.cuda_initialized.append(bool(output.get("cuda_initialized")))
            case.results.append(str(output.get("result")))
            for key in ("torch", "torch_cuda", "source", "capability"):
                if output.get(key) is not None:
                    case.extra[key] = output[key]
    return results


def report(runs: int, results: dict[str, CaseResult]) -> dict[str, object]:
    """The JSON document: metadata and every case."""
    return {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "runs": runs,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cuda_device_order": os.environ.get("CUDA_DEVICE_ORDER"),
        "cases": {name: case.to_dict() for name, case in results.items()},
    }


def format_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:9.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per case (default 5)")
    parser.add_argument("--json", type=Path, help="write the full report here")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    results = measure(args.runs)
    document = report(args.runs, results)
    for case in results.values():
        inside, whole, imports = summarize(case.samples_s), summarize(case.process_s), summarize(case.import_s)
        print(case.statement)
        print(
            f"  in process: median {format_seconds(inside['median'])}  min {format_seconds(inside['min'])}  "
            f"max {format_seconds(inside['max'])}  (import: median {format_seconds(imports['median'])})"
        )
        print(f"  whole process: median {format_seconds(whole['median'])}")
        print(f"  torch imported: {any(case.torch_imported)}  CUDA initialized: {any(case.cuda_initialized)}")
        print(f"  result: {case.results[0] if case.results else (case.errors or ['-'])[0]}")
    if args.json is not None:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
