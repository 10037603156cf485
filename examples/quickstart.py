"""Detect the GPU, choose a kernel, load an AWQ checkpoint with it and generate.

    python examples/quickstart.py PATH_TO_AWQ_CHECKPOINT ["prompt"]

Runs on a GPU or on the CPU (slowly). Without a checkpoint at hand, make one:
    awq-autoselect make-synthetic /tmp/tiny-awq --shape tiny
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

from awq_autoselect import FallbackWarning, detect_compute_capability, load_quantized_auto, select_awq_version


def main(path: str, prompt: str) -> int:
    detection = detect_compute_capability()  # NVML: no CUDA context is created
    print("GPU:", detection)

    selection = select_awq_version(path)  # this machine, this checkpoint, single-query decode
    print(selection.explain())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FallbackWarning)
        model, report = load_quantized_auto(path)  # converts the layout if needed, probes, falls back
    print(report)
    for warning in caught:
        print("warning:", warning.message)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    device = next(model.parameters()).device
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    generate = getattr(model, "generate")  # noqa: B009 - AutoAWQ's model wrapper is untyped
    out = generate(input_ids=ids, max_new_tokens=16, do_sample=False)  # fast decode by default: report.decode
    print(f"[{report.decode}]", repr(tokenizer.decode(out[0][ids.shape[1] :], skip_special_tokens=True)))

    # transformers' pipeline takes the Hugging Face model inside AutoAWQ's wrapper
    from transformers import pipeline

    hf_model: Any = model.model  # typed loosely: AutoAWQ's wrapper is untyped
    generator = pipeline("text-generation", model=hf_model, tokenizer=tokenizer, device=device)
    print(generator(prompt, max_new_tokens=8, do_sample=False)[0]["generated_text"])
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "The capital of France is"))
