"""`coldstart`: process start → ready, then ten different equal-length prompts, first vs tenth."""

from __future__ import annotations

from typing import Any

from warmlm.bench.client import Messages
from warmlm.bench.context import BenchContext
from warmlm.bench.markdown import fmt, ms, table
from warmlm.bench.prompts import equal_length_prompts
from warmlm.bench.scenarios.base import Needs, Result, Results, Scenario, ok
from warmlm.bench.stats import median, ratio
from warmlm.bench.targets import Target

READY_GOAL_S = 2.0
FIRST_TO_TENTH_GOAL = 1.3


async def _one_start(ctx: BenchContext, index: int, prompts: list[Messages]) -> dict[str, Any]:
    """Start a server, time it to ready, then send the prompts one after another."""
    o = ctx.options
    with ctx.new_server(ctx.spec(), f"coldstart{index}") as server:
        ready = await server.wait_ready(o.ready_timeout)
        async with ctx.client(server.url) as client:
            replies = [await client.stream_chat(p, o.coldstart_max_tokens) for p in prompts]
        rss = server.peak_rss_bytes()
    ttfts = [r.ttft for r in replies]
    lengths = {r.prompt_tokens for r in replies}
    return {
        "ready_s": ready,
        "ttft_s": ttfts,
        "first_over_last": ratio(ttfts[0], ttfts[-1]),
        "prompt_tokens": sorted(x for x in lengths if x is not None),
        "equal_length": len(lengths) == 1 and None not in lengths,
        "errors": [r.error for r in replies if r.error],
        "peak_rss_bytes": rss,
    }


class ColdStart(Scenario):
    name = "coldstart"
    title = "Cold start: ready time and first requests"
    order = 20
    needs = Needs.PROCESS

    async def run(self, ctx: BenchContext) -> Result:
        o = ctx.options
        ctx.model_path()  # assembled before any clock starts: this measures a warm start
        prompts = equal_length_prompts(o.coldstart_prompts)
        runs = []
        with ctx.progress(o.coldstart_runs, "coldstart") as bar:
            for i in range(o.coldstart_runs):
                runs.append(await _one_start(ctx, i + 1, prompts))
                bar.update()
        ratios = [r["first_over_last"] for r in runs if r["first_over_last"] is not None]
        return {
            "runs": runs,
            "prompts": len(prompts),
            "max_tokens": o.coldstart_max_tokens,
            "ready_s": median([r["ready_s"] for r in runs]),
            "ttft_first_s": median([r["ttft_s"][0] for r in runs if r["ttft_s"][0] is not None]),
            "ttft_last_s": median([r["ttft_s"][-1] for r in runs if r["ttft_s"][-1] is not None]),
            "first_over_last": median(ratios),
        }

    def markdown(self, result: Result) -> str:
        runs = result["runs"]
        summary = table(
            [
                "start",
                "ready s",
                "TTFT 1st ms",
                f"TTFT {result['prompts']}th ms",
                "1st ÷ last",
                "prompt tokens",
            ],
            [
                [
                    i + 1,
                    fmt(r["ready_s"]),
                    ms(r["ttft_s"][0]),
                    ms(r["ttft_s"][-1]),
                    fmt(r["first_over_last"]),
                    ",".join(map(str, r["prompt_tokens"])),
                ]
                for i, r in enumerate(runs)
            ],
        )
        per_request = table(
            ["request", *(f"start {i + 1} TTFT ms" for i in range(len(runs)))],
            [[k + 1, *(ms(r["ttft_s"][k]) for r in runs)] for k in range(result["prompts"])],
        )
        return (
            f"{len(runs)} process starts (model already assembled); after each, "
            f"{result['prompts']} different prompts of equal length, sent one at a time, "
            f"streamed, greedy, max_tokens {result['max_tokens']}. Medians: ready "
            f"{fmt(result['ready_s'])} s, first TTFT {ms(result['ttft_first_s'])} ms, last TTFT "
            f"{ms(result['ttft_last_s'])} ms.\n\n{summary}\n\n{per_request}"
        )

    def targets(self, results: Results) -> list[Target]:
        result = ok(results, self.name)
        ready = result["ready_s"] if result else None
        first = result["first_over_last"] if result else None
        return [
            Target(
                "ready (warm) after process start",
                ready,
                READY_GOAL_S,
                at_most=True,
                unit=" s",
                note="median over starts, polling /ready every 20 ms",
            ),
            Target(
                "first TTFT ÷ tenth TTFT",
                first,
                FIRST_TO_TENTH_GOAL,
                at_most=True,
                note="median over starts; ten different equal-length prompts",
            ),
        ]


SCENARIO = ColdStart()
