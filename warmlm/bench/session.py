"""One bench run: the selected scenarios in order, around one shared context."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime

from warmlm.bench.context import BenchContext
from warmlm.bench.machine import machine_info
from warmlm.bench.options import BenchOptions
from warmlm.bench.report import RunRecord
from warmlm.bench.scenarios.base import Needs, Result, Scenario
from warmlm.bench.targets import Target

log = logging.getLogger("warmlm.bench")


async def run_one(ctx: BenchContext, scenario: Scenario) -> Result:
    """Run a scenario; a failure is recorded in its result so the others still run."""
    reason = scenario.skip_reason(ctx)
    if reason is not None:
        log.info("%s: skipped, %s", scenario.name, reason)
        return {"skipped": reason}
    if scenario.needs is not Needs.SERVER:
        ctx.release_server()  # never measure while the shared server could be decoding
    log.info("%s ...", scenario.name)
    t0 = time.perf_counter()
    try:
        result = await scenario.run(ctx)
    except Exception as exc:  # any failure of one scenario is reported, not fatal to the run
        log.exception("%s failed", scenario.name)
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result["elapsed_s"] = time.perf_counter() - t0
    log.info("%s done in %.1fs", scenario.name, result["elapsed_s"])
    return result


async def run_all(ctx: BenchContext, scenarios: Sequence[Scenario]) -> dict[str, Result]:
    results: dict[str, Result] = {}
    try:
        for scenario in scenarios:
            results[scenario.name] = await run_one(ctx, scenario)
    finally:
        ctx.close()
    return results


def execute(options: BenchOptions, scenarios: Sequence[Scenario]) -> RunRecord:
    """Run the scenarios and collect what each one decides about the targets."""
    now = datetime.now().astimezone()
    run_id = now.strftime("%Y%m%d-%H%M%S")
    ctx = BenchContext(options, run_id)
    results = asyncio.run(run_all(ctx, scenarios))
    targets: dict[str, list[Target]] = {
        s.name: s.targets(results)
        for s in scenarios
        if s.name in results and "skipped" not in results[s.name]
    }
    return RunRecord(
        run_id=run_id,
        date=now.strftime("%Y-%m-%d %H:%M %Z"),
        options=options,
        machine=machine_info(),
        results=results,
        targets=targets,
    )
