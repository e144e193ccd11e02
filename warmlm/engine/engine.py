"""The engine: `add_request`, `step`, and `stream`/`generate`, driven by its own thread."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from warmlm.config import EngineConfig
from warmlm.engine.detokenizer import Detokenizer
from warmlm.engine.healing import Healer
from warmlm.engine.kvcache import KVCache
from warmlm.engine.kvstore import KVStore
from warmlm.engine.observer import EngineObserver
from warmlm.engine.opener import Openers
from warmlm.engine.request import Request, RequestError, SamplingParams, Status, StreamEvent
from warmlm.engine.runner import BatchToken, ModelRunner
from warmlm.engine.scheduler import Scheduler, StepPlan
from warmlm.engine.task import EngineTask, TaskHandle

log = logging.getLogger("warmlm.engine")


class QueueFullError(RuntimeError):
    """The waiting queue is at `max_queue`; the client should retry later."""


class EngineDeadError(RuntimeError):
    """The engine thread has failed; no request can be served."""


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


class Engine:
    """Continuous-batching generation over one llama.cpp context.

    Thread model: `add_request` and `abort` may be called from any thread; they post to an
    inbox that the engine thread drains at the start of each `step`. With nothing to step,
    the thread does idle work (`idle`), which new work interrupts.
    """

    def __init__(
        self,
        runner: ModelRunner,
        config: EngineConfig,
        observer: EngineObserver | None = None,
        store: KVStore | None = None,
    ) -> None:
        self.runner = runner
        self.config = config
        self.observer = observer or EngineObserver()
        n_slots = min(runner.n_seq_max, config.first_score_seq)  # ids above: label scoring
        self.kv = KVCache(runner, runner.n_ctx, n_slots, store, self.observer)
        if hasattr(runner, "prompt_piece") and hasattr(runner, "tokenize_bytes"):
            self.kv.healer = Healer(runner.prompt_piece, runner.tokenize_bytes)
        self.scheduler = Scheduler(
            self.kv,
            self.observer,
            config.parallel,
            min(config.max_batch_tokens, runner.n_batch),
            config.prefill_chunk,
            config.queue_timeout,
            config.fairness,
        )
        self.openers = Openers(self.kv)
        self._idling = False  # an interruptible idle decode runs (guarded by _lock)
        self._inbox: list[Request] = []
        self._aborts: list[str] = []
        self._tasks: list[TaskHandle] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.failure: str | None = None
        self.on_failure: Callable[[str], None] | None = None
        self.steps = 0
        self.logits_probe: Callable[[Request, int], None] | None = None  # sees logits (tests)

    # -- verbs ----------------------------------------------------------------------------
    def new_request(
        self,
        prompt_tokens: list[int],
        params: SamplingParams,
        sink: Callable[[StreamEvent], None],
        next_turn: tuple[int, ...] = (),
    ) -> Request:
        """A request; `next_turn`: the chat template's opener of the turn after its reply
        (engine/opener.py), empty for prompts that are not chats."""
        limit = self.runner.n_ctx
        if len(prompt_tokens) + params.max_tokens > limit:
            raise RequestError(
                f"prompt ({len(prompt_tokens)} tokens) plus max_tokens ({params.max_tokens}) "
                f"exceeds the context of {limit} tokens"
            )
        if len(prompt_tokens) + params.max_tokens + len(next_turn) > limit:
            next_turn = ()  # no room to keep for it
        detokenizer = Detokenizer(self.runner.piece)
        return Request(prompt_tokens, params, sink, detokenizer, next_turn=next_turn)

    def add_request(self, req: Request) -> None:
        with self._wake:
            if self.failure is not None:
                raise EngineDeadError(self.failure)
            if len(self.scheduler.waiting) + len(self._inbox) >= self.config.max_queue:
                raise QueueFullError(f"the queue is full ({self.config.max_queue} waiting)")
            self._inbox.append(req)
            self._notify()

    def abort(self, request_id: str) -> None:
        with self._wake:
            self._aborts.append(request_id)
            self._notify()

    def step(self) -> int:
        """Run one decode step over every scheduled request; returns tokens decoded."""
        self._drain_inbox()
        plan = self.scheduler.schedule()
        for req in plan.expired:
            self._fail(req, "queue_timeout")
        if not plan.n_tokens:
            return 0
        batch, rows = self._build_batch(plan)
        t0 = time.monotonic()
        self.runner.decode(batch)
        self.steps += 1
        n_prefill = sum(n for _, n in plan.prefill)
        seconds = time.monotonic() - t0
        self.scheduler.budget.record(seconds, len(plan.decode), n_prefill)
        self.observer.on_step(seconds, len(batch), len(plan.decode), n_prefill)
        for req, index in rows:
            if self.logits_probe is not None:
                self.logits_probe(req, index)
            self._on_token(req, self.runner.sample(self._sampler(req), index))
        return len(batch)

    def generate(
        self, prompt_tokens: list[int], params: SamplingParams, next_turn: tuple[int, ...] = ()
    ) -> Completion:
        """Blocking generation; steps the engine itself when no engine thread runs."""
        events: list[StreamEvent] = []
        done = threading.Event()

        def sink(ev: StreamEvent) -> None:
            events.append(ev)
            if ev.finished:
                done.set()

        req = self.new_request(prompt_tokens, params, sink, next_turn)
        self.add_request(req)
        while not done.is_set():
            if self._thread is None:
                self.step()
            else:
                done.wait(0.1)
                if self.failure is not None and not done.is_set():
                    raise EngineDeadError(self.failure)
        return _completion(req, events)

    def submit(
        self, prompt_tokens: list[int], params: SamplingParams, next_turn: tuple[int, ...] = ()
    ) -> EventStream:
        """Queue a request from the event loop; errors (bad input, full queue) raise here."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[StreamEvent] = asyncio.Queue()

        def sink(ev: StreamEvent) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, ev)

        req = self.new_request(prompt_tokens, params, sink, next_turn)
        self.add_request(req)
        return EventStream(self, req.request_id, queue)

    # -- thread ---------------------------------------------------------------------------
    def start(self) -> None:
        assert self._thread is None, "engine already started"
        self._thread = threading.Thread(target=self._loop, name="warmlm-engine", daemon=True)
        self._thread.start()

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._wake:
            self._stopping = True
            self._notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting) + len(self._inbox)

    def idle(self) -> bool:
        """Idle work: decode the newest finished reply's next-turn opener (engine/opener.py),
        interrupted by any new work. False when there is nothing to do."""
        opener = self.openers.next()
        if opener is None:
            return False
        with self._lock:
            if self._has_work():
                return True  # the opener is dropped: new work goes first
            self._idling = True
            self.runner.clear_interrupt()
        try:
            done = self.runner.decode_interruptible(opener.batch())
        finally:
            with self._lock:
                self._idling = False
        if done:
            self.openers.done(opener)
            self.observer.on_cache("opener", len(opener.tokens))
        else:
            self.observer.on_cache("opener_interrupted")
        return True

    def _notify(self) -> None:
        """Wake the engine thread (the caller holds _lock), interrupting its idle work."""
        self._wake.notify()
        if self._idling:
            self.runner.interrupt()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self._has_work() and not self.openers:
                    self._wake.wait()
                if self._stopping:
                    return
                busy = self._has_work()
            try:
                if busy:
                    self.step()
                    self._advance_task()
                else:
                    self.idle()
            except Exception as exc:  # the engine must report, never die silently
                self._die(f"{type(exc).__name__}: {exc}")
                return

    def _has_work(self) -> bool:
        return bool(
            self._inbox
            or self._aborts
            or self._tasks
            or self.scheduler.running
            or self.scheduler.waiting
        )

    def submit_task(self, task: EngineTask) -> TaskHandle:
        """Queue a task for the engine thread (from the event loop or any thread)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        handle = TaskHandle(task, loop)
        with self._wake:
            if self.failure is not None:
                raise EngineDeadError(self.failure)
            self._tasks.append(handle)
            self._notify()
        return handle

    def run_task(self, task: EngineTask) -> object:
        """Blocking: run a task to completion (stepping the engine when no thread runs)."""
        handle = self.submit_task(task)
        while self._thread is None and not handle._done.is_set():
            self.step()
            self._advance_task()
        return handle.wait()

    def _advance_task(self) -> None:
        """One piece of the oldest task's work; a failing task fails alone."""
        with self._lock:
            handle = self._tasks[0] if self._tasks else None
        if handle is None:
            return
        try:
            done = handle.cancelled or handle.task.advance(self.runner, self.kv)
            error = None
        except Exception as exc:  # user-facing task errors go back to the caller
            done, error = True, exc
        if done:
            with self._lock:
                self._tasks.remove(handle)
            handle.task.close(self.runner, self.kv)
            handle.finish(None if error else handle.task.result(), error)

    def _die(self, reason: str) -> None:
        log.error("engine failed: %s", reason)
        with self._wake:
            self.failure = reason
            pending = [*self._inbox, *self.scheduler.waiting, *self.scheduler.running]
            self._inbox.clear()
            tasks, self._tasks = self._tasks, []
        for handle in tasks:
            handle.finish(error=EngineDeadError(reason))
        for req in pending:
            req.sink(StreamEvent(req.request_id, "", (), None, req.usage(), error=reason))
        if self.on_failure is not None:
            self.on_failure(reason)

    # -- internals ------------------------------------------------------------------------
    def _drain_inbox(self) -> None:
        with self._lock:
            adds, self._inbox = self._inbox, []
            aborts, self._aborts = self._aborts, []
        for req in adds:
            self.scheduler.add(req)
        for request_id in aborts:
            found = self.scheduler.find(request_id)
            if found is not None:
                self._finish(found, "abort", "")

    def _build_batch(self, plan: StepPlan) -> tuple[list[BatchToken], list[tuple[Request, int]]]:
        batch: list[BatchToken] = []
        rows: list[tuple[Request, int]] = []
        for req in plan.decode:
            assert req.seq_id is not None
            rows.append((req, len(batch)))
            batch.append(BatchToken(req.output_tokens[-1], req.n_past, req.seq_id, True))
            req.n_past += 1
        for req, n in plan.prefill:
            assert req.seq_id is not None
            start = req.n_past
            for i, tok in enumerate(req.prompt_tokens[start : start + n]):
                last = start + i == len(req.prompt_tokens) - 1
                if last:
                    rows.append((req, len(batch)))
                batch.append(BatchToken(tok, start + i, req.seq_id, last))
            req.n_past += n
        return batch, rows

    def _sampler(self, req: Request) -> Any:
        if req.sampler is None:
            req.sampler = self.runner.make_sampler(req.params)
        return req.sampler

    def _on_token(self, req: Request, token: int) -> None:
        now = time.monotonic()
        if req.first_token_at is None:
            req.first_token_at = now
            req.status = Status.DECODE
            admitted = req.admitted_at or req.arrival
            self.observer.on_first_token(req, now - req.arrival, now - admitted)
        else:
            self.observer.on_token(req, now - req.last_token_at)
        req.last_token_at = now
        if self.runner.is_eog(token) and not req.params.ignore_eos:
            self._finish(req, "stop", req.stops.feed(req.detokenizer.flush()))
            return
        req.output_tokens.append(token)
        text = req.stops.feed(req.detokenizer.feed(token))
        if req.stops.stopped:
            self._finish(req, "stop", text, (token,))
        elif len(req.output_tokens) >= req.params.max_tokens:
            flushed = req.stops.feed(req.detokenizer.flush())
            self._finish(req, "stop" if req.stops.stopped else "length", text + flushed, (token,))
        else:
            req.sink(StreamEvent(req.request_id, text, (token,), None, req.usage()))

    def _finish(self, req: Request, reason: str, text: str, tokens: tuple[int, ...] = ()) -> None:
        if not req.stops.stopped:
            text += req.stops.flush()
        self._release(req)
        self.openers.offer(req, reason)
        req.finish_reason = reason
        self.observer.on_finish(req, reason, time.monotonic() - req.arrival)
        req.sink(StreamEvent(req.request_id, text, tokens, reason, req.usage()))

    def _fail(self, req: Request, error: str) -> None:
        self._release(req)
        self.observer.on_finish(req, error, time.monotonic() - req.arrival)
        req.sink(StreamEvent(req.request_id, "", (), None, req.usage(), error=error))

    def _release(self, req: Request) -> None:
        self.scheduler.remove(req)
        req.status = Status.FINISHED
        if req.sampler is not None:
            req.sampler.close()
            req.sampler = None


class EventStream:
    """The async events of one submitted request; `close` aborts it if still running."""

    def __init__(self, engine: Engine, request_id: str, queue: asyncio.Queue[StreamEvent]) -> None:
        self.engine = engine
        self.request_id = request_id
        self._queue = queue
        self.finished = False

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if self.finished:
            raise StopAsyncIteration
        ev = await self._queue.get()
        self.finished = ev.finished
        return ev

    def close(self) -> None:
        if not self.finished:
            self.finished = True
            self.engine.abort(self.request_id)


def _completion(req: Request, events: list[StreamEvent]) -> Completion:
    err = next((ev.error for ev in events if ev.error), None)
    if err is not None:
        raise EngineDeadError(err) if err != "queue_timeout" else TimeoutError(err)
    usage = req.usage()
    return Completion(
        text="".join(ev.text for ev in events),
        token_ids=list(req.output_tokens),
        finish_reason=req.finish_reason or "stop",
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
    )
