"""The default fast decode on a real GPU (``pytest -m gpu``): compiled step in a CUDA graph, greedy tokens equal to
transformers' own eager greedy decoding."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from awq_autoselect import load_quantized_auto
from awq_autoselect.catalogue import CATALOGUE
from awq_autoselect.decode.fast import FastGenerate
from tests.helpers import CollectingStreamer, QuantizedFactory

pytestmark = pytest.mark.gpu

PROMPT = [[1, 17, 42, 99, 150, 301, 7]]


@pytest.mark.parametrize("mode", [None, "graph"])
def test_fast_generate_equals_eager_greedy(quantized: QuantizedFactory, mode: str | None) -> None:
    model: Any
    model, report = load_quantized_auto(quantized(version="gemm", group_size=128), device="cuda", fast_decode=mode)
    assert report.kernel is not None
    # The default: compiled where torch.compile traces the kernel (torch_int4 without AutoAWQ's kernels), else
    # a CUDA graph of the uncompiled step (AutoAWQ's extensions, when they import here).
    expected_mode = mode or ("compile" if CATALOGUE[report.kernel].traceable else "graph")
    assert report.decode == expected_mode
    hf: Any = model.model
    fast = hf.__dict__["generate"]
    assert isinstance(fast, FastGenerate)
    ids = torch.tensor(PROMPT, device="cuda")
    for batch in (ids, torch.cat([ids, ids.flip(1)])):
        got = model.generate(input_ids=batch, max_new_tokens=16, do_sample=False)
        assert fast.last_path == "fast"
        expected = fast.original(batch, max_new_tokens=16, do_sample=False)
        assert torch.equal(got, expected), (got.tolist(), expected.tolist())
    decoder = next(iter(fast._decoders.values()))
    assert decoder.graph_enabled, decoder.fallback_reason
    assert decoder.compiled is (expected_mode == "compile")


def test_fast_generate_stops_at_eos_and_streams_like_transformers(quantized: QuantizedFactory) -> None:
    """The CUDA loop queues each next step before it looks at a token: a stop at an end-of-sequence token and a
    streamer must still see exactly what transformers' generate gives."""
    model: Any
    model, _ = load_quantized_auto(quantized(version="gemm", group_size=128), device="cuda")
    hf: Any = model.model
    fast = hf.__dict__["generate"]
    ids = torch.tensor(PROMPT, device="cuda")
    free = fast.original(ids, max_new_tokens=12, do_sample=False, min_new_tokens=12, pad_token_id=0)
    eos = int(free[0, ids.shape[1] + 3])  # the 4th greedy token ends the sequence (or an earlier equal one)
    streamer = CollectingStreamer()
    got = model.generate(
        input_ids=ids, max_new_tokens=12, do_sample=False, eos_token_id=eos, pad_token_id=0, streamer=streamer
    )
    assert fast.last_path == "fast"
    expected = fast.original(ids, max_new_tokens=12, do_sample=False, eos_token_id=eos, pad_token_id=0)
    assert torch.equal(got, expected), (got.tolist(), expected.tolist())
    assert got.shape[1] < ids.shape[1] + 12  # it did stop early
    assert [v[0] for v in streamer.values[1:]] == got[0, ids.shape[1] :].tolist()
    assert streamer.ended
