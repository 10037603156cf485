"""Benchmark the kernel versions side by side on single-query latency and write the results.

    python examples/compare_versions.py PATH_TO_AWQ_CHECKPOINT [OUT_PREFIX]

Versions that cannot run here are reported as unavailable, with the reason, not skipped silently.
"""

from __future__ import annotations

import sys

from awq_autoselect import benchmark_versions


def main(path: str, prefix: str) -> int:
    report = benchmark_versions(
        path,
        versions=("gemv", "gemm", "gemm_triton", "torch_int4"),
        prompt_tokens=128,
        new_tokens=64,
        repeats=3,
        include_fp16=True,
    )
    print(report.to_markdown())
    report.write_json(f"{prefix}.json")
    report.write_csv(f"{prefix}.csv")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "bench"))
