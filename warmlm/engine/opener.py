"""Next-turn openers: the tokens a finished chat reply's next turn must start with, prefilled
while the engine is idle.

When an assistant reply ends, the conversation's next prompt is known up to the user's new
words: the reply's last sampled token (unless it was the end-of-turn token), then what the chat
template writes between a reply and the next user message (`<|im_end|>\\n<|im_start|>user\\n`
for ChatML). The engine decodes those tokens into the finished sequence's cached KV while it
has nothing else to do, so a user who returns after reading the answer has about a quarter
fewer tokens to wait for. The decode is interruptible: any new work stops it within a graph
node (the KV rows it wrote are removed again), so it never delays a request.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from warmlm.engine.kvcache import KVCache, Slot
from warmlm.engine.request import Request
from warmlm.engine.runner import BatchToken

MAX_PENDING = 8  # openers waiting for idle time; older ones are dropped (their users left)
MAX_TOKENS = 32  # a template's opener is a few tokens; longer ones are not worth a guess


@dataclass(frozen=True)
class Opener:
    slot: Slot
    base: np.ndarray  # the slot's tokens when the reply ended: the opener follows exactly these
    tokens: tuple[int, ...]

    def valid(self) -> bool:
        """The slot still holds the finished reply, untouched (not adopted, cut or evicted:
        each of those replaces `slot.tokens`)."""
        return self.slot.owner is None and self.slot.tokens is self.base

    def batch(self) -> list[BatchToken]:
        """The opener's tokens after the reply, without logits (nothing is sampled)."""
        start = len(self.base)
        return [
            BatchToken(tok, start + i, self.slot.seq_id, False) for i, tok in enumerate(self.tokens)
        ]


class Openers:
    """Finished replies waiting for idle time, the newest first."""

    def __init__(self, kv: KVCache) -> None:
        self.kv = kv
        self._pending: deque[Opener] = deque(maxlen=MAX_PENDING)

    def __bool__(self) -> bool:
        return bool(self._pending)

    def offer(self, req: Request, reason: str) -> None:
        """After `req` released its slot: queue its opener if the reply ended on its own (a
        stop string cuts the text the client sends back short of the generated tokens)."""
        if not req.next_turn or not self.kv.reuse or req.seq_id is None:
            return
        if reason not in ("stop", "length") or req.stops.stopped:
            return
        slot = self.kv.slots[req.seq_id]
        known = req.prompt_tokens + req.output_tokens
        tail = tuple(known[len(slot.tokens) :])  # the last sampled token, after max_tokens
        if 0 < len(tail) + len(req.next_turn) <= MAX_TOKENS:
            self._pending.append(Opener(slot, slot.tokens, tail + req.next_turn))

    def next(self) -> Opener | None:
        """The newest opener that still applies and fits the free cells (openers never evict
        anything); the others are dropped."""
        while self._pending:
            opener = self._pending.pop()
            if opener.valid() and len(opener.tokens) <= self.kv.cells_free:
                return opener
        return None

    def done(self, opener: Opener) -> None:
        """The opener's tokens are in the slot's KV now."""
        assert opener.valid(), "the slot changed while its opener was decoded"
        tokens = np.asarray(opener.tokens, dtype=np.int32)
        opener.slot.tokens = np.concatenate([opener.base, tokens])
