"""`concurrency`: N simultaneous streams — aggregate throughput, latencies, and waiting.

A run that starts warmlm itself runs a raw B=N probe before and after each level with a goal
(bench/bracket.py): the target divides the level's decode-phase speed by the probes around it.
Such a level runs REPEATS times between probes (this VM's ratio of one run moves by ±10%) and
reports the run with the median ratio.
"""

from __future__ import annotations

import asyncio

from warmlm.bench.bracket import Bracket, around, decode_target, open_bracket, probe_tps
from warmlm.bench.client import ChatClient, StreamResult
from warmlm.bench.context import BenchContext
from warmlm.bench.markdown import fmt, ms, table
from warmlm.bench.options import BenchOptions
from warmlm.bench.prompts import chat, distinct_long_answers
from warmlm.bench.scenarios.base import Needs, Result, Results, Scenario, ok
from warmlm.bench.scenarios.ceiling import ceiling_tps
from warmlm.bench.stats import ratio
from warmlm.bench.targets import Target
from warmlm.bench.timeline import group_stats

GOALS = {4: 0.9, 8: 0.85}
REPEATS = 3
HEAD = (
    "streams", "aggregate tok/s", "decode-phase tok/s", "TTFT p50 ms", "TTFT p95 ms",
    "ITL p50 ms", "ITL p95 ms", "tokens", "waited", "errors", "raw B=N tok/s", "÷ raw",
)  # fmt: skip


async def run_level(client: ChatClient, n: int, max_tokens: int, start: int) -> list[StreamResult]:
    """n different streamed requests sent at once (prompts numbered from `start`)."""
    prompts = distinct_long_answers(n, start)
    return list(await asyncio.gather(*(client.stream_chat(p, max_tokens) for p in prompts)))


def level_result(
    n: int, parallel: int, replies: list[StreamResult], raw_tps: float | None = None
) -> Result:
    """A level's figures; `raw_tps`, the raw B=n decode speed probed around it, if any."""
    stats = group_stats(replies)
    return {
        "level": n,
        "wait_check_applies": n <= parallel,
        **stats,
        "raw_tps": raw_tps,
        "vs_raw": ratio(stats["decode_aggregate_tps"], raw_tps),
        "streams": [r.to_dict() for r in replies],
    }


def median_run(runs: list[Result]) -> Result:
    """The run with the median ÷ raw, with every run's figures under `repeats` and the
    waiting and errors of them all."""
    if len(runs) == 1:
        return runs[0]
    ordered = sorted(runs, key=lambda r: (r["vs_raw"] is None, r["vs_raw"] or 0.0))
    keys = ("aggregate_tps", "decode_aggregate_tps", "raw_tps", "vs_raw", "waited_for_other")
    return {
        **ordered[(len(ordered) - 1) // 2],
        "repeats": [{k: r[k] for k in keys} for r in runs],
        "waited_for_other": sum(r["waited_for_other"] for r in runs),
        "errors": [e for r in runs for e in r["errors"]],
    }


async def bracketed_level(
    client: ChatClient, bracket: Bracket | None, n: int, o: BenchOptions, start: int
) -> Result:
    """Level n, REPEATS times between raw B=n probes when it has them (prompts numbered from
    `start`, new ones for each run), else once."""
    after = await probe_tps(bracket, n)
    runs = []
    for i in range(REPEATS if after is not None else 1):
        before = after
        replies = await run_level(client, n, o.max_tokens, start + i * n)
        after = await probe_tps(bracket, n)
        runs.append(level_result(n, o.parallel, replies, around(before, after)))
    return median_run(runs)


def _vs_raw(r: Result) -> str:
    each = [fmt(x["vs_raw"]) for x in r.get("repeats") or []]
    return fmt(r.get("vs_raw")) + (f" ({' · '.join(each)})" if each else "")


def _row(r: Result) -> list[object]:
    waited = r["waited_for_other"] if r["wait_check_applies"] else f"({r['waited_for_other']})"
    latencies = [ms(r[k]) for k in ("ttft_p50_s", "ttft_p95_s", "itl_p50_s", "itl_p95_s")]
    return [
        r["level"], fmt(r["aggregate_tps"]), fmt(r["decode_aggregate_tps"]), *latencies,
        r["completion_tokens"], waited, len(r["errors"]), fmt(r.get("raw_tps")), _vs_raw(r),
    ]  # fmt: skip


class Concurrency(Scenario):
    name = "concurrency"
    title = "Concurrent streams"
    order = 40
    needs = Needs.SERVER

    async def run(self, ctx: BenchContext) -> Result:
        o = ctx.options
        url = await ctx.server_url()
        levels = []
        with open_bracket(ctx, [n for n in o.levels if n in GOALS]) as bracket:
            async with ctx.client(url) as client:
                await client.discover_model()
                await client.stream_chat(chat("Say hello."), 4)  # untimed warm-up
                start = 0
                with ctx.progress(len(o.levels), "concurrency") as bar:
                    for n in o.levels:
                        levels.append(await bracketed_level(client, bracket, n, o, start))
                        start += n * len(levels[-1].get("repeats") or [None])
                        bar.update()
        return {"max_tokens": o.max_tokens, "parallel": o.parallel, "levels": levels}

    def markdown(self, result: Result) -> str:
        rows = [_row(r) for r in result["levels"]]
        return (
            f"N different streamed chat requests sent at once, greedy, max_tokens "
            f"{result['max_tokens']}, server --parallel {result['parallel']}. Aggregate = all "
            "completion tokens ÷ wall time from the first request sent to the last finished; "
            "decode-phase = tokens produced while every stream was decoding ÷ that window. "
            "Waited = streams whose first token came after another stream had finished "
            "(in parentheses where N > parallel, when waiting is expected). Raw B=N = the mean "
            "of raw `llama_decode` probes of N sequences run just before and just after the "
            "level; ÷ raw = decode-phase ÷ raw. A level with a target runs "
            f"{REPEATS} times, a probe between runs, and its row is the run with the median "
            "÷ raw (each run's in parentheses, in order).\n\n" + table(HEAD, rows)
        )

    def targets(self, results: Results) -> list[Target]:
        result = ok(results, self.name)
        by_level = {r["level"]: r for r in result["levels"]} if result else {}
        out = []
        for n, goal in GOALS.items():
            out.append(_decode_target(n, goal, by_level.get(n, {}), results))
        checked = [r for r in by_level.values() if r["wait_check_applies"]]
        waited = sum(r["waited_for_other"] for r in checked) if checked else None
        out.append(
            Target(
                "streams that waited for another to finish",
                waited,
                0,
                at_most=True,
                unit="",
                note="over levels N ≤ --parallel",
            )
        )
        return out


def _decode_target(n: int, goal: float, level: Result, results: Results) -> Target:
    """Level n's decode-phase speed ÷ the probes around it, else ÷ the ceiling scenario's B=n."""
    return decode_target(
        f"aggregate decode @{n} streams ÷ B={n} ceiling",
        goal,
        "decode-phase aggregate tok/s",
        level.get("vs_raw"),
        level.get("decode_aggregate_tps"),
        ceiling_tps(results, n),
    )


SCENARIO = Concurrency()
