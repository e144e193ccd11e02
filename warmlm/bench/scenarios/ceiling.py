"""`ceiling`: what llama.cpp itself decodes and prefills here, the yardstick of the targets."""

from __future__ import annotations

from warmlm.bench.ceiling import CeilingPlan, CeilingProbe, measure, steps_of
from warmlm.bench.context import BenchContext
from warmlm.bench.markdown import fmt, ms, table
from warmlm.bench.scenarios.base import Needs, Result, Results, Scenario, ok


def ceiling_tps(results: Results, batch: int) -> float | None:
    """The B=`batch` decode ceiling of this run, if measured."""
    result = ok(results, "ceiling")
    if result is None:
        return None
    for row in result["decode"]:
        if row["batch"] == batch:
            return float(row["tps"]) if row["tps"] is not None else None
    return None


class Ceiling(Scenario):
    name = "ceiling"
    title = "Ceiling: raw llama_decode"
    order = 10
    needs = Needs.NOTHING

    async def run(self, ctx: BenchContext) -> Result:
        o = ctx.options
        plan = CeilingPlan(o.batches, o.tokens, o.prompt_tokens, o.prefill, o.repeats)
        path = ctx.model_path()
        n_ctx = plan.n_ctx(o.ctx)
        probe = CeilingProbe(path, o.threads, n_ctx, plan)
        try:
            with ctx.progress(steps_of(plan), "ceiling") as bar:
                figures = measure(probe, lambda: bar.update())
        finally:
            probe.close()
        return {
            "model_file": str(path),
            "threads": o.threads,
            "n_ctx": n_ctx,
            "n_batch": plan.n_batch,
            "prompt_tokens": plan.prompt_tokens,
            "decode_steps": plan.tokens,
            "repeats": plan.repeats,
            **figures,
        }

    def markdown(self, result: Result) -> str:
        decode = table(
            ["B (sequences)", "tokens/s", "tokens/s per sequence"],
            [
                [r["batch"], fmt(r["tps"]), fmt(r["tps"] / r["batch"] if r["tps"] else None)]
                for r in result["decode"]
            ],
        )
        prefill = table(
            ["prompt tokens", "prefill ms", "tokens/s"],
            [[r["tokens"], ms(r["seconds"]), fmt(r["tps"])] for r in result["prefill"]],
        )
        return (
            f"Decode: {result['decode_steps']} steps of one token per sequence after a "
            f"{result['prompt_tokens']}-token prefill of each, logits on, no sampling; "
            f"{result['threads']} threads, unified KV of {result['n_ctx']} tokens; "
            f"median of {result['repeats']}.\n\n{decode}\n\n"
            f"Prefill of one sequence in batches of {result['n_batch']} tokens:\n\n{prefill}"
        )


SCENARIO = Ceiling()
