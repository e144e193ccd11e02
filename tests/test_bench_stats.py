"""Statistics, stream timelines and targets of `warmlm bench`."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from warmlm.bench.client import StreamResult
from warmlm.bench.options import expand_scenarios, int_list, positive
from warmlm.bench.stats import mean, median, percentile, rate, ratio, summary
from warmlm.bench.targets import Target, all_passed
from warmlm.bench.timeline import aggregate_tps, decode_phase_tps, group_stats, waited_count


def stream(sent: float, times: list[float], end: float, tokens: int | None = None) -> StreamResult:
    count = len(times) if tokens is None else tokens
    return StreamResult(
        sent_at=sent, finished_at=end, token_times=tuple(times), completion_tokens=count
    )


@pytest.mark.parametrize("q", [0, 5, 25, 50, 90, 95, 99, 100])
def test_percentile_matches_numpy(q: float) -> None:
    values = [0.3, 1.0, 0.1, 7.5, 2.2, 2.2, 4.0]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edges() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert median([1.0, 2.0, 3.0, 4.0]) == 2.5
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summary_mean_ratio_rate() -> None:
    s = summary([1.0, 2.0, 3.0])
    assert s == {"n": 3, "mean": 2.0, "min": 1.0, "p50": 2.0, "p95": pytest.approx(2.9), "max": 3.0}
    assert summary([])["p50"] is None
    assert mean([]) is None
    assert ratio(9.0, 10.0) == pytest.approx(0.9)
    assert ratio(None, 1.0) is None and ratio(1.0, 0.0) is None and ratio(1.0, None) is None
    assert rate(10, 2.0) == 5.0
    assert rate(10, 0.0) is None and rate(3, None) is None


def test_stream_result_properties() -> None:
    r = stream(10.0, [10.5, 10.6, 10.8, 11.0], 11.1, tokens=5)
    assert r.ttft == pytest.approx(0.5)
    assert r.e2e == pytest.approx(1.1)
    assert r.gaps == pytest.approx([0.1, 0.2, 0.2])
    assert r.decode_tps == pytest.approx(4 / 0.5)
    assert stream(0.0, [], 1.0).ttft is None
    assert stream(0.0, [0.5], 1.0).decode_tps is None


def test_aggregate_and_decode_window() -> None:
    a = stream(0.0, [1.0, 1.1, 1.2, 1.3, 1.4, 1.5], 1.5)
    b = stream(0.0, [1.2, 1.3, 1.4, 1.5, 1.6, 1.7], 1.7)
    assert aggregate_tps([a, b]) == pytest.approx(12 / 1.7)
    tps, window = decode_phase_tps([a, b])
    # window (1.2, 1.5]: a has 1.3, 1.4, 1.5; b has 1.3, 1.4, 1.5 → 6 tokens in 0.3 s
    assert window == "all-decoding"
    assert tps == pytest.approx(6 / 0.3)


def test_decode_window_falls_back_to_span_and_scales_chunks() -> None:
    a = stream(0.0, [0.1, 0.2, 0.3], 0.3, tokens=6)  # two tokens per chunk
    b = stream(0.0, [1.0, 1.1, 1.2], 1.2)
    tps, window = decode_phase_tps([a, b])
    assert window == "span"
    # span (0.1, 1.2]: a contributes 2 chunks × 2 tokens, b 3 chunks
    assert tps == pytest.approx(7 / 1.1)
    assert decode_phase_tps([stream(0.0, [0.5], 0.6)]) == (None, "none")


def test_waited_for_another_stream() -> None:
    early = stream(0.0, [0.1, 0.2], 0.3)
    overlapping = stream(0.0, [0.25, 0.4], 0.5)
    late = stream(0.0, [0.6, 0.7], 0.8)
    assert waited_count([early, overlapping]) == 0
    assert waited_count([early, overlapping, late]) == 1
    stats = group_stats([early, overlapping, late])
    assert stats["waited_for_other"] == 1
    assert stats["requests"] == 3 and stats["completion_tokens"] == 6
    assert stats["ttft_p50_s"] == pytest.approx(0.25)


def test_group_stats_excludes_errors() -> None:
    good = stream(0.0, [0.1, 0.2], 0.3)
    bad = StreamResult(0.0, 0.05, (), 0, error="HTTP 503: busy")
    stats = group_stats([good, bad])
    assert stats["errors"] == ["HTTP 503: busy"]
    assert stats["completion_tokens"] == 2


def test_targets_pass_fail_and_missing() -> None:
    assert Target("ratio", 0.95, 0.9).passed is True
    assert Target("ratio", 0.85, 0.9).verdict == "FAIL"
    assert Target("ready", 1.5, 2.0, at_most=True, unit=" s").passed is True
    assert Target("ready", 2.5, 2.0, at_most=True).passed is False
    missing = Target("ratio", None, 0.9)
    assert missing.passed is None and missing.verdict == "not measured"
    assert Target("r", 0.9, 0.9).goal_text() == "≥ 0.9×"
    assert not all_passed([Target("a", 1.0, 0.9), missing])
    assert all_passed([Target("a", 1.0, 0.9)])


def test_option_parsing_helpers() -> None:
    assert int_list("1,4,8") == (1, 4, 8)
    for bad in ("1,x", "0", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            int_list(bad)
    assert positive("3") == 3
    with pytest.raises(argparse.ArgumentTypeError):
        positive("-1")
    known = ("ceiling", "coldstart", "single", "rss", "classify")
    default = ("ceiling", "coldstart", "single", "rss")
    assert expand_scenarios((), default, known) == default
    assert expand_scenarios(("all", "classify"), default, known) == known
    assert expand_scenarios(("single", "ceiling"), default, known) == ("ceiling", "single")
    with pytest.raises(ValueError, match="unknown scenario"):
        expand_scenarios(("nope",), default, known)
