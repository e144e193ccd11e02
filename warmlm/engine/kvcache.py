"""The unified KV cache: sequence slots, automatic prefix reuse, and LRU eviction to host tiers.

Every llama.cpp sequence id is a slot. A running request owns one; a finished request leaves
its slot *cached*, KV intact, so a later prompt that starts with the same tokens reuses it:
adopting the slot when the new prompt extends all of it (the next turn of a conversation), or
sharing its cells with `llama_memory_seq_cp` when only part matches (a common system prompt).
Cells are a budget: running requests reserve `prompt + max_tokens`, cached slots hold their
tokens, and cached slots are evicted least-recently-used when room is needed — saved to the
`KVStore` (RAM, then disk) and restored on a later hit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from warmlm.engine.healing import Healer
from warmlm.engine.kvstore import KVStore, common_prefix
from warmlm.engine.observer import EngineObserver
from warmlm.engine.request import Request

MIN_SAVE_TOKENS = 16  # shorter sequences are cheaper to re-prefill than to save


class KVOps(Protocol):
    def seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> None: ...
    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None: ...
    def state_get(self, seq_id: int) -> bytes: ...
    def state_set(self, seq_id: int, data: bytes) -> bool: ...


@dataclass
class Slot:
    seq_id: int
    tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    owner: Request | None = None
    last_used: float = 0.0

    def resident(self) -> np.ndarray:
        """The tokens whose KV this sequence holds now."""
        if self.owner is None:
            return self.tokens
        req = self.owner
        known = req.prompt_tokens + req.output_tokens
        return np.asarray(known[: req.n_past], dtype=np.int32)


class KVCache:
    def __init__(
        self,
        ops: KVOps,
        n_cells: int,
        n_slots: int,
        store: KVStore | None = None,
        observer: EngineObserver | None = None,
    ) -> None:
        self.ops = ops
        self.n_cells = n_cells
        self.slots = [Slot(i) for i in range(n_slots)]
        self.store = store
        self.observer = observer or EngineObserver()
        self.reuse = True
        self.held = 0  # cells of sequences outside the slots (label scoring), see hold_cells
        self.stats = {
            "evictions": 0,
            "restores": 0,
            "saved": 0,
            "hits": 0,
            "queries": 0,
            "healed": 0,
        }
        self.healer: Healer | None = None  # set by the engine when the runner can tokenize

    # -- accounting -----------------------------------------------------------------------
    @property
    def cells_reserved(self) -> int:
        """Cells running requests may reach plus cells cached slots hold (shared cells
        are counted once per slot, so this never underestimates)."""
        total = self.held
        for s in self.slots:
            if s.owner is not None:
                total += s.owner.kv_reserve
            else:
                total += len(s.tokens)
        return total

    @property
    def cells_free(self) -> int:
        return self.n_cells - self.cells_reserved

    @property
    def cached_slots(self) -> int:
        return sum(1 for s in self.slots if s.owner is None and len(s.tokens))

    def hold_cells(self, n: int) -> bool:
        """Reserve n cells for sequences outside the slots (label scoring), evicting idle
        cached slots for room; False (nothing held) if there is no room now."""
        if not self._make_room(n, keep=None):
            return False
        self.held += n
        return True

    def drop_cells(self, n: int) -> None:
        """Give back cells taken with `hold_cells`."""
        self.held = max(0, self.held - n)

    # -- admission ------------------------------------------------------------------------
    def admit(self, req: Request) -> bool:
        """Give `req` a sequence with as much of its prompt's KV as can be found; False if
        there is no room yet (the request stays queued)."""
        prompt = np.asarray(req.prompt_tokens, dtype=np.int32)
        limit = len(prompt) - 1  # the last prompt token is always decoded, for its logits
        src, n_res = self._best_resident(prompt, limit) if self.reuse else (None, 0)
        if src is not None and self._heal(req, src.resident(), n_res):
            prompt = np.asarray(req.prompt_tokens, dtype=np.int32)
            limit = len(prompt) - 1
            n_res = min(common_prefix(src.resident(), prompt), limit)
        if self._admit_from(req, prompt, limit, src, n_res):
            return True
        if src is None or src.owner is not None:
            return False
        # No room while keeping the matched sequence whole (it may be all that stands between
        # the request and a free cell): restore a longer match from the host tier in its
        # place, or save it there and take it over, cut to the matched prefix.
        if self.store is not None and min(self.store.best_match(prompt)[1], limit) > n_res:
            return self._admit_from(req, prompt, limit, None, 0)
        return self._take_over(src, req, n_res)

    def _admit_from(
        self, req: Request, prompt: np.ndarray, limit: int, src: Slot | None, n_res: int
    ) -> bool:
        entry, n_host = self.store.best_match(prompt) if self.store and self.reuse else (None, 0)
        n_host = min(n_host, limit)
        if src is not None and src.owner is None and n_res == len(src.tokens) >= n_host:
            if not self._make_room(req.kv_reserve - n_res, keep=src):
                return False
            self._adopt(src, req, n_res)
            return True
        slot = self._free_slot(req.kv_reserve, keep=src)
        if slot is None:
            return False
        if entry is not None and n_host > n_res and self._restore(slot, entry, n_host):
            n = n_host
        elif src is not None and n_res > 0:
            self.ops.seq_cp(src.seq_id, slot.seq_id, 0, n_res)
            n = n_res
        else:
            n = 0
        self._adopt(slot, req, n)
        return True

    def release(self, req: Request) -> None:
        """The request ended: its slot keeps the KV it built, as a cache entry."""
        slot = self.slots[_seq(req)]
        assert slot.owner is req, "releasing a slot the request does not own"
        slot.tokens = slot.resident()
        slot.owner = None
        slot.last_used = time.monotonic()
        if not self.reuse:
            self._clear(slot)

    # -- internals ------------------------------------------------------------------------
    def _heal(self, req: Request, cached: np.ndarray, n_res: int) -> bool:
        """Rewrite the prompt to reuse more of `cached` across a re-tokenized reply (healing.py);
        True if it did."""
        if self.healer is None or n_res >= len(cached):
            return False
        healed = self.healer.heal(req.prompt_tokens, cached)
        if healed is None or len(healed) + req.params.max_tokens > self.n_cells:
            return False
        if common_prefix(cached, np.asarray(healed, dtype=np.int32)) <= n_res:
            return False
        self.stats["healed"] += 1
        self.observer.on_cache("heal")
        req.prompt_tokens = healed
        return True

    def _take_over(self, slot: Slot, req: Request, n: int) -> bool:
        if n < len(slot.tokens):
            if self.store is not None and len(slot.tokens) >= MIN_SAVE_TOKENS:
                self.store.put(slot.tokens.tolist(), self.ops.state_get(slot.seq_id))
                self.stats["saved"] += 1
            self.ops.seq_rm(slot.seq_id, n, -1)
            slot.tokens = slot.tokens[:n]
        if not self._make_room(req.kv_reserve - n, keep=slot):
            return False
        self._adopt(slot, req, n)
        return True

    def _best_resident(self, prompt: np.ndarray, limit: int) -> tuple[Slot | None, int]:
        best, best_len = None, 0
        for slot in self.slots:
            n = min(common_prefix(slot.resident(), prompt), limit)
            if n > best_len or (n == best_len and n and best is not None and best.owner):
                best, best_len = slot, n
        return best, best_len

    def _adopt(self, slot: Slot, req: Request, n: int) -> None:
        self.ops.seq_rm(slot.seq_id, n, -1)
        slot.tokens = slot.tokens[:n]
        slot.owner = req
        req.seq_id = slot.seq_id
        req.n_past = req.cached_tokens = n
        self.stats["queries"] += len(req.prompt_tokens)
        self.stats["hits"] += n
        self.observer.on_cache("query", len(req.prompt_tokens))
        self.observer.on_cache("hit", n)

    def _free_slot(self, need: int, keep: Slot | None) -> Slot | None:
        if not self._make_room(need, keep):
            return None
        empty = [s for s in self.slots if s.owner is None and not len(s.tokens)]
        if empty:
            return empty[0]
        victims = self._victims(keep)
        if not victims:
            return None
        self._evict(victims[0])
        return victims[0]

    def _make_room(self, need: int, keep: Slot | None) -> bool:
        victims = self._victims(keep)
        while self.cells_free < need and victims:
            self._evict(victims.pop(0))
        return self.cells_free >= need

    def _victims(self, keep: Slot | None) -> list[Slot]:
        idle = [s for s in self.slots if s.owner is None and len(s.tokens) and s is not keep]
        return sorted(idle, key=lambda s: s.last_used)

    def _evict(self, slot: Slot) -> None:
        if self.store is not None and len(slot.tokens) >= MIN_SAVE_TOKENS:
            self.store.put(slot.tokens.tolist(), self.ops.state_get(slot.seq_id))
            self.stats["saved"] += 1
        self.stats["evictions"] += 1
        self.observer.on_cache("evict")
        self._clear(slot)

    def _restore(self, slot: Slot, entry: object, n: int) -> bool:
        assert self.store is not None
        data = self.store.load(entry)  # type: ignore[arg-type]
        if data is None or not self.ops.state_set(slot.seq_id, data):
            self.ops.seq_rm(slot.seq_id)
            return False
        slot.tokens = entry.tokens  # type: ignore[attr-defined]
        self.stats["restores"] += 1
        self.observer.on_cache("restore")
        return True

    def _clear(self, slot: Slot) -> None:
        self.ops.seq_rm(slot.seq_id)
        slot.tokens = slot.tokens[:0]

    def save_all(self) -> None:
        """Before shutdown: write every cached sequence to the store (the disk tier)."""
        for slot in self._victims(None):
            if self.store is not None and len(slot.tokens) >= MIN_SAVE_TOKENS:
                self.store.put(slot.tokens.tolist(), self.ops.state_get(slot.seq_id))


def _seq(req: Request) -> int:
    assert req.seq_id is not None
    return req.seq_id
