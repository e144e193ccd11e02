"""The single scenario: each request's decode speed ÷ raw probes bracketing it."""

from __future__ import annotations

import pytest

from warmlm.bench.client import StreamResult
from warmlm.bench.scenarios.single import SCENARIO, _summary


def reply(tokens: int, seconds: float, error: str | None = None) -> StreamResult:
    """A reply whose tokens after the first came in `seconds`, evenly spaced."""
    times = tuple(1.0 + seconds * i / (tokens - 1) for i in range(tokens))
    return StreamResult(0.0, times[-1], times, tokens, 30, "x", "length", error)


def test_each_request_is_divided_by_the_mean_of_the_probes_around_it() -> None:
    replies = [reply(11, 1.0), reply(11, 0.5), reply(11, 2.0)]  # 10, 20, 5 tok/s
    result = _summary(replies, [10.0, 30.0, 10.0, 5.0], 11)
    rows = result["requests"]
    assert [r["raw_tps"] for r in rows] == [20.0, 20.0, 7.5]
    assert [r["vs_raw"] for r in rows] == pytest.approx([0.5, 1.0, 5 / 7.5])
    assert result["vs_raw"] == pytest.approx(5 / 7.5)  # the median of the three
    assert result["decode_tps"] == pytest.approx(10.0)


def test_failed_requests_and_missing_probes_count_in_no_median() -> None:
    replies = [reply(11, 1.0), reply(11, 0.1, error="HTTP 500")]
    result = _summary(replies, [None, None, None], 11)
    assert result["vs_raw"] is None and result["requests"][0]["raw_tps"] is None
    assert result["decode_tps"] == pytest.approx(10.0) and result["errors"] == ["HTTP 500"]


def test_the_target_prefers_the_paired_ratio_to_the_ceiling_scenarios() -> None:
    ceiling = {"decode": [{"batch": 1, "tps": 40.0}]}
    single = {"decode_tps": 36.0, "vs_raw": 0.95}
    (paired,) = SCENARIO.targets({"single": single, "ceiling": ceiling})
    assert paired.value == 0.95 and "before and after" in paired.note
    (unpaired,) = SCENARIO.targets({"single": {**single, "vs_raw": None}, "ceiling": ceiling})
    assert unpaired.value == pytest.approx(0.9) and unpaired.passed
