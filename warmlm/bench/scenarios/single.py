"""`single`: one streamed request at a time — time to first token and decode speed."""

from __future__ import annotations

from warmlm.bench.context import BenchContext
from warmlm.bench.markdown import fmt, ms, table
from warmlm.bench.prompts import chat, distinct_long_answers
from warmlm.bench.scenarios.base import Needs, Result, Results, Scenario, ok
from warmlm.bench.scenarios.ceiling import ceiling_tps
from warmlm.bench.stats import median, ratio
from warmlm.bench.targets import Target

DECODE_GOAL = 0.9
WARMUP_PROMPT = "Say hello."
FIRST_PROMPT = 200  # prompts are numbered from here (concurrency uses 0..14, fairness 300..)


class Single(Scenario):
    name = "single"
    title = "Single stream"
    order = 30
    needs = Needs.SERVER

    async def run(self, ctx: BenchContext) -> Result:
        o = ctx.options
        url = await ctx.server_url()
        async with ctx.client(url) as client:
            await client.discover_model()
            await client.stream_chat(chat(WARMUP_PROMPT), 4)  # untimed: a peer may start lazily
            replies = []
            with ctx.progress(o.single_runs, "single") as bar:
                # different prompts, used by no other scenario: none is found already cached
                for messages in distinct_long_answers(o.single_runs, FIRST_PROMPT):
                    replies.append(await client.stream_chat(messages, o.max_tokens))
                    bar.update()
        good = [r for r in replies if r.error is None]
        return {
            "max_tokens": o.max_tokens,
            "requests": [r.to_dict() for r in replies],
            "ttft_s": median([r.ttft for r in good if r.ttft is not None]),
            "decode_tps": median([r.decode_tps for r in good if r.decode_tps is not None]),
            "completion_tokens": median([r.completion_tokens for r in good]),
            "errors": [r.error for r in replies if r.error],
        }

    def markdown(self, result: Result) -> str:
        rows = [
            [
                i + 1,
                ms(r["ttft_s"]),
                fmt(r["decode_tps"]),
                r["completion_tokens"],
                fmt(r["e2e_s"]),
                r["finish_reason"] or r["error"] or "",
            ]
            for i, r in enumerate(result["requests"])
        ]
        runs = table(
            ["request", "TTFT ms", "decode tok/s", "tokens", "end-to-end s", "finish"], rows
        )
        return (
            f"One streamed chat request at a time, greedy, max_tokens {result['max_tokens']}; "
            "decode tok/s = completion tokens after the first ÷ time from first to last token. "
            f"Median: TTFT {ms(result['ttft_s'])} ms, decode {fmt(result['decode_tps'])} tok/s."
            f"\n\n{runs}"
        )

    def targets(self, results: Results) -> list[Target]:
        result = ok(results, self.name)
        decode = result["decode_tps"] if result else None
        return [
            Target(
                "single-stream decode ÷ B=1 ceiling",
                ratio(decode, ceiling_tps(results, 1)),
                DECODE_GOAL,
                note="streamed through the HTTP API",
            ),
        ]


SCENARIO = Single()
