"""The scheduler's step plans: one token per decoding request, prompt chunks under the fairness
budget, short prompt remainders finished in one step, FIFO admission and queue expiry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.fakes import FakeRunner
from warmlm.config import EngineConfig
from warmlm.engine.engine import Engine
from warmlm.engine.request import Request, SamplingParams
from warmlm.engine.scheduler import SHORT_PROMPT, Scheduler


def make(**kw: Any) -> tuple[Engine, Scheduler]:
    cfg = EngineConfig(model_path=Path("fake.gguf"), **kw)
    engine = Engine(FakeRunner(script=list(range(1, 60))), cfg)  # type: ignore[arg-type]
    return engine, engine.scheduler


def add(engine: Engine, n_prompt: int, max_tokens: int = 40) -> Request:
    """A request whose prompt shares no prefix with earlier ones (no KV reuse)."""
    first = 1000 * (len(engine.scheduler.running) + len(engine.scheduler.waiting) + 1)
    first += 100_000 * len(engine._inbox)
    prompt = list(range(first, first + n_prompt))
    req = engine.new_request(prompt, SamplingParams(max_tokens=max_tokens), lambda ev: None)
    engine.add_request(req)
    return req


def decoding(engine: Engine, sched: Scheduler, n: int) -> list[Request]:
    """n requests past their prompt, decoding, with a learned decode step time."""
    reqs = [add(engine, 2) for _ in range(n)]
    engine.step()
    sched.budget.decode_s, sched.budget.per_token_s = 0.05, 0.005  # fair chunk: 12 tokens
    assert sched.budget.chunk() == 12
    return reqs


def test_decode_only_when_nothing_prefills() -> None:
    engine, sched = make(parallel=4)
    reqs = decoding(engine, sched, 3)
    plan = sched.schedule()
    assert plan.decode == reqs and plan.prefill == [] and plan.n_tokens == 3


def test_long_prompt_gets_the_fair_chunk_while_others_decode() -> None:
    engine, sched = make(parallel=4)
    decoding(engine, sched, 2)
    long = add(engine, 300)
    engine._drain_inbox()
    plan = sched.schedule()
    assert plan.prefill == [(long, 12)] and plan.n_tokens == 14


def test_idle_engine_prefills_up_to_the_batch() -> None:
    engine, sched = make(parallel=4, max_batch_tokens=64, prefill_chunk=32)
    long = add(engine, 300)
    engine._drain_inbox()
    assert sched.schedule().prefill == [(long, 64)]


def test_short_remainder_finishes_in_one_step_beyond_the_budget() -> None:
    engine, sched = make(parallel=4)
    decoding(engine, sched, 2)
    first, second = add(engine, 20), add(engine, 20)
    engine._drain_inbox()
    plan = sched.schedule()
    # the first returning turn is finished whole, beyond the fair chunk of 12; the second
    # would overrun the short allowance and the fair chunk is spent: it waits a step
    assert plan.prefill == [(first, 20)]
    engine.step()
    assert sched.schedule().prefill == [(second, 20)]


def test_long_prompt_tail_counts_as_short() -> None:
    engine, sched = make(parallel=4)
    decoding(engine, sched, 1)
    long = add(engine, 300)
    engine._drain_inbox()
    assert sched.schedule().prefill == [(long, 12)]  # admitted; the fair chunk
    long.n_past = 300 - SHORT_PROMPT
    assert sched.schedule().prefill == [(long, SHORT_PROMPT)]


def test_admission_is_fifo_under_parallel() -> None:
    engine, sched = make(parallel=2)
    reqs = [add(engine, 4) for _ in range(3)]
    engine._drain_inbox()
    sched.schedule()
    assert sched.running == reqs[:2] and list(sched.waiting) == reqs[2:]


def test_requests_waiting_past_the_queue_timeout_expire() -> None:
    engine, sched = make(parallel=1, queue_timeout=5)
    running, queued = add(engine, 4), add(engine, 4)
    engine._drain_inbox()
    sched.schedule()
    plan = sched.schedule(now=queued.arrival + 6)
    assert plan.expired == [queued] and running in sched.running and not sched.waiting
