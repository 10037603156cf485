"""Plan the kernel for a machine you are not on: an RTX 3090 (8.6) with AutoAWQ's kernels installed.

    python examples/plan_for_another_machine.py [PATH_TO_AWQ_CHECKPOINT]

Needs neither a GPU nor torch's CUDA build: the catalogue is plain data, and the checkpoint is read from its
config.json and safetensors headers only.
"""

from __future__ import annotations

import sys

from awq_autoselect import Workload, select_awq_version
from awq_autoselect.environment import Environment


def main(path: str | None) -> int:
    installed = Environment.assume(["gemm", "gemv", "gemv_fast", "exllama", "exllamav2"], torch_version="2.5.1")
    for workload in (Workload(batch_size=1, prompt_tokens=64, new_tokens=256), Workload(batch_size=16)):
        selection = select_awq_version(path, capability="8.6", environment=installed, workload=workload)
        print(f"{workload.describe()}: {selection.kernel} (then {', '.join(map(str, selection.chain[1:]))})")
    # A Blackwell card (12.0) gets no image from the prebuilt wheels, whatever is installed:
    selection = select_awq_version(path, capability="12.0", environment=installed)
    print("RTX 50 series:", selection.kernel)
    for kernel, reasons in selection.rejected.items():
        print(f"  {kernel}: {reasons[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
