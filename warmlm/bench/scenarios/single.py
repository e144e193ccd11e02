"""`single`: one streamed request at a time — time to first token and decode speed.

Each request is bracketed by a raw B=1 `llama_decode` probe of as many tokens, just before and
just after it: this VM's speed drifts 10-20% from minute to minute, so the decode target compares
each request with the ceiling measured in the same seconds, not with the ceiling scenario's.
"""

from __future__ import annotations

import asyncio

from warmlm.bench.ceiling import CeilingPlan, CeilingProbe
from warmlm.bench.client import StreamResult
from warmlm.bench.context import BenchContext
from warmlm.bench.markdown import fmt, ms, table
from warmlm.bench.prompts import chat, distinct_long_answers
from warmlm.bench.scenarios.base import Needs, Result, Results, Scenario, ok
from warmlm.bench.scenarios.ceiling import ceiling_tps
from warmlm.bench.stats import mean, median, ratio
from warmlm.bench.targets import Target

DECODE_GOAL = 0.9
WARMUP_PROMPT = "Say hello."
FIRST_PROMPT = 200  # prompts are numbered from here (concurrency uses 0..14, fairness 300..)
SETTLE_S = 0.2  # after a request, before a probe: the server's threads stop spinning


class Single(Scenario):
    name = "single"
    title = "Single stream"
    order = 30
    needs = Needs.SERVER

    async def run(self, ctx: BenchContext) -> Result:
        o = ctx.options
        url = await ctx.server_url()
        # probes only beside a warmlm this run started: behind --url may be another model
        probe = None if o.url else _probe(ctx)
        replies: list[StreamResult] = []
        raw: list[float | None] = []
        try:
            async with ctx.client(url) as client:
                await client.discover_model()
                await client.stream_chat(chat(WARMUP_PROMPT), 4)  # untimed: a peer may start lazily
                with ctx.progress(o.single_runs, "single") as bar:
                    # different prompts, used by no other scenario: none is found already cached
                    for messages in distinct_long_answers(o.single_runs, FIRST_PROMPT):
                        raw.append(await _raw_tps(probe))
                        replies.append(await client.stream_chat(messages, o.max_tokens))
                        bar.update()
                    raw.append(await _raw_tps(probe))
        finally:
            if probe is not None:
                probe.close()
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
            "raw B=1 = the mean of raw `llama_decode` probes of as many tokens run just before "
            "and just after the request (no HTTP, no sampling). "
            f"Median: TTFT {ms(result['ttft_s'])} ms, decode {fmt(result['decode_tps'])} tok/s, "
            f"÷ raw {fmt(result.get('vs_raw'))}×.\n\n{runs}"
        )

    def targets(self, results: Results) -> list[Target]:
        result = ok(results, self.name)
        paired = result.get("vs_raw") if result else None
        if paired is not None:
            how = "streamed through the HTTP API ÷ raw probes just before and after each request"
            return [Target("single-stream decode ÷ B=1 ceiling", paired, DECODE_GOAL, note=how)]
        decode = result["decode_tps"] if result else None
        return [
            Target(
                "single-stream decode ÷ B=1 ceiling",
                ratio(decode, ceiling_tps(results, 1)),
                DECODE_GOAL,
                note="streamed through the HTTP API ÷ the ceiling scenario's B=1",
            ),
        ]


def _probe(ctx: BenchContext) -> CeilingProbe:
    """A raw B=1 decode of as many tokens as a request, after a prompt of the ceiling's length."""
    o = ctx.options
    plan = CeilingPlan((1,), o.max_tokens, o.prompt_tokens, (), 1)
    probe = CeilingProbe(ctx.model_path(), o.threads, plan.n_ctx(0), plan)
    probe.prefill_seconds(min(16, o.prompt_tokens))  # the probe's first-call warm-up
    return probe


async def _raw_tps(probe: CeilingProbe | None) -> float | None:
    if probe is None:
        return None
    await asyncio.sleep(SETTLE_S)
    return probe.decode_tps(1)


def _summary(replies: list[StreamResult], raw: list[float | None], max_tokens: int) -> Result:
    """Medians over the good requests; each request's decode ÷ the mean of its two probes."""
    requests = []
    for i, reply in enumerate(replies):
        around = [t for t in raw[i : i + 2] if t is not None]
        row = reply.to_dict()
        row["raw_tps"] = mean(around)
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
