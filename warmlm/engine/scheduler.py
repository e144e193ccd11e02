"""Continuous batching: which requests join, and which tokens go into the next decode step."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from warmlm.engine.budget import PrefillBudget
from warmlm.engine.kvcache import KVCache
from warmlm.engine.observer import EngineObserver
from warmlm.engine.request import Request, Status

SHORT_PROMPT = 32  # prompt tokens a step may finish beyond the fairness budget


@dataclass
class StepPlan:
    """One step's work: one token for every decoding request, prompt chunks for prefilling ones."""

    decode: list[Request] = field(default_factory=list)
    prefill: list[tuple[Request, int]] = field(default_factory=list)
    expired: list[Request] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return len(self.decode) + sum(n for _, n in self.prefill)

    def __bool__(self) -> bool:
        return bool(self.decode or self.prefill or self.expired)


class Scheduler:
    """FIFO admission under `parallel` running sequences and a KV cell budget.

    Every step carries one token per decoding sequence; the rest of the token budget goes to
    prompt chunks. While sequences are decoding, prompt chunks are sized by `PrefillBudget`
    so running streams keep flowing while a long prompt is admitted; a prompt whose rest fits
    in `SHORT_PROMPT` tokens (a returning turn of a cached conversation) is finished in one
    step, so its first token is not spread over several steps for a few milliseconds of
    fairness.
    """

    def __init__(
        self,
        kv: KVCache,
        observer: EngineObserver,
        parallel: int,
        max_batch_tokens: int,
        prefill_chunk: int,
        queue_timeout: float,
        fairness: float = 2.2,
    ) -> None:
        self.kv = kv
        self.observer = observer
        self.parallel = parallel
        self.max_batch_tokens = max_batch_tokens
        # No floor above one token: where a prompt token deep in a long context costs half a decode
        # step (CPUs without AVX-512), a floor of 8 would let one step take 5x a decode step.
        self.budget = PrefillBudget(fairness, 1, prefill_chunk, start_chunk=8)
        self.queue_timeout = queue_timeout
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []

    def add(self, req: Request) -> None:
        self.waiting.append(req)

    def remove(self, req: Request) -> None:
        """Forget a finished or aborted request; its sequence stays cached in the KV."""
        if req in self.waiting:
            self.waiting.remove(req)
        if req in self.running:
            self.running.remove(req)
            self.kv.release(req)

    def find(self, request_id: str) -> Request | None:
        for req in (*self.running, *self.waiting):
            if req.request_id == request_id:
                return req
        return None

    def schedule(self, now: float | None = None) -> StepPlan:
        plan = StepPlan(expired=self._expire(time.monotonic() if now is None else now))
        self._admit()
        plan.decode = [r for r in self.running if r.status is Status.DECODE]
        room = self.max_batch_tokens - len(plan.decode)
        fair = min(room, self.budget.chunk()) if plan.decode else room
        short = min(room, max(fair, SHORT_PROMPT))
        used = 0
        for req in self.running:
            if req.status is not Status.PREFILL:
                continue
            rem = req.prompt_remaining
            n = rem if rem <= short - used else min(rem, fair - used)
            if n > 0:
                plan.prefill.append((req, n))
                used += n
        return plan

    def _admit(self) -> None:
        while self.waiting and len(self.running) < self.parallel:
            head = self.waiting[0]
            if not self.kv.admit(head):
                break
            self.waiting.popleft()
            head.status = Status.PREFILL
            head.admitted_at = time.monotonic()
            self.running.append(head)
            self.observer.on_admit(head, head.admitted_at - head.arrival)

    def _expire(self, now: float) -> list[Request]:
        expired = [r for r in self.waiting if now - r.arrival > self.queue_timeout]
        for req in expired:
            self.waiting.remove(req)
        return expired
