"""Next-turn openers: prefilled into a finished reply's cached KV while the engine is idle,
dropped when they no longer apply, and interrupted by new work."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from tests.fakes import FakeRunner
from warmlm.config import EngineConfig
from warmlm.engine.engine import Engine
from warmlm.engine.request import SamplingParams, StreamEvent
from warmlm.engine.runner import BatchToken

OPENER = (20, 21, 22)
PROMPT = [5, 6, 7]


def make_engine(script: list[int], **kw: Any) -> tuple[Engine, FakeRunner]:
    runner = FakeRunner(script=script)
    cfg = EngineConfig(model_path=Path("fake.gguf"), parallel=2, cache_slots=2, **kw)
    return Engine(runner, cfg), runner  # type: ignore[arg-type]


def greedy(n: int = 8, **kw: Any) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0.0, **kw)


def positions(batch: list[BatchToken]) -> list[tuple[int, int, int]]:
    return [(t.token, t.pos, t.seq_id) for t in batch]


def test_a_reply_ended_by_eos_gets_the_opener_after_it() -> None:
    engine, runner = make_engine(script=[1, 2])
    engine.generate(PROMPT, greedy(), next_turn=OPENER)
    assert engine.idle()
    (batch,) = runner.idle_batches
    assert positions(batch) == [(20, 5, 0), (21, 6, 0), (22, 7, 0)]
    assert not any(t.logits for t in batch)
    assert engine.kv.slots[0].tokens.tolist() == [*PROMPT, 1, 2, *OPENER]
    assert not engine.idle(), "one opener per reply"
    nxt = engine.generate([*PROMPT, 1, 2, *OPENER, 9], greedy(1))
    assert nxt.cached_tokens == 8, "the next turn reuses the reply and its opener"


def test_a_reply_cut_by_max_tokens_starts_its_opener_with_the_last_token() -> None:
    engine, runner = make_engine(script=[1, 2, 3, 4])
    engine.generate(PROMPT, greedy(3), next_turn=OPENER)
    assert engine.idle()
    assert [t.token for t in runner.idle_batches[0]] == [3, *OPENER]
    assert runner.idle_batches[0][0].pos == 5


def test_no_opener_without_one_a_stop_string_an_abort_or_the_prefix_cache() -> None:
    engine, runner = make_engine(script=[1, 2, 3])
    engine.generate(PROMPT, greedy())  # not a chat: no opener given
    engine.generate([8, *PROMPT], greedy(8, stop=("b",)), next_turn=OPENER)
    req = engine.new_request([9, 9], greedy(), lambda ev: None, OPENER)
    engine.add_request(req)
    engine.step()
    engine.abort(req.request_id)
    engine.step()
    assert not engine.idle() and not runner.idle_batches
    engine, runner = make_engine(script=[1], prefix_cache=False)
    engine.kv.reuse = False
    engine.generate(PROMPT, greedy(), next_turn=OPENER)
    assert not engine.idle()


def test_an_opener_is_dropped_once_its_slot_is_reused_or_there_is_no_room() -> None:
    engine, runner = make_engine(script=[1])
    engine.generate(PROMPT, greedy(), next_turn=OPENER)
    engine.generate([*PROMPT, 1, 30], greedy(1))  # the conversation went on another way
    assert not engine.idle() and not runner.idle_batches
    engine, runner = make_engine(script=[1], n_ctx=4096)
    engine.generate(PROMPT, greedy(), next_turn=OPENER)
    engine.kv.held = engine.kv.n_cells - engine.kv.cells_reserved - 2  # 2 cells left
    assert not engine.idle(), "openers never evict to make room"


def test_the_newest_reply_is_opened_first() -> None:
    engine, runner = make_engine(script=[1])
    engine.generate(PROMPT, greedy(), next_turn=OPENER)
    engine.generate([9, 9, 9], greedy(), next_turn=OPENER)
    assert engine.idle() and engine.idle() and not engine.idle()
    assert [b[0].seq_id for b in runner.idle_batches] == [1, 0]


def test_new_work_interrupts_the_opener_and_is_served_at_once() -> None:
    engine, runner = make_engine(script=[1, 2])
    engine.generate(PROMPT, greedy(), next_turn=OPENER)
    events: list[StreamEvent] = []
    arrived = engine.new_request([*PROMPT, 1, 2, 20, 40], greedy(1), events.append)
    plain = runner.decode_interruptible

    def arrives_meanwhile(tokens: list[BatchToken]) -> bool:
        engine.add_request(arrived)  # from another thread in a server
        return plain(tokens)

    runner.decode_interruptible = arrives_meanwhile  # type: ignore[method-assign]
    assert engine.idle()
    assert engine.kv.slots[0].tokens.tolist() == [*PROMPT, 1, 2], "the opener left no trace"
    engine.step()
    assert events[-1].finished and arrived.cached_tokens == 5


def test_the_engine_thread_opens_replies_while_idle() -> None:
    engine, runner = make_engine(script=[1, 2])
    engine.start()
    try:
        engine.generate(PROMPT, greedy(), next_turn=OPENER)
        deadline = time.monotonic() + 5
        while not runner.idle_batches and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runner.idle_batches, "the idle engine thread decoded the opener"
        done = threading.Event()

        def sink(ev: StreamEvent) -> None:
            if ev.finished:
                done.set()

        req = engine.new_request([*PROMPT, 1, 2, *OPENER, 9], greedy(1), sink)
        engine.add_request(req)
        assert done.wait(5) and req.cached_tokens == 8
    finally:
        engine.shutdown()


def test_the_room_for_an_opener_is_kept_from_admission_on() -> None:
    engine, runner = make_engine(script=[1, 2, 3, 4])
    engine.kv.held = engine.kv.n_cells - (len(PROMPT) + 3 + len(OPENER))  # a full KV but this
    engine.generate(PROMPT, greedy(3), next_turn=OPENER)  # cut by max_tokens: 1 + 3 to decode
    assert engine.kv.cells_free == 1 + len(OPENER)
    assert engine.idle() and len(runner.idle_batches[0]) == 1 + len(OPENER)
    limit = engine.runner.n_ctx - len(PROMPT) - 1  # prompt + max_tokens one short of the context
    req = engine.new_request(PROMPT, greedy(limit), lambda ev: None, OPENER)
    assert req.next_turn == () and req.kv_reserve == engine.runner.n_ctx - 1
