"""The measured ranking: a request modeled from a trial with its spread, and ties within noise broken by the
published rank. Plain data: tables of cases."""

from __future__ import annotations

import pytest

from awq_autoselect.catalogue import Kernel
from awq_autoselect.ranking import RequestTime, order, request_time, within_noise
from awq_autoselect.trials import DecodeMode, LayerShape, RowTiming, ShapeResult, TrialResult, TrialStatus
from awq_autoselect.workload import Workload


def _time(ms: float, spread: float) -> RequestTime:
    return RequestTime(ms, ms - spread / 2, ms + spread / 2, ms, 0.0, DecodeMode.EAGER)


@pytest.mark.parametrize(
    ("a", "b", "tied"),
    [
        ((10.0, 0.0), (10.0, 0.0), True),  # the same time: nothing tells them apart
        ((10.0, 1.0), (11.0, 1.0), True),  # the margin equals the mean spread: ranges touch
        ((10.0, 1.0), (11.1, 1.0), False),
        ((10.0, 0.2), (12.0, 3.8), True),  # one noisy measurement is enough to tie
        ((10.0, 0.5), (30.0, 0.5), False),
    ],
)
def test_within_noise(a: tuple[float, float], b: tuple[float, float], tied: bool) -> None:
    assert within_noise(_time(*a), _time(*b)) is tied
    assert within_noise(_time(*b), _time(*a)) is tied


# (times and spreads by name, published order best first, expected order, expected ties)
CASES = [
    pytest.param({"a": (10, 0.1), "b": (20, 0.1)}, "ba", "ab", {}, id="a clear margin: the faster wins"),
    pytest.param({"a": (10, 2.0), "b": (11, 2.0)}, "ba", "ba", {"a": "b", "b": "a"}, id="a tie: published decides"),
    pytest.param({"a": (10, 2.0), "b": (11, 2.0)}, "ab", "ab", {"a": "b", "b": "a"}, id="a tie the fast one wins"),
    pytest.param(
        {"a": (10, 2.0), "b": (11.5, 1.0), "c": (12.4, 2.0)},  # a ties b, b ties c, a does not tie c
        "cba",
        "bac",
        {"a": "b", "b": "a"},
        id="not transitive: each place is decided against the fastest left",
    ),
    pytest.param(
        {"a": (10, 0.0), "b": (10, 0.0), "c": (50, 0.0)}, "cba", "bac", {"a": "b", "b": "a"}, id="equal times"
    ),
]


@pytest.mark.parametrize(("times", "published", "expected", "ties"), CASES)
def test_order(times: dict[str, tuple[float, float]], published: str, expected: str, ties: dict[str, str]) -> None:
    placed, tied = order(list(times), lambda k: _time(*times[k]), lambda k: (published.index(k),))
    assert "".join(placed) == expected
    assert {k: "".join(v) for k, v in tied.items() if v} == ties


def test_a_request_is_modeled_from_the_rounds() -> None:
    def timing(rows: int, rounds: tuple[float, ...]) -> RowTiming:
        return RowTiming(rows, sorted(rounds)[len(rounds) // 2], None, rounds)

    shapes = (
        ShapeResult(LayerShape(256, 256, 4), 0.0, (timing(1, (10.0, 11.0, 15.0)), timing(16, (40.0, 50.0, 60.0)))),
        ShapeResult(LayerShape(256, 512, 2), 0.0, (timing(1, (20.0, 20.0, 30.0)), timing(16, (80.0, 90.0, 90.0)))),
    )
    result = TrialResult(Kernel.GEMM_TORCH, TrialStatus.OK, "", "cpu", shapes, 1.0, "2026-12-05T00:00:00+00:00")
    work = Workload(prompt_tokens=16, new_tokens=10, decode="graph")
    timed = request_time(result, work, "cpu")  # a CPU decodes eagerly, whatever the workload says
    assert timed is not None
    assert timed.mode is DecodeMode.EAGER
    assert timed.step_ms == pytest.approx((4 * 11.0 + 2 * 20.0) / 1000)
    assert timed.prefill_ms == pytest.approx((4 * 50.0 + 2 * 90.0) / 1000)
    assert timed.ms == pytest.approx(timed.prefill_ms + 10 * timed.step_ms)
    assert timed.low == pytest.approx((4 * 40.0 + 2 * 80.0 + 10 * (4 * 10.0 + 2 * 20.0)) / 1000)
    assert timed.high == pytest.approx((4 * 60.0 + 2 * 90.0 + 10 * (4 * 15.0 + 2 * 30.0)) / 1000)
    assert timed.low <= timed.ms <= timed.high
    assert request_time(result, Workload(batch_size=3), "cpu") is None  # not measured at 3 rows
