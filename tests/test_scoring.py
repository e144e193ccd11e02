"""Label scoring (engine.scoring) against a simulated KV: exact log-probs, batching, cleanup."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.fakes import FakeRunner
from warmlm.config import EngineConfig
from warmlm.engine.engine import Engine
from warmlm.engine.kvcache import KVCache
from warmlm.engine.request import RequestError, SamplingParams, StreamEvent
from warmlm.engine.runner import BatchToken
from warmlm.engine.scoring import (
    BUSY_BUDGET,
    LAST,
    Branch,
    ScoreItem,
    ScoreTask,
    ScoringUnavailable,
    log_softmax_at,
    pool_of,
)

VOCAB = 24


def model(history: tuple[int, ...], n_vocab: int = VOCAB) -> np.ndarray:
    """Next-token logits that depend on the whole sequence so far (a stand-in for attention)."""
    seed = zlib.crc32(np.asarray(history, dtype=np.int64).tobytes())
    return np.random.default_rng(seed).normal(0.0, 3.0, n_vocab).astype(np.float32)


def true_logprob(context: tuple[int, ...], label: tuple[int, ...], n_vocab: int = VOCAB) -> float:
    total = 0.0
    for m, tok in enumerate(label):
        total += log_softmax_at(model(context + label[:m], n_vocab), [tok])[0]
    return total


@dataclass
class SimRunner(FakeRunner):
    """A FakeRunner whose KV is simulated per sequence: a decoded token must continue its
    sequence (position = length so far) and its logits depend on everything before it."""

    n_vocab: int = VOCAB
    n_seq_max: int = 12
    seqs: dict[int, list[int]] = field(default_factory=dict)
    rows: list[tuple[int, ...]] = field(default_factory=list)

    def decode(self, tokens: list[BatchToken]) -> None:
        super().decode(tokens)
        self.rows = []
        for t in tokens:
            assert 0 <= t.seq_id < self.n_seq_max
            seq = self.seqs.setdefault(t.seq_id, [])
            assert t.pos == len(seq), f"seq {t.seq_id}: position {t.pos} after {len(seq)}"
            seq.append(t.token)
            self.rows.append(tuple(seq))

    def logits(self, index: int) -> np.ndarray:
        assert self.batches[-1][index].logits, "logits read from a row that did not ask"
        return model(self.rows[index], self.n_vocab)

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        assert not self.seqs.get(dst), f"copy into non-empty seq {dst}"
        data = self.seqs.get(src, [])
        self.seqs[dst] = list(data if p1 < 0 else data[:p1])

    def seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> None:
        super().seq_rm(seq_id, p0, p1)
        if p0 <= 0:
            self.seqs.pop(seq_id, None)
        else:
            self.seqs[seq_id] = self.seqs.get(seq_id, [])[:p0]


def make(n_seq_max: int = 12, n_slots: int = 2, n_cells: int = 4096, n_batch: int = 512):
    runner = SimRunner(n_seq_max=n_seq_max, n_batch=n_batch, n_ctx=n_cells)
    return runner, KVCache(runner, n_cells, n_slots)


def run(task: ScoreTask, runner: SimRunner, kv: KVCache, limit: int = 200):
    for _ in range(limit):
        if task.advance(runner, kv):
            task.close(runner, kv)
            return task.result()
    raise AssertionError("task did not finish")


def labels_items(prefix: tuple[int, ...], inputs: list[tuple[int, ...]], labels: list[tuple]):
    branches = tuple(
        Branch(lab[:-1], ((LAST, lab[0]), *((m - 1, lab[m]) for m in range(1, len(lab)))))
        for lab in labels
    )
    return [ScoreItem(x, branches) for x in inputs]


def check(result, prefix, inputs, labels) -> None:
    for i, x in enumerate(inputs):
        for j, lab in enumerate(labels):
            got = sum(result.logprobs[i][j])
            assert got == pytest.approx(true_logprob(prefix + x, lab), abs=1e-5)


PREFIX = (1, 2, 3, 4, 5)
INPUTS = [(7, 8), (9,), (10, 11, 12, 13), (7, 8, 9)]


def test_single_token_labels_one_decode_for_all_inputs_and_prefix_kept() -> None:
    runner, kv = make()
    labels = [(3,), (4,), (5,)]
    first = run(ScoreTask(PREFIX, labels_items(PREFIX, INPUTS, labels)), runner, kv)
    check(first, PREFIX, INPUTS, labels)
    assert first.decode_calls == 2 and not first.prefix_cached  # the prefix, then every input
    assert first.decoded_tokens == len(PREFIX) + sum(map(len, INPUTS))
    second = run(ScoreTask(PREFIX, labels_items(PREFIX, INPUTS, labels)), runner, kv)
    check(second, PREFIX, INPUTS, labels)
    assert second.decode_calls == 1 and second.prefix_cached
    assert second.decoded_tokens == sum(map(len, INPUTS)), "only the inputs are prefilled"
    pool = pool_of(runner, kv)
    assert kv.held == len(PREFIX) and len(pool.free) == pool.size - 1
    assert set(runner.seqs) == {next(iter(pool.prefixes.values())).seq_id}


def test_multi_token_labels_are_exact_and_decoded_in_one_batch() -> None:
    runner, kv = make(n_seq_max=2 + 1 + 16)  # the prefix, and 4 inputs × (input + 3 labels)
    labels = [(3, 4, 5), (3, 6), (9,), (2, 2, 2, 2)]
    result = run(ScoreTask(PREFIX, labels_items(PREFIX, INPUTS, labels)), runner, kv)
    check(result, PREFIX, INPUTS, labels)
    assert result.decode_calls == 3  # prefix; inputs; every label of every input
    last = runner.batches[-1]
    assert len(last) == len(INPUTS) * sum(len(lab) - 1 for lab in labels)
    assert len({t.seq_id for t in last}) == len(INPUTS) * 3


def test_few_sequence_ids_still_exact_and_all_released() -> None:
    runner, kv = make(n_seq_max=2 + 3)  # 3 scoring ids: one prefix, two for the work
    labels = [(3, 4), (5, 6, 7), (8, 1)]
    inputs = [(7, 8), (9,), (10, 11), (12,), (13, 14, 15)]
    result = run(ScoreTask(PREFIX, labels_items(PREFIX, inputs, labels)), runner, kv)
    check(result, PREFIX, inputs, labels)
    pool = pool_of(runner, kv)
    assert len(pool.free) == 2 and kv.held == len(PREFIX)


def test_long_inputs_and_labels_are_chunked_to_the_batch_size() -> None:
    runner, kv = make(n_batch=8)
    labels = [tuple(range(1, 12)), (4,)]
    inputs = [tuple(range(3, 23)), (5, 6)]
    prefix = tuple(range(1, 20))
    result = run(ScoreTask(prefix, labels_items(prefix, inputs, labels)), runner, kv)
    check(result, prefix, inputs, labels)
    assert max(len(b) for b in runner.batches) == 8


def test_yes_no_branch_picks_at_its_last_row() -> None:
    runner, kv = make()
    question = (9, 8, 7)
    item = ScoreItem((4, 5), (Branch(question, ((2, 1), (2, 2))),))
    result = run(ScoreTask(PREFIX, [item]), runner, kv)
    want = log_softmax_at(model(PREFIX + (4, 5) + question), [1, 2])
    assert result.logprobs[0][0] == pytest.approx(want, abs=1e-5)


def test_prefixes_are_an_lru_with_accounted_cells() -> None:
    runner, kv = make(n_seq_max=2 + 12)
    pool = pool_of(runner, kv)
    prefixes = [tuple(range(k, k + 4 + k)) for k in range(1, 8)]
    for p in prefixes:
        run(ScoreTask(p, labels_items(p, [(3,)], [(1,), (2,)])), runner, kv)
    assert len(pool.prefixes) == pool.max_prefixes
    assert list(pool.prefixes) == prefixes[-pool.max_prefixes :]
    assert kv.held == sum(len(p) for p in prefixes[-pool.max_prefixes :]) == pool.cells
    assert len(runner.seqs) == pool.max_prefixes


def test_close_mid_way_releases_the_work_and_a_half_built_prefix() -> None:
    runner, kv = make(n_batch=4)
    prefix = tuple(range(1, 11))
    task = ScoreTask(prefix, labels_items(prefix, INPUTS, [(1, 2), (3,)]))
    assert not task.advance(runner, kv)  # part of the prefix
    task.close(runner, kv)
    pool = pool_of(runner, kv)
    assert not pool.prefixes and kv.held == 0 and not runner.seqs
    assert len(pool.free) == pool.size


def test_an_input_that_can_never_fit_is_an_error() -> None:
    runner, kv = make(n_cells=40)
    items = labels_items(PREFIX, [tuple(range(1, 40))], [(1,), (2,)])
    with pytest.raises(RequestError, match="needs"):
        run(ScoreTask(PREFIX, items), runner, kv)


def test_no_items_is_an_error() -> None:
    with pytest.raises(RequestError):
        ScoreTask(PREFIX, [])
    with pytest.raises(RequestError):
        ScoreTask(PREFIX, [ScoreItem((), ())])


def test_scoring_interleaves_with_a_running_chat_stream() -> None:
    runner = SimRunner(n_seq_max=12, script=list(range(1, 60)))
    cfg = EngineConfig(model_path=Path("fake.gguf"), parallel=1, cache_slots=1)
    engine = Engine(runner, cfg)  # type: ignore[arg-type]
    assert len(engine.kv.slots) == cfg.first_score_seq == 2
    events: list[StreamEvent] = []
    params = SamplingParams(max_tokens=40, temperature=0.0)
    engine.add_request(engine.new_request([20, 21, 22], params, events.append))
    engine.step()
    prefix = tuple(range(1, 300))
    inputs = [tuple(range(2, 2 + n)) for n in (50, 60, 70)]
    labels = [(3, 4), (5,)]
    result = engine.run_task(ScoreTask(prefix, labels_items(prefix, inputs, labels)))
    check(result, prefix, inputs, labels)  # type: ignore[arg-type]
    assert all(len(b) <= BUSY_BUDGET + 1 for b in runner.batches), "chunks small while busy"
    assert len(events) >= 5, "the stream kept producing tokens while scoring ran"


def test_too_few_sequence_ids_is_an_error_not_a_hang() -> None:
    runner, kv = make(n_seq_max=2 + 2)  # a prefix and an input, but no id for a label branch
    with pytest.raises(ScoringUnavailable, match="score_slots"):
        run(ScoreTask(PREFIX, labels_items(PREFIX, INPUTS, [(1, 2), (3,)])), runner, kv)
    result = run(ScoreTask(PREFIX, labels_items(PREFIX, INPUTS, [(1,), (3,)])), runner, kv)
    check(result, PREFIX, INPUTS, [(1,), (3,)])
