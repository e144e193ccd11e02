"""Label scoring on the engine thread: exact log-probabilities of continuations, batched.

A `ScoreTask` scores items that share one token prefix (a classification's instruction):

    [prefix] [item tokens] [branch tokens]

The prefix lives in a *scoring sequence* that stays in KV across tasks (a small LRU of prefixes
per engine, in the sequence ids above the KV cache's slots), so a call prefills only its items.
Each item gets a sequence copied from the prefix (`seq_cp` shares the cells, nothing is
recomputed) and its tokens are prefilled, many items to one `llama_decode`. The logits of an
item's last token score every branch's first token; a branch with tokens of its own (a
multi-token label, a yes/no question) continues in a copy of the item's sequence, all branches
of all items in the same batches. Each `advance` makes at most one `llama_decode` of at most
`n_batch` tokens, so running chat streams keep flowing between the pieces.

Cells: prefixes and items in flight hold their cells through `KVCache.hold_cells`, so the
cache's admission of chat requests never over-commits the shared context.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from warmlm.engine.kvcache import KVCache
from warmlm.engine.request import RequestError
from warmlm.engine.runner import BatchToken

MAX_PREFIXES = 4  # instruction prefixes kept resident per engine (least recently used goes)
BUSY_BUDGET = 128  # tokens per decode while chat requests are running (their streams go on)

LAST = -1  # a pick's row: the logits after the item's last token


class ScoreRunner(Protocol):
    n_ctx: int
    n_batch: int
    n_seq_max: int

    def decode(self, tokens: list[BatchToken]) -> None: ...
    def logits(self, index: int) -> np.ndarray: ...
    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None: ...
    def seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> None: ...


class ScoringUnavailable(RequestError):
    """The engine has too few sequence ids for scoring (`score_slots` is 0 or too small)."""


@dataclass(frozen=True)
class Branch:
    """A continuation scored after an item: `tokens` are decoded after the item's tokens (in a
    sequence of their own), `picks` are the log-probabilities read: (row, token) where row
    `LAST` is the item's last token and row r ≥ 0 is the branch's token r."""

    tokens: tuple[int, ...]
    picks: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        for row, _ in self.picks:
            if not LAST <= row < len(self.tokens):
                raise ValueError(f"pick row {row} outside the branch's {len(self.tokens)} tokens")


@dataclass(frozen=True)
class ScoreItem:
    tokens: tuple[int, ...]
    branches: tuple[Branch, ...]

    @property
    def cells(self) -> int:
        """KV cells this item needs beyond the shared prefix."""
        return len(self.tokens) + sum(len(b.tokens) for b in self.branches)


@dataclass
class ScoreResult:
    """`logprobs[item][branch][pick]`: natural-log probabilities, in the order given."""

    logprobs: list[list[list[float]]]
    prefix_tokens: int
    prefix_cached: bool
    decoded_tokens: int
    decode_calls: int


def log_softmax_at(logits: np.ndarray, ids: Sequence[int]) -> list[float]:
    """log softmax(logits)[ids]: one pass of exp over the row (float32, summed in float64)."""
    top = float(logits.max())
    lse = top + float(np.log(np.exp(logits - np.float32(top)).sum(dtype=np.float64)))
    return [float(logits[i]) - lse for i in ids]


# -- the per-engine pool of scoring sequences ---------------------------------------------------
@dataclass(eq=False)
class Prefix:
    tokens: tuple[int, ...]
    seq_id: int
    n_done: int = 0
    pins: int = 0

    @property
    def ready(self) -> bool:
        return self.n_done == len(self.tokens)


class ScoringPool:
    """The scoring sequence ids of one engine: resident prefixes (LRU) and free ids."""

    def __init__(self, first: int, end: int, max_prefixes: int = MAX_PREFIXES) -> None:
        self.first, self.end = first, end
        self.free: list[int] = list(range(first, end))
        self.prefixes: OrderedDict[tuple[int, ...], Prefix] = OrderedDict()
        self.max_prefixes = max(1, min(max_prefixes, (end - first) // 2))

    @property
    def size(self) -> int:
        return self.end - self.first

    def take_id(self) -> int:
        return self.free.pop(0)

    def give_id(self, seq_id: int) -> None:
        self.free.append(seq_id)

    def lookup(self, tokens: tuple[int, ...]) -> Prefix | None:
        entry = self.prefixes.get(tokens)
        if entry is not None:
            self.prefixes.move_to_end(tokens)
        return entry

    def add_prefix(
        self, tokens: tuple[int, ...], runner: ScoreRunner, kv: KVCache
    ) -> Prefix | None:
        """A new (not yet prefilled) prefix entry with its id and cells, evicting idle prefixes
        as needed; None when there is no room now."""
        while len(self.prefixes) >= self.max_prefixes or not self.free:
            if not self.evict_one(runner, kv):
                return None
        while not kv.hold_cells(len(tokens)):
            if not self.evict_one(runner, kv):
                return None
        entry = Prefix(tokens, self.take_id())
        self.prefixes[tokens] = entry
        return entry

    def evict_one(self, runner: ScoreRunner, kv: KVCache) -> bool:
        for entry in self.prefixes.values():  # least recently used first
            if entry.pins == 0:
                self.drop(entry, runner, kv)
                return True
        return False

    def drop(self, entry: Prefix, runner: ScoreRunner, kv: KVCache) -> None:
        del self.prefixes[entry.tokens]
        runner.seq_rm(entry.seq_id)
        kv.drop_cells(len(entry.tokens))
        self.give_id(entry.seq_id)

    @property
    def cells(self) -> int:
        return sum(len(p.tokens) for p in self.prefixes.values())


_POOLS: weakref.WeakKeyDictionary[KVCache, ScoringPool] = weakref.WeakKeyDictionary()


def pool_of(runner: ScoreRunner, kv: KVCache) -> ScoringPool:
    """The scoring pool of an engine: the sequence ids from the KV cache's last slot up."""
    pool = _POOLS.get(kv)
    if pool is None:
        pool = _POOLS[kv] = ScoringPool(len(kv.slots), runner.n_seq_max)
    return pool


# -- the task -----------------------------------------------------------------------------------
@dataclass(eq=False)
class _BranchRun:
    index: int
    seq_id: int
    n_done: int = 0


@dataclass(eq=False)
class _ItemRun:
    index: int
    item: ScoreItem
    base: int = -1
    n_done: int = 0
    pending: list[int] = field(default_factory=list)  # branches with tokens, not yet started
    active: list[_BranchRun] = field(default_factory=list)
    scores: list[list[float]] = field(default_factory=list)

    @property
    def needs_ids(self) -> bool:
        return bool(self.pending)


_Row = tuple[_ItemRun, int | None, int, int]  # item, branch (None: the item), batch index, row


class ScoreTask:
    """An EngineTask scoring `items` after the shared `prefix` (see the module docstring)."""

    def __init__(self, prefix: Sequence[int], items: Sequence[ScoreItem]) -> None:
        if not items:
            raise RequestError("nothing to score")
        if any(not it.tokens for it in items):
            raise RequestError("every item needs at least one token")
        self.prefix = tuple(prefix)
        self.items = list(items)
        self._waiting = [_ItemRun(i, it) for i, it in enumerate(items)]
        self._running: list[_ItemRun] = []
        self._done = 0
        self._scores: list[list[list[float]]] = [[] for _ in items]
        self._pool: ScoringPool | None = None
        self._entry: Prefix | None = None
        self._prefix_cached = False
        self._held = 0
        self.decoded = 0
        self.calls = 0

    # -- EngineTask ---------------------------------------------------------------------------
    def advance(self, runner: ScoreRunner, kv: KVCache) -> bool:
        pool = self._pool or self._start(runner, kv)
        if self.prefix:
            entry = self._entry or self._acquire(pool, runner, kv)
            if entry is None:
                return False  # no room yet (chat requests hold the context); try next iteration
            if not entry.ready:
                self._prefill_prefix(entry, runner, kv)
                return False
        batch: list[BatchToken] = []
        rows: list[_Row] = []
        budget = self._budget(runner, kv)
        budget = self._add_branches(batch, rows, budget, pool, runner)
        budget = self._add_prefills(batch, rows, budget)
        self._admit(batch, rows, budget, pool, runner, kv)
        if batch:
            runner.decode(batch)
            self.decoded += len(batch)
            self.calls += 1
            self._read(rows, runner)
            self._retire(pool, runner, kv)
        return self._done == len(self.items)

    def result(self) -> ScoreResult:
        return ScoreResult(
            self._scores, len(self.prefix), self._prefix_cached, self.decoded, self.calls
        )

    def close(self, runner: ScoreRunner, kv: KVCache) -> None:
        pool = self._pool
        for run in self._running:
            for br in run.active:
                runner.seq_rm(br.seq_id)
                if pool is not None:
                    pool.give_id(br.seq_id)
            if run.base >= 0:
                runner.seq_rm(run.base)
                if pool is not None:
                    pool.give_id(run.base)
        self._running.clear()
        kv.drop_cells(self._held)
        self._held = 0
        entry, self._entry = self._entry, None
        if entry is not None and pool is not None:
            entry.pins -= 1
            if not entry.ready and entry.pins == 0:  # half-built: never reuse it
                pool.drop(entry, runner, kv)

    # -- pieces -------------------------------------------------------------------------------
    def _start(self, runner: ScoreRunner, kv: KVCache) -> ScoringPool:
        pool = pool_of(runner, kv)
        branching = any(b.tokens for it in self.items for b in it.branches)
        need = (1 if self.prefix else 0) + 1 + (1 if branching else 0)
        if pool.size < need:
            raise ScoringUnavailable(
                f"label scoring needs {need} sequence ids, the engine has {pool.size} "
                "(raise score_slots)"
            )
        widest = max(it.cells for it in self.items)
        if len(self.prefix) + widest > runner.n_ctx:
            raise RequestError(
                f"an input needs {len(self.prefix) + widest} tokens of context, more than the "
                f"{runner.n_ctx} available"
            )
        self._pool = pool
        return pool

    def _acquire(self, pool: ScoringPool, runner: ScoreRunner, kv: KVCache) -> Prefix | None:
        entry = pool.lookup(self.prefix)
        if entry is not None and entry.ready:
            self._prefix_cached = True
        if entry is None:
            entry = pool.add_prefix(self.prefix, runner, kv)
            if entry is None:
                self._check_can_wait(kv, len(self.prefix))
                return None
        entry.pins += 1
        self._entry = entry
        return entry

    def _prefill_prefix(self, entry: Prefix, runner: ScoreRunner, kv: KVCache) -> None:
        n = min(len(entry.tokens) - entry.n_done, self._budget(runner, kv))
        start = entry.n_done
        batch = [
            BatchToken(tok, start + i, entry.seq_id, False)
            for i, tok in enumerate(entry.tokens[start : start + n])
        ]
        runner.decode(batch)
        self.decoded += n
        self.calls += 1
        entry.n_done += n

    def _budget(self, runner: ScoreRunner, kv: KVCache) -> int:
        busy = any(s.owner is not None for s in kv.slots)
        return min(runner.n_batch, BUSY_BUDGET) if busy else runner.n_batch

    def _add_branches(
        self,
        batch: list[BatchToken],
        rows: list[_Row],
        budget: int,
        pool: ScoringPool,
        runner: ScoreRunner,
    ) -> int:
        for run in self._running:
            if run.n_done < len(run.item.tokens):
                continue
            while run.pending and pool.free and budget > 0:
                br = _BranchRun(run.pending.pop(0), pool.take_id())
                runner.seq_cp(run.base, br.seq_id, -1, -1)
                run.active.append(br)
            for br in run.active:
                if budget <= 0:
                    break
                budget -= self._add_branch_chunk(batch, rows, run, br, budget)
        return budget

    def _add_branch_chunk(
        self,
        batch: list[BatchToken],
        rows: list[_Row],
        run: _ItemRun,
        br: _BranchRun,
        budget: int,
    ) -> int:
        branch = run.item.branches[br.index]
        wanted = {row for row, _ in branch.picks}
        start = br.n_done
        n = min(len(branch.tokens) - start, budget)
        pos0 = len(self.prefix) + len(run.item.tokens)
        for r in range(start, start + n):
            logits = r in wanted
            if logits:
                rows.append((run, br.index, len(batch), r))
            batch.append(BatchToken(branch.tokens[r], pos0 + r, br.seq_id, logits))
        br.n_done += n
        return n

    def _add_prefills(
        self,
        batch: list[BatchToken],
        rows: list[_Row],
        budget: int,
    ) -> int:
        for run in self._running:
            if budget <= 0:
                break
            if run.n_done < len(run.item.tokens):
                budget -= self._add_item_chunk(batch, rows, run, budget)
        return budget

    def _add_item_chunk(
        self,
        batch: list[BatchToken],
        rows: list[_Row],
        run: _ItemRun,
        budget: int,
    ) -> int:
        tokens = run.item.tokens
        start = run.n_done
        n = min(len(tokens) - start, budget)
        base = len(self.prefix)
        for i in range(start, start + n):
            last = i == len(tokens) - 1
            if last:
                rows.append((run, None, len(batch), LAST))
            batch.append(BatchToken(tokens[i], base + i, run.base, last))
        run.n_done += n
        return n

    def _admit(
        self,
        batch: list[BatchToken],
        rows: list[_Row],
        budget: int,
        pool: ScoringPool,
        runner: ScoreRunner,
        kv: KVCache,
    ) -> None:
        while self._waiting and budget > 0:
            run = self._waiting[0]
            branching = any(r.needs_ids for r in self._running) or any(
                b.tokens for b in run.item.branches
            )
            if len(pool.free) < (2 if branching else 1):
                if self._running or not pool.evict_one(runner, kv):  # idle prefixes hold ids
                    return
                continue
            if not kv.hold_cells(run.item.cells):
                if not self._running:
                    self._check_can_wait(kv, run.item.cells)
                return
            self._held += run.item.cells
            self._waiting.pop(0)
            run.base = pool.take_id()
            if self._entry is not None:
                runner.seq_cp(self._entry.seq_id, run.base, -1, -1)
            run.pending = [i for i, b in enumerate(run.item.branches) if b.tokens]
            run.scores = [[0.0] * len(b.picks) for b in run.item.branches]
            self._running.append(run)
            budget -= self._add_item_chunk(batch, rows, run, budget)

    def _check_can_wait(self, kv: KVCache, need: int) -> None:
        """No room: fine while chat requests run (they will finish and free cells), an error
        when nothing else holds the context (the input can never fit)."""
        if not any(s.owner is not None for s in kv.slots):
            raise RequestError(
                f"an input needs {need} free KV cells and the context has {kv.cells_free}"
            )

    def _read(self, rows: list[_Row], runner: ScoreRunner) -> None:
        """Right after the decode (the next one overwrites the logits): every pick of a row."""
        for run, b_index, index, row in rows:
            branches = run.item.branches
            wanted = [
                (b, k, tok)
                for b, branch in enumerate(branches)
                if b_index is None or b == b_index
                for k, (r, tok) in enumerate(branch.picks)
                if r == row
            ]
            if not wanted:
                continue
            values = log_softmax_at(runner.logits(index), [tok for _, _, tok in wanted])
            for (b, k, _), value in zip(wanted, values, strict=True):
                run.scores[b][k] = value

    def _retire(self, pool: ScoringPool, runner: ScoreRunner, kv: KVCache) -> None:
        still: list[_ItemRun] = []
        for run in self._running:
            if run.n_done == len(run.item.tokens):
                for br in list(run.active):
                    if br.n_done == len(run.item.branches[br.index].tokens):
                        run.active.remove(br)
                        runner.seq_rm(br.seq_id)
                        pool.give_id(br.seq_id)
                if not run.pending and not run.active:
                    runner.seq_rm(run.base)
                    pool.give_id(run.base)
                    kv.drop_cells(run.item.cells)
                    self._held -= run.item.cells
                    self._scores[run.index] = run.scores
                    self._done += 1
                    continue
            still.append(run)
        self._running = still
