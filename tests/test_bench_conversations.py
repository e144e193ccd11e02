"""The conversation scenarios' pure logic: prompts of a target length, conversations, cold twins,
windows of inter-token gaps, ratios and targets, options and server flags (no model needed)."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from warmlm.bench.options import SCENARIO_SIZES, BenchOptions, add_scenario_args
from warmlm.bench.scenarios import all_scenarios
from warmlm.bench.scenarios._conversation import (
    DEFAULT_TOKENS_PER_WORD,
    CacheSpec,
    Conversation,
    TokenScale,
    TurnClient,
    counter_deltas,
    ctx_for,
    document,
    in_order,
    new_codes,
    parse_counters,
    spread,
    wait_for,
)
from warmlm.bench.scenarios.fairness import SCENARIO as FAIRNESS
from warmlm.bench.scenarios.fairness import itl_stats, server_ctx, window_gaps
from warmlm.bench.scenarios.multiturn import SCENARIO as MULTITURN
from warmlm.bench.scenarios.multiturn import median_turns, new_tokens
from warmlm.bench.scenarios.restart import SCENARIO as RESTART
from warmlm.bench.scenarios.restart import goal_for, restart_ctx, rotated
from warmlm.bench.scenarios.sessions import SCENARIO as SESSIONS
from warmlm.bench.scenarios.sessions import (
    cached_fraction,
    compare_to_baseline,
    summarize,
    twin_count,
)
from warmlm.bench.serverproc import ServerSpec
from warmlm.cli import build_parser

NEW = ("multiturn", "sessions", "restart", "fairness")


# -- prompts ------------------------------------------------------------------------------------
def test_token_scale_from_probes_and_fallback() -> None:
    scale = TokenScale.from_probes((48, 240), (100, 340))
    assert scale.measured and scale.per_word == pytest.approx(1.25)
    assert scale.words(800) == 640 and scale.words(0) == 1
    for counts in ((None, 340), (100, None), (340, 100)):
        fallback = TokenScale.from_probes((48, 240), counts)
        assert not fallback.measured and fallback.per_word == DEFAULT_TOKENS_PER_WORD


def test_document_has_the_scaled_number_of_words() -> None:
    text = document(500, TokenScale(1.25), seed=3)
    assert len(text.split()) == 400
    assert text == document(500, TokenScale(1.25), seed=3) != document(500, TokenScale(1.25), 4)


def test_codes_are_distinct_and_fixed_width() -> None:
    codes = new_codes(50, random.Random(1))
    assert len(set(codes)) == 50 and {len(c) for c in codes} == {8}
    assert all(c.isdigit() and c[0] != "0" for c in codes)


def test_conversation_resends_its_whole_history() -> None:
    conv = Conversation("12345678", "the doc", questions=("q0?", "q1?", "q2?"))
    first = conv.messages()
    assert [m["role"] for m in first] == ["system", "user"]
    assert first[0]["content"].startswith("12345678 ") and "the doc" in first[1]["content"]
    assert first[1]["content"].endswith("q0?")
    conv.answered("a0")
    conv.answered("a1")
    msgs = conv.messages()
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in msgs[2:]] == ["a0", "q1?", "a1", "q2?"]
    assert msgs[1] == first[1] and conv.turn == 2
    conv.answered("a2")
    assert conv.messages()[-1]["content"] == "q0?"  # questions wrap around


def test_cold_twin_differs_only_in_the_code() -> None:
    conv = Conversation("12345678", "doc")
    conv.answered("answer")
    twin = conv.messages("87654321")
    own = conv.messages()
    assert twin[1:] == own[1:]
    assert twin[0]["content"].replace("87654321", "12345678") == own[0]["content"]
    assert len(twin[0]["content"]) == len(own[0]["content"])


def test_rotated_questions_differ_per_conversation() -> None:
    assert rotated(0)[0] != rotated(1)[0] and sorted(rotated(3)) == sorted(rotated(0))


def test_ctx_for_rounds_up_with_spare_and_floor() -> None:
    assert ctx_for(1000, 8192) == 8192
    assert ctx_for(16_000, 8192) == 20_480  # 20 000 rounded up to a multiple of 1024
    assert ctx_for(16_384, 0) % 1024 == 0 and ctx_for(16_384, 0) >= 20_480


# -- running requests ----------------------------------------------------------------------------
def test_spread_picks_evenly() -> None:
    assert spread(list(range(32)), 8) == [2, 6, 10, 14, 18, 22, 26, 30]
    assert spread([1, 2], 5) == [1, 2] and spread([1, 2, 3], 0) == []
    assert spread(list(range(5)), 1) == [2]


@pytest.mark.asyncio
async def test_in_order_keeps_order_and_limits_workers() -> None:
    running, peak, started = 0, 0, []

    async def work(i: int) -> int:
        nonlocal running, peak
        started.append(i)
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01 * (i % 3))
        running -= 1
        return i * 10

    assert await in_order(range(10), 4, work) == [i * 10 for i in range(10)]
    assert peak == 4 and started[:4] == [0, 1, 2, 3] and sorted(started) == list(range(10))
    assert await in_order([], 4, work) == []


@pytest.mark.asyncio
async def test_wait_for_polls_until_true_or_timeout() -> None:
    ticks = iter(range(100))
    assert await wait_for(lambda: next(ticks) >= 3, 5.0, poll=0.001)
    assert not await wait_for(lambda: False, 0.02, poll=0.005)


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def fake_server(request: httpx.Request) -> httpx.Response:
    """Counts one prompt token per word, and reports all but the last user message as cached."""
    body = json.loads(request.content)
    words = [len(m["content"].split()) for m in body["messages"]]
    usage = {
        "prompt_tokens": sum(words) + 5,
        "completion_tokens": 2,
        "prompt_tokens_details": {"cached_tokens": sum(words[:-1])},
    }
    raw = sse(
        {"choices": [{"delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"delta": {"content": "an"}}]},
        {"choices": [{"delta": {"content": " answer"}, "finish_reason": "length"}]},
        {"choices": [], "usage": usage},
    )
    return httpx.Response(200, content=raw, headers={"content-type": "text/event-stream"})


@pytest.mark.asyncio
async def test_turn_client_reads_cached_tokens_and_grows_the_conversation() -> None:
    transport = httpx.MockTransport(fake_server)
    async with TurnClient("http://fake/v1", transport=transport) as client:
        scale = await client.token_scale()
        assert scale.measured and scale.per_word == pytest.approx(1.0)
        conv = Conversation("12345678", "one two three")
        first = await client.turn(conv, 8)
        second = await client.turn(conv, 8)
    assert conv.answers == ["an answer", "an answer"]
    assert first.cached_tokens == len(conv.messages()[0]["content"].split())
    assert second.cached_tokens is not None and second.cached_tokens > first.cached_tokens
    assert second.to_dict()["cached_tokens"] == second.cached_tokens
    assert first.ttft is not None and first.error is None


@pytest.mark.asyncio
async def test_failed_turn_raises_and_keeps_the_conversation() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(503, json={"error": "busy"}))
    async with TurnClient("http://fake", transport=transport) as client:
        conv = Conversation("12345678", "doc")
        with pytest.raises(RuntimeError, match="HTTP 503"):
            await client.turn(conv, 8)
        assert conv.answers == []
        assert not (await client.token_scale()).measured


# -- fairness windows -----------------------------------------------------------------------------
def test_window_gaps_inside_and_overlapping() -> None:
    times = [0.0, 1.0, 2.0, 4.0, 5.0, 8.0]  # gaps 1, 1, 2, 1, 3
    assert window_gaps(times, 1.0, 4.0, overlap=False) == [1.0, 2.0]
    assert window_gaps(times, 1.5, 4.5, overlap=True) == [1.0, 2.0, 1.0]
    assert window_gaps(times, 1.5, 4.5, overlap=False) == [2.0]
    assert (
        window_gaps(times, 8.0, 9.0, overlap=True) == []
        and window_gaps([], 0, 1, overlap=True) == []
    )


def test_itl_stats_pools_the_streams() -> None:
    streams = [[0.0, 0.1, 0.2, 0.3], [0.05, 0.15, 0.55]]
    stats = itl_stats(streams, 0.0, 0.3, overlap=False)
    assert stats["gaps"] == 4 and stats["max_s"] == pytest.approx(0.1)
    busy = itl_stats(streams, 0.2, 0.5, overlap=True)
    assert busy["gaps"] == 2 and busy["max_s"] == pytest.approx(0.4)
    empty = itl_stats(streams, 5.0, 6.0, overlap=True)
    assert empty["gaps"] == 0 and empty["p95_s"] is None and empty["seconds"] == 1.0


def test_fairness_ctx_and_target() -> None:
    assert server_ctx(4096, 3, 1024, 8192) >= 4096 + 3 * 1024
    result = {
        "busy_over_idle_p95": 2.0,
        "streams": 3,
        "long_prompt": {"prompt_tokens": 4100},
    }
    (target,) = FAIRNESS.targets({"fairness": result})
    assert target.passed and "4100-token" in target.name and target.goal == 3.0
    (missing,) = FAIRNESS.targets({"fairness": {"error": "x"}})
    assert missing.passed is None


# -- ratios and targets ---------------------------------------------------------------------------
def test_multiturn_prefilled_tokens_and_target() -> None:
    assert new_tokens({"prompt_tokens": 300, "cached_tokens": 280}) == 20
    assert new_tokens({"prompt_tokens": 300, "cached_tokens": None}) is None
    turns = [{"ttft_s": 1.0}] * 7 + [{"ttft_s": 0.05}]
    (target,) = MULTITURN.targets({"multiturn": {"turns": turns, "last_over_first": 0.05}})
    assert target.name == "turn 8 TTFT ÷ turn 1 TTFT" and target.passed
    (failed,) = MULTITURN.targets({"multiturn": {"turns": turns, "last_over_first": 0.2}})
    assert failed.passed is False


def test_multiturn_turns_are_medians_over_conversations() -> None:
    convs = [
        [{"ttft_s": 1.0, "prompt_tokens": 850}, {"ttft_s": 0.3, "prompt_tokens": 900}],
        [{"ttft_s": 1.2, "prompt_tokens": 851}, {"ttft_s": None, "prompt_tokens": 901}],
        [{"ttft_s": 0.9, "prompt_tokens": 849}, {"ttft_s": 0.1, "prompt_tokens": 899}],
    ]
    first, second = median_turns(convs)
    assert first == {"ttft_s": 1.0, "prompt_tokens": 850, "ttft_each_s": [1.0, 1.2, 0.9]}
    assert second["ttft_s"] == pytest.approx(0.2) and second["prompt_tokens"] == 900
    assert second["ttft_each_s"] == [0.3, None, 0.1]
    (only,) = median_turns([[{"ttft_s": None}]])
    assert only["ttft_s"] is None


def req(rnd: int, ttft: float | None, prompt: int = 600, cached: int | None = 0) -> dict[str, Any]:
    return {
        "round": rnd,
        "ttft_s": ttft,
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "error": None,
    }


def test_sessions_summary_compares_medians() -> None:
    requests = [req(0, 2.0), req(0, 3.0), req(1, 0.1, cached=570), req(1, 0.3, cached=580)]
    requests += [req(2, 0.2, cached=590), req(2, None, cached=None)]
    controls = [
        {**req(1, 2.5), "twin_prompt_tokens": 600},
        {**req(2, 3.5), "twin_prompt_tokens": 600},
    ]
    s = summarize(requests, controls)
    assert s["first_ttft_p50_s"] == 2.5 and s["returning_ttft_p50_s"] == pytest.approx(0.2)
    assert s["cold_twin_ttft_p50_s"] == 3.0
    assert s["returning_over_cold"] == pytest.approx(0.2 / 3.0)
    assert s["twins_same_length"] and s["errors"] == []
    assert s["returning_cached_fraction_p50"] == pytest.approx(580 / 600)
    assert not summarize(requests, [{**controls[0], "twin_prompt_tokens": 599}])[
        "twins_same_length"
    ]
    assert summarize(requests, [])["returning_over_cold"] is None
    assert cached_fraction(req(1, 0.1, prompt=0)) is None


def test_sessions_twins_and_targets() -> None:
    assert twin_count(32) == 8 and twin_count(4) == 2 and twin_count(100) == 8
    variants = [
        {"variant": "resident", "returning_ttft_p50_s": 0.2, "returning_over_cold": 0.5},
        {"variant": "evicting", "returning_ttft_p50_s": 0.5, "returning_over_cold": 0.01},
        {"variant": "cache off", "returning_ttft_p50_s": 5.0},
    ]
    compare_to_baseline(variants)
    assert variants[0]["returning_over_uncached"] == pytest.approx(0.04)
    assert "returning_over_uncached" not in variants[2]
    targets = SESSIONS.targets({"sessions": {"variants": variants}})
    assert [t.passed for t in targets] == [True, False]  # against the cache-off run
    assert [t.name for t in SESSIONS.targets({})] == [
        "returning ÷ cold TTFT, resident",
        "returning ÷ cold TTFT, evicting",
    ]
    (url,) = SESSIONS.targets({"sessions": {"variants": [
        {"variant": "url", "returning_over_cold": 0.05}
    ]}})  # fmt: skip
    assert url.passed and "sent alone" in url.note


def test_restart_goal_ctx_and_target() -> None:
    assert goal_for(8000) == 0.05 and goal_for(2000) == 0.1
    assert restart_ctx(8000, 2, 8192) >= 16_384 and restart_ctx(2000, 2, 8192) == 8192
    result = {"doc_tokens": 2000, "warm_over_cold": 0.08}
    (target,) = RESTART.targets({"restart": result})
    assert target.passed and target.goal == 0.1 and "2000-token" in target.name
    (long,) = RESTART.targets({"restart": {"doc_tokens": 8000, "warm_over_cold": 0.08}})
    assert long.passed is False and long.goal == 0.05
    (missing,) = RESTART.targets({"restart": {"error": "boom"}})
    assert missing.passed is None and "8000-token" in missing.name


# -- servers and options --------------------------------------------------------------------------
def test_cache_spec_adds_its_flags() -> None:
    base = ServerSpec(model="m", threads=2, parallel=4, ctx=8192)
    plain = CacheSpec.of(base)
    assert plain.command(9000) == base.command(9000) and plain.flags() == []
    spec = CacheSpec.of(base, cache_slots=4, kv_ram_mb=256, kv_cache_dir=Path("/d"))
    cmd = spec.command(9000)
    assert cmd[: len(base.command(9000))] == base.command(9000) and spec.ctx == 8192
    assert cmd[-6:] == ["--cache-slots", "4", "--kv-ram-mb", "256", "--kv-cache-dir", "/d"]
    assert CacheSpec.of(base, prefix_cache=False).flags() == ["--no-prefix-cache"]


def test_cache_counters_parse_and_deltas() -> None:
    text = (
        "# HELP warmlm:kv_evictions_total Cached sequences evicted from KV.\n"
        "warmlm:kv_evictions_total 3.0\n"
        "warmlm:kv_restores_total 2.0\n"
        "warmlm:kv_restores_created 1.7e9\n"
        "warmlm:kv_evictions_total_bad\n"
    )
    before = parse_counters(text)
    assert before == {"evictions": 3.0, "restores": 2.0}
    after = parse_counters(text.replace("3.0", "10.0"))
    assert counter_deltas(before, after) == {"evictions": 7, "restores": 0}
    assert counter_deltas({}, after) == {"evictions": None, "restores": None}


@pytest.mark.asyncio
async def test_client_reads_counters_from_metrics_or_nothing() -> None:
    metrics = "warmlm:kv_evictions_total 4.0\nwarmlm:kv_restores_total 1.0\n"
    transport = httpx.MockTransport(lambda r: httpx.Response(200, text=metrics))
    async with TurnClient("http://fake/v1", transport=transport) as client:
        assert await client.cache_counters() == {"evictions": 4.0, "restores": 1.0}
    missing = httpx.MockTransport(lambda r: httpx.Response(404, text="nope"))
    async with TurnClient("http://fake/v1", transport=missing) as client:
        assert await client.cache_counters() == {}


def bench_options(tmp_path: Path, *argv: str) -> BenchOptions:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    bench = sub.choices["bench"]
    if not any(a.dest == "quick" for a in bench._actions):  # until main.py adds them itself
        add_scenario_args(bench)
    args = parser.parse_args(["bench", *argv, "--out", str(tmp_path)])
    known = tuple(s.name for s in all_scenarios())
    default = tuple(s.name for s in all_scenarios() if s.in_all)
    return BenchOptions.from_args(args, default, known)


def test_scenario_sizes_default_quick_and_explicit(tmp_path: Path) -> None:
    full = bench_options(tmp_path)
    assert (
        not full.quick and full.restart_doc_tokens == 8000 and full.fairness_prompt_tokens == 4096
    )
    quick = bench_options(tmp_path, "--quick", "--sessions-turns", "4")
    assert quick.quick and quick.restart_doc_tokens == 2000 and quick.sessions_turns == 4
    for name, (default, small) in SCENARIO_SIZES.items():
        assert getattr(full, name) == default == getattr(BenchOptions, name)
        assert getattr(quick, name) == (4 if name == "sessions_turns" else small)


def test_new_scenarios_are_registered_and_in_all(tmp_path: Path) -> None:
    names = [s.name for s in all_scenarios()]
    assert [n for n in names if n in NEW] == list(NEW)
    assert set(NEW) <= set(bench_options(tmp_path).scenarios)
    assert bench_options(tmp_path, "restart").scenarios == ("restart",)


# -- Markdown -------------------------------------------------------------------------------------
def turn(ttft: float, prompt: int, cached: int) -> dict[str, Any]:
    return {
        "ttft_s": ttft,
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "completion_tokens": 8,
        "finish_reason": "length",
    }


def test_markdown_renders_every_new_scenario() -> None:
    multiturn = {
        "doc_tokens": 800,
        "tokens_per_word_measured": False,
        "max_tokens": 48,
        "turns": [turn(1.0, 850, 3), turn(0.05, 900, 880)],
        "last_over_first": 0.05,
    }
    assert "| 2 | 900 | 880 | 20 | 50 |" in MULTITURN.markdown(multiturn)
    variant = {
        "variant": "evicting",
        "what": "w",
        "flags": ["--cache-slots", "4"],
        "cache": {"evictions": 12, "restores": 10},
        **summarize(
            [req(0, 2.0), req(1, 0.1, cached=590)], [{**req(1, 2.0), "twin_prompt_tokens": 600}]
        ),
    }
    sessions = {"conversations": 16, "turns": 3, "doc_tokens": 500, "max_tokens": 24}
    text = SESSIONS.markdown({**sessions, "variants": [variant]})
    assert (
        "--parallel 4 --cache-slots 4" in text and "| 98% |" in text and "| 12 | 10 | 0 |" in text
    )
    restart = {
        "conversations": 2,
        "doc_tokens": 2000,
        "ctx": 8192,
        "flags": ["--kv-cache-dir", "DIR"],
        "stop_exit_code": 0,
        "stop_s": 0.5,
        "disk_files": 3,
        "disk_bytes": 10_000_000,
        "ready_after_restart_s": 1.0,
        "restores_after_restart": 2,
        "max_tokens": 32,
        "warm_over_cold": 0.05,
        "rows": [{"phase": "after", "conversation": 0, **turn(0.1, 2100, 2080)}],
    }
    assert "2nd turn, after the restart | 1 | 2100 | 2080 | 100" in RESTART.markdown(restart)
    window = {"seconds": 1.0, "gaps": 3, "p50_s": 0.02, "p95_s": 0.03, "max_s": 0.04}
    fairness = {
        "streams": 3,
        "stream_max_tokens": 1024,
        "ctx": None,
        "parallel": None,
        "idle": window,
        "prefill": window,
        "busy_over_idle_p95": 1.0,
        "streams_running_at_first_token": 3,
        "long_prompt": {"prompt_tokens": 4100, "ttft_s": 20.0},
        "long_prefill_tps": 205.0,
    }
    assert "the server as it runs" in FAIRNESS.markdown(fairness)
