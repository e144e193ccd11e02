"""`rss`: peak resident memory of a server filling its context with concurrent long streams."""

from __future__ import annotations

import asyncio

from warmlm.bench.context import BenchContext
from warmlm.bench.markdown import fmt, table
from warmlm.bench.prompts import long_context
from warmlm.bench.scenarios.base import Needs, Result, Results, Scenario, ok
from warmlm.bench.serverproc import read_status_kib
from warmlm.bench.targets import Target
from warmlm.bench.timeline import group_stats

MB = 1_000_000
PEAK_GOAL_MB = 1000.0


class Rss(Scenario):
    name = "rss"
    title = "Peak memory"
    order = 50
    needs = Needs.PROCESS

    async def run(self, ctx: BenchContext) -> Result:
        o = ctx.options
        ctx.model_path()
        spec = ctx.spec(ctx=o.rss_ctx, parallel=o.rss_streams)
        with ctx.new_server(spec, "rss") as server:
            await server.wait_ready(o.ready_timeout)
            after_ready = server.peak_rss_bytes()
            prompts = [long_context(o.rss_prompt_words, seed=i) for i in range(o.rss_streams)]
            async with ctx.client(server.url) as client:
                with ctx.progress(1, "rss") as bar:
                    replies = await asyncio.gather(
                        *(client.stream_chat(p, o.max_tokens) for p in prompts)
                    )
                    bar.update()
            peak = server.peak_rss_bytes()
            current = read_status_kib(server.pid, "VmRSS")
        stats = group_stats(list(replies))
        return {
            "ctx": o.rss_ctx,
            "streams": o.rss_streams,
            "max_tokens": o.max_tokens,
            "prompt_tokens": [r.prompt_tokens for r in replies],
            "completion_tokens": [r.completion_tokens for r in replies],
            "peak_rss_after_ready_bytes": after_ready,
            "peak_rss_bytes": peak,
            "rss_at_end_bytes": None if current is None else current * 1024,
            "errors": stats["errors"],
        }

    def markdown(self, result: Result) -> str:
        def mb(value: int | None) -> str:
            return fmt(None if value is None else value / MB)

        tokens = [
            (p or 0) + c
            for p, c in zip(result["prompt_tokens"], result["completion_tokens"], strict=False)
        ]
        rows = [
            ["after ready", mb(result["peak_rss_after_ready_bytes"])],
            [f"after {result['streams']} streams", mb(result["peak_rss_bytes"])],
        ]
        return (
            f"A server with --ctx {result['ctx']} --parallel {result['streams']} serving "
            f"{result['streams']} concurrent streams of {', '.join(map(str, tokens))} tokens "
            f"(prompt + completion); peak RSS is the server's VmHWM. Errors: "
            f"{len(result['errors'])}.\n\n" + table(["when", "peak RSS MB"], rows)
        )

    def targets(self, results: Results) -> list[Target]:
        result = ok(results, self.name)
        peak = result["peak_rss_bytes"] if result else None
        streams = result["streams"] if result else 4
        return [
            Target(
                f"peak RSS serving {streams} streams",
                None if peak is None else peak / MB,
                PEAK_GOAL_MB,
                at_most=True,
                unit=" MB",
                note="VmHWM of the server",
            )
        ]


SCENARIO = Rss()
