"""`routing`: conversation-affinity routing vs Ray Serve's default, on one `warmlm serve --ray`.

The `sessions` workload (many conversations, each returning after the others) is played twice on
the same replicas: through the endpoint as it is (affinity routing) and under its `/pow2` prefix,
which the ingress routes with Ray Serve's default policy (power of two choices). Only the route
differs: same replicas, same model, same kind of conversations (new ids, so the two plays share no
prefix). Needs `--url` of a `warmlm serve --ray` endpoint.
"""

from __future__ import annotations

from typing import Any

from tqdm import tqdm

from warmlm.bench.context import BenchContext
from warmlm.bench.markdown import fmt, ms, table
from warmlm.bench.scenarios._conversation import TokenScale, TurnClient
from warmlm.bench.scenarios.base import Needs, Result, Results, Scenario, ok
from warmlm.bench.scenarios.sessions import PARALLEL, cached_fraction, play, twin_count
from warmlm.bench.stats import mean, median, percentile, ratio
from warmlm.bench.targets import Target

AFFINITY_OVER_DEFAULT_GOAL = 0.5
POLICIES = (
    ("pow2", "/pow2", "Ray Serve's default: power of two choices"),
    ("affinity", "", "warmlm's affinity router: the replica holding the conversation"),
)


def returning_figures(played: Result) -> Result:
    """TTFT and cached share of the returning turns (every turn after a conversation's first)."""
    returning = [r for r in played["requests"] if r["round"] > 0]
    ttfts = [r["ttft_s"] for r in returning if r["ttft_s"] is not None]
    fractions = [f for f in map(cached_fraction, returning) if f is not None]
    hits = [f for f in fractions if f >= 0.5]
    return {
        "returning_turns": len(returning),
        "returning_ttft_p50_s": median(ttfts),
        "returning_ttft_mean_s": mean(ttfts),
        "returning_ttft_p95_s": percentile(ttfts, 95),
        "returning_cached_fraction_mean": mean(fractions),
        "returning_on_warm_replica": ratio(len(hits), len(fractions)) if fractions else None,
        "first_ttft_p50_s": played["first_ttft_p50_s"],
        "cold_twin_ttft_p50_s": played["cold_twin_ttft_p50_s"],
        "errors": played["errors"],
    }


class Routing(Scenario):
    name = "routing"
    title = "Conversation affinity on Ray Serve"
    order = 71  # right after sessions
    in_all = False
    needs = Needs.SERVER

    def skip_reason(self, ctx: BenchContext) -> str | None:
        if ctx.options.url is None:
            return "needs --url of a `warmlm serve --ray` endpoint (docs/scaling.md)"
        return None

    async def run(self, ctx: BenchContext) -> Result:
        o = ctx.options
        if o.sessions_turns < 2:
            raise ValueError("routing needs at least 2 turns per conversation")
        base = (await ctx.server_url()).rstrip("/").removesuffix("/v1")
        n, turns = o.sessions_conversations, o.sessions_turns
        steps = n * turns + twin_count(n * (turns - 1))
        out: dict[str, Any] = {
            "conversations": n,
            "turns": turns,
            "doc_tokens": o.sessions_doc_tokens,
            "max_tokens": o.sessions_max_tokens,
            "parallel": PARALLEL,
            "policies": [],
        }
        scale: TokenScale | None = None
        with ctx.progress(steps * len(POLICIES), "routing") as bar:
            for key, prefix, what in POLICIES:
                played, scale = await self._play(ctx, base + prefix, scale, bar)
                out["policies"].append(
                    {"policy": key, "what": what, "url": base + prefix, **returning_figures(played)}
                )
        by = {p["policy"]: p for p in out["policies"]}
        for stat in ("p50", "mean"):
            out[f"affinity_over_default_{stat}"] = ratio(
                by["affinity"][f"returning_ttft_{stat}_s"], by["pow2"][f"returning_ttft_{stat}_s"]
            )
        return out

    @staticmethod
    async def _play(
        ctx: BenchContext, url: str, scale: TokenScale | None, bar: tqdm
    ) -> tuple[Result, TokenScale]:
        async with TurnClient(url, api_key=ctx.options.api_key) as client:
            await client.discover_model()
            await client.reply([{"role": "user", "content": "Say hello."}], 4)  # untimed
            scale = scale or await client.token_scale()
            return await play(client, ctx, scale, bar), scale

    def markdown(self, result: Result) -> str:
        head = [
            "routing", "returning TTFT p50 ms", "mean ms", "p95 ms", "on the warm replica",
            "cached (mean)", "cold 1st turn p50 ms", "cold twin p50 ms", "errors",
        ]  # fmt: skip
        rows = []
        for p in result["policies"]:
            warm, cached = p["returning_on_warm_replica"], p["returning_cached_fraction_mean"]
            rows.append(
                [
                    p["policy"],
                    ms(p["returning_ttft_p50_s"]),
                    ms(p["returning_ttft_mean_s"]),
                    ms(p["returning_ttft_p95_s"]),
                    "—" if warm is None else f"{warm:.0%}",
                    "—" if cached is None else f"{cached:.0%}",
                    ms(p["first_ttft_p50_s"]),
                    ms(p["cold_twin_ttft_p50_s"]),
                    len(p["errors"]),
                ]
            )
        return (
            f"The sessions workload ({result['conversations']} conversations of "
            f"{result['turns']} turns, documents of about {result['doc_tokens']} tokens, "
            f"{PARALLEL} in flight, max_tokens {result['max_tokens']}) played twice on the same "
            "`warmlm serve --ray` replicas: under `/pow2` (Ray Serve's default routing) and "
            "as is (affinity routing). *On the warm replica*: returning turns that found at "
            "least half of their prompt in KV. Affinity ÷ default returning TTFT: "
            f"p50 {fmt(result['affinity_over_default_p50'])}, "
            f"mean {fmt(result['affinity_over_default_mean'])}.\n\n" + table(head, rows)
        )

    def targets(self, results: Results) -> list[Target]:
        result = ok(results, self.name)
        return [
            Target(
                "returning TTFT, affinity ÷ Ray default routing",
                result.get("affinity_over_default_p50") if result else None,
                AFFINITY_OVER_DEFAULT_GOAL,
                at_most=True,
                note="medians of the returning turns, one run; the mean ratio is in the note",
            )
        ]


SCENARIO = Routing()
