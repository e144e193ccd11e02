"""`single`: one streamed request at a time — time to first token and decode speed.

A run that starts warmlm itself runs a raw B=1 probe before and after each request
(bench/bracket.py): the decode target divides each request by the probes around it.
"""

from __future__ import annotations

from warmlm.bench.bracket import around, decode_target, open_bracket, probe_tps
from warmlm.bench.client import StreamResult
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
        replies: list[StreamResult] = []
        raw: list[float | None] = []
        with open_bracket(ctx, (1,)) as bracket:
            async with ctx.client(url) as client:
                await client.discover_model()
                await client.stream_chat(chat(WARMUP_PROMPT), 4)  # untimed: a peer may start lazily
                with ctx.progress(o.single_runs, "single") as bar:
                    # different prompts, used by no other scenario: none is found already cached
                    for messages in distinct_long_answers(o.single_runs, FIRST_PROMPT):
                        raw.append(await probe_tps(bracket, 1))
                        replies.append(await client.stream_chat(messages, o.max_tokens))
                        bar.update()
                    raw.append(await probe_tps(bracket, 1))
        return _summary(replies, raw, o.max_tokens)

    def markdown(self, result: Result) -> str:
        rows = [
            [
                i + 1,
                ms(r["ttft_s"]),
                fmt(r["decode_tps"]),
                fmt(r.get("raw_tps")),
                fmt(r.get("vs_raw")),
                r["completion_tokens"],
                fmt(r["e2e_s"]),
                r["finish_reason"] or r["error"] or "",
            ]
            for i, r in enumerate(result["requests"])
        ]
        head = ["request", "TTFT ms", "decode tok/s", "raw B=1 tok/s", "÷ raw", "tokens"]
        runs = table([*head, "end-to-end s", "finish"], rows)
        return (
            f"One streamed chat request at a time, greedy, max_tokens {result['max_tokens']}; "
            "decode tok/s = completion tokens after the first ÷ time from first to last token; "
            "raw B=1 = the mean of raw `llama_decode` probes (no HTTP, no sampling) run just "
            "before and just after the request. "
            f"Median: TTFT {ms(result['ttft_s'])} ms, decode {fmt(result['decode_tps'])} tok/s, "
            f"÷ raw {fmt(result.get('vs_raw'))}×.\n\n{runs}"
        )

    def targets(self, results: Results) -> list[Target]:
        result = ok(results, self.name) or {}
        return [
            decode_target(
                "single-stream decode ÷ B=1 ceiling",
                DECODE_GOAL,
                "streamed through the HTTP API",
                result.get("vs_raw"),
                result.get("decode_tps"),
                ceiling_tps(results, 1),
            )
        ]


def _summary(replies: list[StreamResult], raw: list[float | None], max_tokens: int) -> Result:
    """Medians over the good requests; each request's decode ÷ the mean of its two probes."""
    requests = []
    for i, reply in enumerate(replies):
        row = reply.to_dict()
        row["raw_tps"] = around(raw[i], raw[i + 1])
        row["vs_raw"] = ratio(reply.decode_tps, row["raw_tps"])
        requests.append(row)
    good = [r for r in requests if r["error"] is None]

    def mid(key: str) -> float | None:
        return median([r[key] for r in good if r[key] is not None])

    return {
        "max_tokens": max_tokens,
        "requests": requests,
        "raw_probes_tps": raw,
        "ttft_s": mid("ttft_s"),
        "decode_tps": mid("decode_tps"),
        "vs_raw": mid("vs_raw"),
        "completion_tokens": mid("completion_tokens"),
        "errors": [r["error"] for r in requests if r["error"]],
    }


SCENARIO = Single()
