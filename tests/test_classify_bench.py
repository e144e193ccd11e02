"""`warmlm bench classify`: data loading, reply parsing, figures, Markdown and targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from warmlm.bench.scenarios.classify import (
    DATA,
    OTHER,
    SCENARIO,
    labels_of,
    load_rows,
    parse_generated,
    render,
    summarize,
    task_for,
)
from warmlm.tasks.classify import DEFAULT_LABELS


def test_the_shipped_sample_is_bilingual_and_balanced() -> None:
    rows = load_rows(DATA)
    assert labels_of(rows) == DEFAULT_LABELS and task_for(DEFAULT_LABELS) == "sentiment"
    for lang in (str.isascii, lambda t: not t.isascii()):
        counts = {
            lab: sum(1 for r in rows if lang(r.text) and r.label == lab)
            for lab in ("positive", "negative")
        }
        assert min(counts.values()) >= 10, counts


def test_bad_data_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(ValueError, match="expected"):
        load_rows(path)
    path.write_text("\n")
    with pytest.raises(ValueError, match="no rows"):
        load_rows(path)


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("positive", "positive"),
        ("Negative.", "negative"),
        ('"positive"', "positive"),
        ("The sentiment is negative", "negative"),
        ("I cannot tell", OTHER),
    ],
)
def test_generated_replies_map_to_labels(reply: str, label: str) -> None:
    assert parse_generated(reply, DEFAULT_LABELS) == label


def item(truth: str, scored: str, generated: str, s: float, g: float) -> dict:
    return {
        "truth": truth, "tokens": 20, "prefilled": 20, "raw_s": 0.1, "raw_step_s": 0.02,
        "scored": scored,
        "scored_s": s, "generated": generated, "generated_text": generated, "generated_s": g,
        "generated_tokens": 2,
    }  # fmt: skip


def test_figures_markdown_and_targets() -> None:
    items = [
        item("positive", "positive", "positive", 0.10, 0.20),
        item("negative", "negative", "positive", 0.12, 0.30),
        item("negative", "negative", "negative", 0.11, 0.25),
    ]
    run = {"seconds": 1.6, "items_per_s": 40.0, "mean_item_tokens": 20.0, "chunk_tps": 800.0}
    run.update(ceiling_items_per_s=40.0, ratio=1.0)
    batch = {"items": 64, "runs": [run], "items_per_s": 40.0, "mean_item_tokens": 20.0}
    batch.update(chunk_tps=800.0, ceiling_items_per_s=40.0, ratio=1.0)
    schemas = [{"schema": "object", "valid": True, "tokens": 9, "seconds": 0.5}]
    schemas[0].update(finish_reason="stop", error=None, validated=True, output="{}")
    result = summarize("d.jsonl", DEFAULT_LABELS, items, batch, schemas)
    assert result["single_over_ceiling_p50"] == pytest.approx(1.1)
    assert result["speedup_p50"] == pytest.approx(0.25 / 0.11)
    assert result["speedup_bound_p50"] == pytest.approx(1.2)  # (prefill + a step) ÷ prefill
    assert result["batch_over_ceiling"] == pytest.approx(1.0)
    assert result["accuracy_margin"] == pytest.approx(1.0 - 2 / 3)
    assert result["scored"]["rows"] == [["positive", 1, 0], ["negative", 0, 2]]
    text = render(result)
    assert "it would be 1.2" in text
    assert "Confusion, generated" in text and "| negative | 1 | 1 |" in text
    json.dumps(result)  # the record is written as JSON
    targets = {t.name: t for t in SCENARIO.targets({"classify": result})}
    assert all(t.passed for t in targets.values()), [t.to_dict() for t in targets.values()]
    assert len(targets) == 5
