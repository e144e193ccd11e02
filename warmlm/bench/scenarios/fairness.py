"""`fairness`: running streams' inter-token latency while a long prompt is being prefilled."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from warmlm.bench.context import BenchContext
from warmlm.bench.markdown import fmt, ms, table
from warmlm.bench.prompts import chat, distinct_long_answers
from warmlm.bench.scenarios._conversation import (
    Conversation,
    TurnClient,
    TurnRecorder,
    ctx_for,
    document,
    new_codes,
    wait_for,
)
from warmlm.bench.scenarios.base import Needs, Result, Results, Scenario, ok
from warmlm.bench.stats import percentile, ratio
from warmlm.bench.targets import Target

ITL_RATIO_GOAL = 3.0
IDLE_GAPS = 24  # gaps each stream shows while idle before the long prompt is sent
LONG_MAX_TOKENS = 4  # the long prompt is only timed to its first token
STREAM_START_TIMEOUT_S = 120.0
AFTER_FIRST_TIMEOUT_S = 10.0
FIRST_TOKEN_TIMEOUT_S = 1800.0
STREAM_PROMPT_TOKENS = 64
DOC_SEED = 31
FIRST_STREAM_PROMPT = 300  # stream prompts are numbered from here (none used elsewhere)


def window_gaps(times: Sequence[float], start: float, end: float, *, overlap: bool) -> list[float]:
    """A stream's inter-token gaps that lie inside [start, end] — or, with `overlap`, that
    overlap it at all (so a gap stretched by the window's first or last step counts)."""
    out = []
    for a, b in zip(times, times[1:], strict=False):
        inside = a < end and b > start if overlap else a >= start and b <= end
        if inside:
            out.append(b - a)
    return out


def itl_stats(
    streams: Sequence[Sequence[float]], start: float, end: float, *, overlap: bool
) -> Result:
    """Inter-token latency of all streams' gaps in a window."""
    gaps = [g for times in streams for g in window_gaps(times, start, end, overlap=overlap)]
    return {
        "start_s": start,
        "seconds": end - start,
        "gaps": len(gaps),
        "p50_s": percentile(gaps, 50),
        "p95_s": percentile(gaps, 95),
        "max_s": max(gaps) if gaps else None,
    }


def server_ctx(prompt_tokens: int, streams: int, max_tokens: int, floor: int) -> int:
    """KV for the long prompt and every stream at its longest, with room to spare."""
    return ctx_for(prompt_tokens + streams * (STREAM_PROMPT_TOKENS + max_tokens) + 1024, floor)


class Fairness(Scenario):
    name = "fairness"
    title = "Streams while a long prompt arrives"
    order = 90
    needs = Needs.SERVER

    async def run(self, ctx: BenchContext) -> Result:
        o = ctx.options
        if not o.own_server:
            url = await ctx.server_url()
            return {"ctx": None, "parallel": None, **await self._measure(ctx, url)}
        ctx.release_server()
        ctx.model_path()
        n_ctx = server_ctx(
            o.fairness_prompt_tokens, o.fairness_streams, o.fairness_max_tokens, o.ctx
        )
        spec = ctx.spec(ctx=n_ctx, parallel=o.fairness_streams + 1)
        with ctx.new_server(spec, "fairness") as server:
            await server.wait_ready(o.ready_timeout)
            result = await self._measure(ctx, server.url)
        return {"ctx": spec.ctx, "parallel": spec.parallel, **result}

    @staticmethod
    async def _measure(ctx: BenchContext, url: str) -> Result:
        o = ctx.options
        async with TurnClient(url, api_key=o.api_key) as client:
            await client.discover_model()
            await client.reply(chat("Say hello."), 4)  # untimed warm-up
            scale = await client.token_scale()
            doc = document(o.fairness_prompt_tokens, scale, DOC_SEED)
            long_prompt = Conversation(new_codes(1)[0], doc).messages()
            recs: list[TurnRecorder] = []
            tasks: list[asyncio.Task[None]] = []
            with ctx.progress(3, "fairness") as bar:
                try:
                    for prompt in distinct_long_answers(o.fairness_streams, FIRST_STREAM_PROMPT):
                        recs.append(TurnRecorder(sent_at=time.perf_counter()))
                        fill = client.fill(recs[-1], prompt, o.fairness_max_tokens)
                        tasks.append(asyncio.create_task(fill))

                    def ended() -> bool:
                        return any(t.done() for t in tasks)

                    def gaps_since(t0: float) -> int:
                        return min(sum(1 for t in r.token_times if t > t0) for r in recs)

                    if not await wait_for(
                        lambda: all(r.token_times for r in recs) or ended(),
                        STREAM_START_TIMEOUT_S,
                    ) or not all(r.token_times for r in recs):
                        raise RuntimeError(f"the streams did not all start: {_errors(recs)}")
                    idle_start = max(r.token_times[0] for r in recs)
                    await wait_for(
                        lambda: gaps_since(idle_start) >= IDLE_GAPS or ended(),
                        STREAM_START_TIMEOUT_S,
                    )
                    bar.update()
                    long_rec = TurnRecorder(sent_at=time.perf_counter())
                    long_task = asyncio.create_task(
                        client.fill(long_rec, long_prompt, LONG_MAX_TOKENS)
                    )
                    await wait_for(
                        lambda: bool(long_rec.token_times) or long_task.done(),
                        FIRST_TOKEN_TIMEOUT_S,
                    )
                    bar.update()
                    if not long_rec.token_times:
                        raise RuntimeError(f"the long prompt failed: {long_rec.error}")
                    first = long_rec.token_times[0]
                    await wait_for(  # each stream's gap across `first` completes
                        lambda: all(
                            t.done() or r.token_times[-1] > first
                            for r, t in zip(recs, tasks, strict=True)
                        ),
                        AFTER_FIRST_TIMEOUT_S,
                    )
                    await long_task
                    bar.update()
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
        streams = [r.token_times for r in recs]
        idle = itl_stats(streams, idle_start, long_rec.sent_at, overlap=False)
        busy = itl_stats(streams, long_rec.sent_at, first, overlap=True)
        long_reply = long_rec.snapshot()
        return {
            "streams": o.fairness_streams,
            "stream_max_tokens": o.fairness_max_tokens,
            "prompt_tokens_target": o.fairness_prompt_tokens,
            "tokens_per_word": scale.per_word,
            "tokens_per_word_measured": scale.measured,
            "idle": idle,
            "prefill": busy,
            "busy_over_idle_p95": ratio(busy["p95_s"], idle["p95_s"]),
            "streams_running_at_first_token": sum(1 for r in recs if r.token_times[-1] >= first),
            "stream_tokens": [len(r.token_times) for r in recs],
            "stream_errors": [r.error for r in recs if r.error],
            "long_prompt": long_reply.to_dict(),
            "long_prefill_tps": ratio(long_reply.stream.prompt_tokens, long_reply.ttft),
        }

    def markdown(self, result: Result) -> str:
        rows = [
            [
                what,
                fmt(w["seconds"]),
                w["gaps"],
                ms(w["p50_s"]),
                ms(w["p95_s"]),
                ms(w["max_s"]),
            ]
            for what, w in (
                ("idle (before the long prompt)", result["idle"]),
                ("while the long prompt is prefilled", result["prefill"]),
            )
        ]
        long = result["long_prompt"]
        n = result["streams"]
        server = (
            f"server --ctx {result['ctx']} --parallel {result['parallel']}"
            if result["ctx"]
            else "the server as it runs"
        )
        return (
            f"{n} streams (greedy, max_tokens {result['stream_max_tokens']}, stopped once "
            f"measured) decode; after each has shown {IDLE_GAPS} inter-token gaps, a prompt of "
            f"{long['prompt_tokens']} tokens arrives ({server}). It took "
            f"{fmt(long['ttft_s'])} s to its first token ({fmt(result['long_prefill_tps'])} "
            f"prompt tok/s while the streams decode); {result['streams_running_at_first_token']} "
            f"of {n} streams were still running then. Idle gaps lie within the idle window; "
            f"prefill gaps are those overlapping the window from the prompt's submission to its "
            f"first token. p95 during ÷ idle: {fmt(result['busy_over_idle_p95'])}.\n\n"
            + table(["window", "seconds", "gaps", "ITL p50 ms", "ITL p95 ms", "ITL max ms"], rows)
        )

    def targets(self, results: Results) -> list[Target]:
        result = ok(results, self.name)
        tokens = result["long_prompt"]["prompt_tokens"] if result else None
        what = f"a {tokens}-token prompt" if tokens else "a long prompt"
        return [
            Target(
                f"streams' ITL p95 while {what} prefills ÷ idle ITL p95",
                result["busy_over_idle_p95"] if result else None,
                ITL_RATIO_GOAL,
                at_most=True,
                note=f"{result['streams'] if result else 3} running streams",
            )
        ]


def _errors(recs: Sequence[TurnRecorder]) -> str:
    return "; ".join(r.error for r in recs if r.error) or "no error reported"


SCENARIO = Fairness()
