"""`sessions`: many conversations over few parallel slots, each returning after all the others."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from warmlm.bench.client import Messages
from warmlm.bench.context import BenchContext
from warmlm.bench.markdown import fmt, ms, table
from warmlm.bench.prompts import chat
from warmlm.bench.scenarios._conversation import (
    CacheSpec,
    Conversation,
    TokenScale,
    TurnClient,
    counter_deltas,
    ctx_for,
    document,
    in_order,
    new_codes,
    spread,
)
from warmlm.bench.scenarios.base import Needs, Result, Results, Scenario, ok
from warmlm.bench.stats import median, percentile, ratio
from warmlm.bench.targets import Target

RETURNING_TO_COLD_GOAL = 0.06
PARALLEL = 4  # the server's --parallel, and how many conversations are in flight at once
TURN_OVERHEAD_TOKENS = 64  # a question and the template around a turn
DOC_SEED = 1000


@dataclass(frozen=True)
class Variant:
    key: str
    what: str
    cache_slots: int | None = None
    kv_ram_mb: int | None = None
    prefix_cache: bool = True


VARIANTS = (
    Variant("resident", "default cache slots (16): conversations can stay in KV"),
    Variant("evicting", "4 cache slots: conversations are evicted to RAM and restored", 4, 256),
    Variant("cache off", "--no-prefix-cache: every turn prefilled cold (the baseline)",
            prefix_cache=False),
)  # fmt: skip
BASELINE = "cache off"
URL_VARIANT = Variant("url", "the server as it runs")


def twin_count(returning: int) -> int:
    """How many cold twins to time: a quarter of the returning turns, 2 to 8."""
    return min(8, max(2, returning // 4))


def cached_fraction(request: Result) -> float | None:
    prompt, cached = request.get("prompt_tokens"), request.get("cached_tokens")
    return None if not prompt or cached is None else cached / prompt


def summarize(requests: list[Result], controls: list[Result]) -> Result:
    """The figures of one variant: cold first turns, returning turns, their cold twins."""

    def ttfts(rows: list[Result]) -> list[float]:
        return [r["ttft_s"] for r in rows if r["ttft_s"] is not None]

    first = [r for r in requests if r["round"] == 0]
    returning = [r for r in requests if r["round"] > 0]
    fractions = [f for f in map(cached_fraction, returning) if f is not None]
    back, cold = median(ttfts(returning)), median(ttfts(controls))
    return {
        "first_ttft_p50_s": median(ttfts(first)),
        "returning_ttft_p50_s": back,
        "returning_ttft_p95_s": percentile(ttfts(returning), 95),
        "returning_cached_fraction_p50": median(fractions),
        "cold_twin_ttft_p50_s": cold,
        "returning_over_cold": ratio(back, cold),
        "twins_same_length": all(c["prompt_tokens"] == c["twin_prompt_tokens"] for c in controls),
        "errors": [r["error"] for r in requests + controls if r["error"]],
    }


def compare_to_baseline(variants: list[Result]) -> None:
    """Each cached variant's returning TTFT ÷ the same turns' TTFT with the cache off: the same
    prompts, lengths and traffic, cold (`returning_over_uncached`)."""
    base = next((v for v in variants if v["variant"] == BASELINE), None)
    for v in variants:
        if base is not None and v is not base:
            v["returning_over_uncached"] = ratio(
                v["returning_ttft_p50_s"], base["returning_ttft_p50_s"]
            )


def server_ctx(o: Any) -> int:
    """KV for every conversation at its longest, the running answers, and some spare."""
    per_conv = o.sessions_doc_tokens + o.sessions_turns * (
        o.sessions_max_tokens + TURN_OVERHEAD_TOKENS
    )
    return ctx_for(o.sessions_conversations * per_conv + 2048, o.ctx)


async def play(
    client: TurnClient, ctx: BenchContext, scale: TokenScale, bar: tqdm, twins_too: bool = True
) -> Result:
    """Every conversation's turns, round-robin, `PARALLEL` at a time; then (`twins_too`) cold
    twins of some returning turns, one at a time."""
    o = ctx.options
    codes = new_codes(o.sessions_conversations)
    convs = [
        Conversation(code, document(o.sessions_doc_tokens, scale, DOC_SEED + i))
        for i, code in enumerate(codes)
    ]
    requests: list[Result] = []
    twins: list[tuple[Result, Messages]] = []  # a returning turn, and its prompt with a new code
    for rnd in range(o.sessions_turns):
        fresh = new_codes(len(convs))
        prompts = [c.messages(code) for c, code in zip(convs, fresh, strict=True)]

        async def one(i: int, rnd: int = rnd) -> Result:
            reply = await client.turn(convs[i], o.sessions_max_tokens)
            bar.update()
            return {"round": rnd, "conversation": i, **reply.to_dict()}

        done = await in_order(range(len(convs)), PARALLEL, one)
        requests += done
        if rnd > 0:
            twins += zip(done, prompts, strict=True)
    controls = []
    for request, prompt in spread(twins, twin_count(len(twins)) if twins_too else 0):
        reply = await client.reply(prompt, o.sessions_max_tokens)
        bar.update()
        controls.append(
            {
                "round": request["round"],
                "conversation": request["conversation"],
                "twin_prompt_tokens": request["prompt_tokens"],
                **reply.to_dict(),
            }
        )
    return {"requests": requests, "controls": controls, **summarize(requests, controls)}


class Sessions(Scenario):
    name = "sessions"
    title = "Returning conversations"
    order = 70
    needs = Needs.SERVER

    async def run(self, ctx: BenchContext) -> Result:
        o = ctx.options
        if o.sessions_turns < 2:
            raise ValueError("sessions needs at least 2 turns per conversation")
        n, turns = o.sessions_conversations, o.sessions_turns
        variants = VARIANTS if o.own_server else (URL_VARIANT,)
        twins = twin_count(n * (turns - 1))
        steps = sum(n * turns + (twins if v.prefix_cache else 0) for v in variants)
        out: dict[str, Any] = {
            "conversations": o.sessions_conversations,
            "turns": o.sessions_turns,
            "doc_tokens": o.sessions_doc_tokens,
            "max_tokens": o.sessions_max_tokens,
            "parallel": PARALLEL,
            "variants": [],
        }
        scale: TokenScale | None = None
        with ctx.progress(steps, "sessions") as bar:
            for variant in variants:
                if o.own_server:
                    ctx.release_server()
                    ctx.model_path()
                    base = ctx.spec(ctx=server_ctx(o), parallel=PARALLEL)
                    spec = CacheSpec.of(
                        base,
                        cache_slots=variant.cache_slots,
                        kv_ram_mb=variant.kv_ram_mb,
                        prefix_cache=variant.prefix_cache,
                    )
                    name = f"sessions-{variant.key.replace(' ', '-')}"
                    with ctx.new_server(spec, name) as server:
                        await server.wait_ready(o.ready_timeout)
                        result, scale = await self._variant(
                            ctx, server.url, scale, bar, variant.prefix_cache
                        )
                    result.update(ctx=spec.ctx, flags=spec.flags())
                else:
                    result, scale = await self._variant(ctx, await ctx.server_url(), scale, bar)
                    result.update(ctx=None, flags=None)
                out["variants"].append({"variant": variant.key, "what": variant.what, **result})
        assert scale is not None
        out.update(tokens_per_word=scale.per_word, tokens_per_word_measured=scale.measured)
        compare_to_baseline(out["variants"])
        return out

    @staticmethod
    async def _variant(
        ctx: BenchContext, url: str, scale: TokenScale | None, bar: tqdm, twins: bool = True
    ) -> tuple[Result, TokenScale]:
        async with TurnClient(url, api_key=ctx.options.api_key) as client:
            await client.discover_model()
            await client.reply(chat("Say hello."), 4)  # untimed warm-up
            scale = scale or await client.token_scale()
            before = await client.cache_counters()
            result = await play(client, ctx, scale, bar, twins)
            result["cache"] = counter_deltas(before, await client.cache_counters())
            return result, scale

    def markdown(self, result: Result) -> str:
        head = [
            "variant", "serve flags", "cold 1st turn TTFT p50 ms", "returning TTFT p50 ms",
            "returning p95 ms", "returning cached", "returning ÷ cache off",
            "cold twin alone TTFT p50 ms", "returning ÷ twin alone", "evictions", "restores",
            "errors",
        ]  # fmt: skip
        rows = []
        for v in result["variants"]:
            cached = v["returning_cached_fraction_p50"]
            rows.append(
                [
                    v["variant"],
                    "—" if v["flags"] is None else " ".join(["--parallel 4", *v["flags"]]),
                    ms(v["first_ttft_p50_s"]),
                    ms(v["returning_ttft_p50_s"]),
                    ms(v["returning_ttft_p95_s"]),
                    "—" if cached is None else f"{cached:.0%}",
                    fmt(v.get("returning_over_uncached")),
                    ms(v["cold_twin_ttft_p50_s"]),
                    fmt(v["returning_over_cold"]),
                    fmt(v["cache"]["evictions"]),
                    fmt(v["cache"]["restores"]),
                    len(v["errors"]),
                ]
            )
        n, turns = result["conversations"], result["turns"]
        notes = "; ".join(f"{v['variant']}: {v['what']}" for v in result["variants"])
        return (
            f"{n} conversations, each a distinct document of about {result['doc_tokens']} tokens "
            f"and {turns} turns (the first cold, then {turns - 1} returning), visited "
            f"round-robin {PARALLEL} at a time, so every conversation leaves the running set "
            f"between its turns; each turn resends the whole conversation. Streamed, greedy, "
            f"max_tokens {result['max_tokens']}. The target compares each returning turn's TTFT "
            "with the same turns on a server started with `--no-prefix-cache` (the `cache off` "
            "variant): the same prompts, lengths and traffic, every turn prefilled cold. A "
            "stricter figure is shown beside it: a cold twin is a returning turn's prompt with "
            "another conversation id in its first tokens (the same length, nothing to reuse), "
            "sent after the rounds, one at a time, to an otherwise idle server — its best case, "
            "while returning turns share the server with 3 others. "
            "Evictions and restores: the server's KV counters over the run (warmlm's /metrics). "
            f"Variants: {notes}.\n\n" + table(head, rows)
        )

    def targets(self, results: Results) -> list[Target]:
        result = ok(results, self.name)
        variants: list[Result] = (
            result["variants"] if result else [{"variant": v.key} for v in VARIANTS]
        )
        return [target(v) for v in variants if v["variant"] != BASELINE]


def target(v: Result) -> Target:
    """Against the cache-off run of the same turns; against the idle twins when there is none
    (a server measured with --url)."""
    if v["variant"] == URL_VARIANT.key:
        return Target(
            "returning ÷ cold TTFT, url",
            v.get("returning_over_cold"),
            RETURNING_TO_COLD_GOAL,
            at_most=True,
            note="medians; cold = same-length twin prompts, sent alone",
        )
    return Target(
        f"returning ÷ cold TTFT, {v['variant']}",
        v.get("returning_over_uncached"),
        RETURNING_TO_COLD_GOAL,
        at_most=True,
        note="medians; cold = the same turns with --no-prefix-cache",
    )


SCENARIO = Sessions()
