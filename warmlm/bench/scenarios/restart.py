"""`restart`: conversations survive a graceful restart through the disk tier (`--kv-cache-dir`)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from warmlm.bench.client import Messages
from warmlm.bench.context import BenchContext
from warmlm.bench.markdown import fmt, ms, table
from warmlm.bench.options import SCENARIO_SIZES
from warmlm.bench.prompts import chat
from warmlm.bench.scenarios._conversation import (
    QUESTIONS,
    CacheSpec,
    Conversation,
    Reply,
    TurnClient,
    counter_deltas,
    ctx_for,
    document,
    new_codes,
)
from warmlm.bench.scenarios.base import Needs, Result, Results, Scenario, ok
from warmlm.bench.serverproc import ServerProcess
from warmlm.bench.stats import ratio
from warmlm.bench.targets import Target
from warmlm.engine.diskstore import list_entries

WARM_TO_COLD_GOAL = 0.1
LONG_DOC_GOAL = 0.05  # the goal for the ~8k-token document
LONG_DOC_TOKENS = 7000  # documents at least this long are held to LONG_DOC_GOAL
LONG_DOC_CTX = 16384
MAX_TOKENS = 32
TURN_OVERHEAD_TOKENS = 64
DOC_SEED = 21


def goal_for(doc_tokens: int) -> float:
    """≤ 0.05× for the ~8k-token document, ≤ 0.1× otherwise."""
    return LONG_DOC_GOAL if doc_tokens >= LONG_DOC_TOKENS else WARM_TO_COLD_GOAL


def restart_ctx(doc_tokens: int, conversations: int, floor: int) -> int:
    """Room for every conversation's two turns (they share the document, but the KV budget
    counts each sequence whole)."""
    per_conv = doc_tokens + 2 * (MAX_TOKENS + TURN_OVERHEAD_TOKENS)
    low = max(floor, LONG_DOC_CTX) if doc_tokens >= LONG_DOC_TOKENS else floor
    return ctx_for(conversations * per_conv + 1024, low)


def rotated(i: int) -> tuple[str, ...]:
    """The questions, starting at the i-th: each conversation asks different ones."""
    return QUESTIONS[i:] + QUESTIONS[:i]


def row(phase: str, conversation: int, reply: Reply) -> Result:
    return {"phase": phase, "conversation": conversation, **reply.to_dict()}


async def started(ctx: BenchContext, server: ServerProcess) -> float:
    """Wait for ready; seconds from process start."""
    return await server.wait_ready(ctx.options.ready_timeout)


class Restart(Scenario):
    name = "restart"
    title = "Conversations across a restart"
    order = 80
    needs = Needs.PROCESS

    async def run(self, ctx: BenchContext) -> Result:
        o = ctx.options
        ctx.model_path()
        doc_tokens, n = o.restart_doc_tokens, o.restart_conversations
        base = ctx.spec(ctx=restart_ctx(doc_tokens, n, o.ctx))
        kv_dir = Path(tempfile.mkdtemp(prefix="warmlm-bench-kv-"))
        try:
            spec = CacheSpec.of(base, kv_cache_dir=kv_dir)
            rows: list[Result] = []
            with ctx.progress(2 * n + 1, "restart") as bar:
                # 1. a server with the disk tier: the first turn of each conversation
                with ctx.new_server(spec, "restart-before") as server:
                    await started(ctx, server)
                    async with TurnClient(server.url, api_key=o.api_key) as client:
                        await client.discover_model()
                        await client.reply(chat("Say hello."), 4)
                        scale = await client.token_scale()
                        doc = document(doc_tokens, scale, DOC_SEED)
                        code = new_codes(1)[0]  # one system prompt and document for all
                        convs = [Conversation(code, doc, rotated(i)) for i in range(n)]
                        for i, conv in enumerate(convs):
                            rows.append(row("before", i, await client.turn(conv, MAX_TOKENS)))
                            bar.update()
                    t0 = time.perf_counter()
                    exit_code = server.stop()  # SIGINT: cached sequences are saved to the disk
                    stop_s = time.perf_counter() - t0
                files = list_entries(kv_dir)
                # 2. the same directory after a restart: each conversation's next turn
                prompts: list[Messages] = [conv.messages() for conv in convs]
                with ctx.new_server(spec, "restart-after") as server:
                    ready_s = await started(ctx, server)
                    async with TurnClient(server.url, api_key=o.api_key) as client:
                        await client.discover_model()
                        await client.reply(chat("Say hello."), 4)
                        before = await client.cache_counters()
                        for i, conv in enumerate(convs):
                            rows.append(row("after", i, await client.turn(conv, MAX_TOKENS)))
                            bar.update()
                        cache = counter_deltas(before, await client.cache_counters())
                # 3. the same history, re-prefilled from scratch (--no-prefix-cache)
                cold_spec = CacheSpec.of(base, prefix_cache=False)
                with ctx.new_server(cold_spec, "restart-cold") as server:
                    await started(ctx, server)
                    async with TurnClient(server.url, api_key=o.api_key) as client:
                        await client.discover_model()
                        await client.reply(chat("Say hello."), 4)
                        cold = await client.reply(prompts[0], MAX_TOKENS)
                        bar.update()
                if cold.error is not None:
                    raise RuntimeError(f"the cold re-prefill failed: {cold.error}")
                rows.append(row("cold", 0, cold))
        finally:
            shutil.rmtree(kv_dir, ignore_errors=True)
        warm = next(r for r in rows if r["phase"] == "after" and r["conversation"] == 0)
        return {
            "doc_tokens": doc_tokens,
            "tokens_per_word": scale.per_word,
            "tokens_per_word_measured": scale.measured,
            "conversations": n,
            "max_tokens": MAX_TOKENS,
            "ctx": base.ctx,
            "flags": CacheSpec.of(base, kv_cache_dir=Path("DIR")).flags(),
            "stop_exit_code": exit_code,
            "stop_s": stop_s,
            "disk_files": len(files),
            "disk_bytes": sum(f.size for f in files),
            "ready_after_restart_s": ready_s,
            "restores_after_restart": cache["restores"],
            "rows": rows,
            "warm_ttft_s": warm["ttft_s"],
            "cold_ttft_s": cold.ttft,
            "warm_over_cold": ratio(warm["ttft_s"], cold.ttft),
        }

    def markdown(self, result: Result) -> str:
        what = {
            "before": "1st turn, before the restart",
            "after": "2nd turn, after the restart",
            "cold": "2nd turn, --no-prefix-cache",
        }
        rows = [
            [
                what[r["phase"]],
                r["conversation"] + 1,
                "—" if r["prompt_tokens"] is None else r["prompt_tokens"],
                "—" if r["cached_tokens"] is None else r["cached_tokens"],
                ms(r["ttft_s"]),
            ]
            for r in result["rows"]
        ]
        mb = result["disk_bytes"] / 1_000_000
        return (
            f"{result['conversations']} conversations over one document of about "
            f"{result['doc_tokens']} tokens (server --ctx {result['ctx']} "
            f"{' '.join(result['flags'])}), one turn each; then a graceful stop (SIGINT, exit "
            f"code {result['stop_exit_code']}, {fmt(result['stop_s'])} s, leaving "
            f"{result['disk_files']} files of {fmt(mb)} MB), a start on the same directory "
            f"(ready in {fmt(result['ready_after_restart_s'])} s) and each conversation's next "
            f"turn: the whole history plus a new question ({fmt(result['restores_after_restart'])} "
            "sequences restored from disk, by the server's counters). Cold = the first "
            "conversation's same request to a fresh server with --no-prefix-cache. Streamed, "
            f"greedy, max_tokens {result['max_tokens']}. After ÷ cold TTFT: "
            f"{fmt(result['warm_over_cold'])}.\n\n"
            + table(["request", "conversation", "prompt tokens", "cached", "TTFT ms"], rows)
        )

    def targets(self, results: Results) -> list[Target]:
        result = ok(results, self.name)
        doc = result["doc_tokens"] if result else SCENARIO_SIZES["restart_doc_tokens"][0]
        return [
            Target(
                f"TTFT after restart ÷ cold re-prefill ({doc}-token document)",
                result["warm_over_cold"] if result else None,
                goal_for(doc),
                at_most=True,
                note="same history; disk tier vs --no-prefix-cache",
            )
        ]


SCENARIO = Restart()
