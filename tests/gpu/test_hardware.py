"""GPU tests for awq_autoselect.hardware: the real NVML, torch and nvidia-smi paths against what CUDA reports.

Run on a machine with an NVIDIA GPU: ``pytest -m gpu tests/test_hardware_gpu.py``. Every check runs detection in
a fresh Python process (CUDA reads ``CUDA_VISIBLE_DEVICES`` once, at initialization), calls torch only after
detection, and compares with torch's view of the same process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from awq_autoselect.hardware import DetectionSource, detect_compute_capability

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[1]

# Detection first; then torch, checking that detection left CUDA uninitialized before asking torch anything.
CHILD = """
import json, sys
{prelude}
from awq_autoselect.hardware import detect_compute_capability
detection = detect_compute_capability(use_torch={use_torch})
out = {{"detection": detection.to_dict(), "text": str(detection), "torch_imported": "torch" in sys.modules}}
import torch
out["cuda_initialized_after_detection"] = torch.cuda.is_initialized()
out["torch_count"] = torch.cuda.device_count()
if out["torch_count"]:
    props = torch.cuda.get_device_properties(0)
    out["torch"] = {{
        "capability": "%d.%d" % torch.cuda.get_device_capability(0),
        "name": props.name,
        "total_memory": props.total_memory,
        "uuid": str(props.uuid),
    }}
print(json.dumps(out))
"""
BLOCK_PYNVML = "sys.modules['pynvml'] = None  # import pynvml -> ImportError: NVML unavailable"


def fresh(visible: str | None = None, *, use_torch: bool | None = None, block_nvml: bool = False) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    code = CHILD.format(prelude=BLOCK_PYNVML if block_nvml else "", use_torch=use_torch)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=False, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def physical() -> dict[str, Any]:
    """NVML's view of this machine's first GPU, read in this process (NVML creates no CUDA context)."""
    detection = detect_compute_capability(use_torch=False, refresh=True)
    assert detection.source is DetectionSource.NVML, str(detection)
    gpu = detection.gpus[0]
    assert gpu.uuid is not None
    return {"uuid": gpu.uuid, "count": len(detection.gpus), "gpu": gpu.to_dict()}


def test_nvml_agrees_with_torch_and_creates_no_cuda_context() -> None:
    result = fresh()
    detection = result["detection"]
    gpu = detection["gpus"][0]
    assert gpu["source"] == "nvml"
    assert result["torch_imported"] is False  # detection never imports torch ...
    assert result["cuda_initialized_after_detection"] is False  # ... nor initializes CUDA
    torch = result["torch"]
    assert detection["capability"] == torch["capability"]
    assert gpu["name"] == torch["name"]
    # NVML's and CUDA's totals come from the same driver; allow 2% for memory the driver reserves differently.
    assert abs(gpu["total_memory"] - torch["total_memory"]) <= 0.02 * torch["total_memory"]
    assert gpu["uuid"] == f"GPU-{torch['uuid']}"
    assert len(detection["gpus"]) == result["torch_count"]
    assert detection["mapping_exact"] is True


def test_uuid_and_shortened_uuid_name_the_same_device(physical: dict[str, Any]) -> None:
    uuid = physical["uuid"]
    for visible in (uuid, uuid[:12], "0"):
        result = fresh(visible)
        gpu = result["detection"]["gpus"][0]
        assert gpu["uuid"] == uuid, visible
        assert gpu["capability"] == result["torch"]["capability"], visible
        assert f"GPU-{result['torch']['uuid']}" == uuid, visible  # CUDA picked the same device
        assert len(result["detection"]["gpus"]) == result["torch_count"] == 1, visible


def test_empty_cuda_visible_devices_gives_no_gpu() -> None:
    result = fresh("")
    assert result["detection"]["gpus"] == []
    assert result["text"].startswith("no GPU")
    assert result["torch_count"] == 0


def test_visible_device_rules_match_cuda(physical: dict[str, Any]) -> None:
    """For each value, the number of devices detection reports equals what CUDA itself enumerates."""
    count, uuid = physical["count"], physical["uuid"]
    values = [
        "",
        "-1",
        "0",
        "0,-1",
        f"{count}",  # out of range
        f"0,{count}",
        "0,0",  # repeated: CUDA shows nothing (as modelled)
        "00",
        "0gpu",  # strtoul reads 0
        "abc",
        "0,abc",
        uuid[:12],
        f"{uuid[:12]},{uuid}",  # two spellings of one GPU
        "GPU-zzzz",
        f"{uuid},0",  # mixed forms
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(fresh, values))
    mismatches = {
        value: (len(result["detection"]["gpus"]), result["torch_count"])
        for value, result in zip(values, results, strict=True)
        if len(result["detection"]["gpus"]) != result["torch_count"]
    }
    assert mismatches == {}, f"CUDA_VISIBLE_DEVICES value: (detected, CUDA's count): {mismatches}"


def test_torch_fallback_on_the_gpu(physical: dict[str, Any]) -> None:
    result = fresh(block_nvml=True, use_torch=True)
    detection = result["detection"]
    gpu = detection["gpus"][0]
    assert gpu["source"] == "torch"
    assert detection["attempts"][0]["ok"] is False
    assert "install nvidia-ml-py" in detection["attempts"][0]["detail"]
    assert gpu["capability"] == result["torch"]["capability"] == physical["gpu"]["capability"]
    assert gpu["uuid"] == physical["uuid"]
    assert gpu["name"] == physical["gpu"]["name"]


def test_nvidia_smi_fallback_on_the_gpu(physical: dict[str, Any]) -> None:
    result = fresh(physical["uuid"][:12], block_nvml=True, use_torch=False)
    detection = result["detection"]
    gpu = detection["gpus"][0]
    assert gpu["source"] == "nvidia-smi", result["text"]
    assert result["torch_imported"] is False
    assert result["cuda_initialized_after_detection"] is False
    nvml = physical["gpu"]
    assert (gpu["capability"], gpu["name"], gpu["uuid"], gpu["pci_bus_id"], gpu["nvml_index"]) == (
        nvml["capability"],
        nvml["name"],
        nvml["uuid"],
        nvml["pci_bus_id"],
        nvml["nvml_index"],
    )
    assert gpu["capability"] == result["torch"]["capability"]
    assert abs(gpu["total_memory"] - nvml["total_memory"]) < 1024 * 1024  # nvidia-smi rounds to MiB
