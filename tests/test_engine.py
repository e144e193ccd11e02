from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeRunner
from warmlm.config import EngineConfig
from warmlm.engine.engine import Engine, QueueFullError
from warmlm.engine.request import RequestError, SamplingParams, StreamEvent


def make_engine(**kw: Any) -> tuple[Engine, FakeRunner]:
    runner = FakeRunner(**{k: kw.pop(k) for k in list(kw) if k in ("script", "n_ctx", "n_batch")})
    cfg = EngineConfig(model_path=Path("fake.gguf"), **kw)
    return Engine(runner, cfg), runner  # type: ignore[arg-type]


def greedy(n: int = 8, **kw: Any) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0.0, **kw)


def test_generate_until_eos() -> None:
    engine, runner = make_engine(script=[1, 2, 3])
    out = engine.generate([5, 6, 7], greedy())
    assert out.text == "abc" and out.finish_reason == "stop" and out.completion_tokens == 3
    assert runner.removed and engine.num_running == 0


def test_max_tokens_gives_length() -> None:
    engine, _ = make_engine()
    out = engine.generate([1], greedy(4))
    assert out.text == "abcd" and out.finish_reason == "length"


def test_stop_string_spanning_tokens_is_cut() -> None:
    engine, _ = make_engine()
    out = engine.generate([1], greedy(8, stop=("cde",)))
    assert out.text == "ab" and out.finish_reason == "stop"


def test_long_prompt_is_prefilled_in_chunks_while_others_decode() -> None:
    engine, runner = make_engine(prefill_chunk=16, max_batch_tokens=64, script=list(range(1, 30)))
    events: list[StreamEvent] = []
    a = engine.new_request([1, 2], greedy(20), events.append)
    engine.add_request(a)
    engine.step()  # a prefilled, first token sampled
    b = engine.new_request(list(range(1, 101)), greedy(2), events.append)
    engine.add_request(b)
    for _ in range(3):
        engine.step()
    sizes = [len(batch) for batch in runner.batches[1:]]
    assert sizes == [9, 9, 9], "one decode token for a plus an 8-token chunk of b (unmeasured)"
    assert all(any(t.seq_id == a.seq_id for t in batch) for batch in runner.batches[1:])


def test_requests_join_and_leave_between_steps() -> None:
    engine, runner = make_engine(parallel=2, script=[1, 2, 3])
    done: list[str] = []

    def sink(ev: StreamEvent) -> None:
        if ev.finished:
            done.append(ev.request_id)

    reqs = [engine.new_request([1, 2], greedy(), sink) for _ in range(3)]
    for r in reqs:
        engine.add_request(r)
    engine.step()
    assert engine.num_running == 2 and engine.num_waiting == 1
    while len(done) < 3:
        engine.step()
    assert done[:2] == [reqs[0].request_id, reqs[1].request_id]
    assert all(len({t.seq_id for t in batch}) <= 2 for batch in runner.batches)


def test_abort_frees_the_sequence_at_next_step() -> None:
    engine, runner = make_engine(script=list(range(1, 30)))
    events: list[StreamEvent] = []
    req = engine.new_request([1, 2, 3], greedy(20), events.append)
    engine.add_request(req)
    engine.step()
    engine.abort(req.request_id)
    engine.step()
    assert engine.num_running == 0 and req.seq_id in runner.removed
    assert events[-1].finish_reason == "abort"
    assert runner.samplers[0].closed


def test_queue_limit_raises_queue_full() -> None:
    engine, _ = make_engine(max_queue=1)
    engine.add_request(engine.new_request([1], greedy(), lambda ev: None))
    with pytest.raises(QueueFullError):
        engine.add_request(engine.new_request([1], greedy(), lambda ev: None))


def test_prompt_plus_max_tokens_over_context_is_rejected_before_work() -> None:
    engine, runner = make_engine(n_ctx=300)
    with pytest.raises(RequestError, match="exceeds the context"):
        engine.new_request(list(range(1, 200)), greedy(200), lambda ev: None)
    assert not runner.batches


def test_kv_reservation_holds_back_admission() -> None:
    engine, _ = make_engine(n_ctx=300, parallel=4)
    first = engine.new_request([1] * 10, greedy(200), lambda ev: None)
    second = engine.new_request([1] * 10, greedy(200), lambda ev: None)
    engine.add_request(first)
    engine.add_request(second)
    engine.step()
    assert engine.num_running == 1 and engine.num_waiting == 1


def test_queue_timeout_reports_error() -> None:
    engine, _ = make_engine(parallel=1, queue_timeout=0.001, script=list(range(1, 30)))
    events: list[StreamEvent] = []
    engine.add_request(engine.new_request([1], greedy(20), lambda ev: None))
    late = engine.new_request([1], greedy(), events.append)
    engine.add_request(late)
    engine.step()
    late.arrival -= 1.0
    engine.step()
    assert events and events[-1].error == "queue_timeout"


def test_engine_thread_failure_reports_to_requests() -> None:
    engine, runner = make_engine()
    failures: list[str] = []
    engine.on_failure = failures.append

    def boom(tokens: Any) -> None:
        raise RuntimeError("decode exploded")

    runner.decode = boom  # type: ignore[method-assign]
    engine.start()
    events: list[StreamEvent] = []
    with pytest.raises(Exception, match="decode exploded"):
        engine.generate([1], greedy())
    engine.shutdown()
    assert failures and "decode exploded" in failures[0]
    del events


class CountingTask:
    """Needs three engine iterations; records that generation kept stepping meanwhile."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail
        self.closed = False

    def advance(self, runner: Any, kv: Any) -> bool:
        self.calls += 1
        if self.fail:
            raise ValueError("bad labels")
        return self.calls == 3

    def result(self) -> int:
        return self.calls

    def close(self, runner: Any, kv: Any) -> None:
        self.closed = True


def test_tasks_interleave_with_generation() -> None:
    engine, runner = make_engine(script=list(range(1, 30)))
    engine.add_request(engine.new_request([1, 2], greedy(20), lambda ev: None))
    task = CountingTask()
    assert engine.run_task(task) == 3 and task.closed
    assert len(runner.batches) >= 3, "generation steps ran between the task's pieces"


def test_failing_task_raises_to_its_caller_only() -> None:
    engine, _ = make_engine()
    task = CountingTask(fail=True)
    with pytest.raises(ValueError, match="bad labels"):
        engine.run_task(task)
    assert task.closed
    assert engine.generate([1], greedy(2)).completion_tokens == 2
