"""Raw decode probes around a served measurement, so that a ratio compares the same minute.

This VM's speed drifts by 10-20% within a minute (the raw B=1 decode went from 23.6 to 33.6
tok/s in one), so a served decode speed is divided by raw `llama_decode` probes of the same
batch size run just before and just after it, not by the ceiling scenario's figure measured
minutes earlier.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from warmlm.bench.ceiling import CeilingPlan, CeilingProbe
from warmlm.bench.context import BenchContext
from warmlm.bench.stats import mean, ratio
from warmlm.bench.targets import Target

SETTLE_S = 0.2  # after a request, before a probe: the server's threads stop spinning


class Bracket:
    """A ceiling probe (`--tokens` decode steps after `--prompt-tokens`) for B in `batches`."""

    def __init__(self, ctx: BenchContext, batches: Sequence[int]) -> None:
        o = ctx.options
        plan = CeilingPlan(tuple(batches), o.tokens, o.prompt_tokens, (), 1)
        self.probe = CeilingProbe(ctx.model_path(), o.threads, plan.n_ctx(0), plan)
        self.probe.warm_up()

    async def tps(self, batch: int) -> float | None:
        """Raw tokens/s decoding `batch` sequences at once, once the server is quiet; None
        for a batch size the bracket was not opened for."""
        if batch not in self.probe.plan.batches:
            return None
        await asyncio.sleep(SETTLE_S)
        return self.probe.decode_tps(batch)

    def close(self) -> None:
        self.probe.close()


@contextmanager
def open_bracket(ctx: BenchContext, batches: Sequence[int]) -> Iterator[Bracket | None]:
    """A bracket beside a warmlm this run started; None behind `--url`, which may serve
    another model than `--model`, and when there is no batch size to probe."""
    if ctx.options.url or not batches:
        yield None
        return
    bracket = Bracket(ctx, batches)
    try:
        yield bracket
    finally:
        bracket.close()


async def probe_tps(bracket: Bracket | None, batch: int) -> float | None:
    return None if bracket is None else await bracket.tps(batch)


def around(before: float | None, after: float | None) -> float | None:
    """The raw speed of a measurement's time: the mean of the probes on either side."""
    return mean([t for t in (before, after) if t is not None])


def decode_target(
    name: str,
    goal: float,
    what: str,
    vs_raw: float | None,
    served: float | None,
    ceiling: float | None,
) -> Target:
    """A served decode speed ÷ the probes around it when it has them, else ÷ the ceiling
    scenario's figure (`ceiling`, measured earlier in the run)."""
    if vs_raw is not None:
        return Target(name, vs_raw, goal, note=f"{what} ÷ raw probes just before and after")
    return Target(name, ratio(served, ceiling), goal, note=f"{what} ÷ the ceiling scenario's")
