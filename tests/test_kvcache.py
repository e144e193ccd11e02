"""Prefix reuse, eviction and restore bookkeeping, on a scripted runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.fakes import FakeRunner
from warmlm.engine.detokenizer import Detokenizer
from warmlm.engine.kvcache import KVCache
from warmlm.engine.kvstore import KVStore
from warmlm.engine.request import Request, SamplingParams


def req(tokens: list[int], max_tokens: int = 4) -> Request:
    r = Request(
        tokens, SamplingParams(max_tokens=max_tokens), lambda ev: None, Detokenizer(lambda t: b"")
    )
    return r


def finish(kv: KVCache, r: Request, generated: list[int]) -> None:
    """Pretend the request ran: prompt prefilled, `generated` decoded."""
    r.output_tokens = list(generated)
    r.n_past = len(r.prompt_tokens) + len(generated) - 1
    kv.release(r)


def test_next_turn_adopts_the_cached_conversation() -> None:
    runner = FakeRunner()
    kv = KVCache(runner, n_cells=1000, n_slots=4)
    first = req(list(range(1, 21)))
    assert kv.admit(first) and first.cached_tokens == 0
    finish(kv, first, [30, 31, 32])
    second = req(list(range(1, 21)) + [30, 31, 32, 40, 41])
    assert kv.admit(second)
    assert second.seq_id == first.seq_id and second.cached_tokens == 22
    assert second.n_past == 22 and kv.stats["hits"] == 22


def test_reuse_stops_at_first_differing_token() -> None:
    kv = KVCache(FakeRunner(), 1000, 4)
    a = req([1, 2, 3, 4, 5, 6])
    kv.admit(a)
    finish(kv, a, [7])
    b = req([1, 2, 3, 9, 9, 9])
    kv.admit(b)
    assert b.cached_tokens == 3


def test_shared_system_prompt_is_copied_not_truncated() -> None:
    runner = FakeRunner()
    kv = KVCache(runner, 1000, 4)
    a = req([1, 2, 3, 4, 5, 6, 7, 8])
    kv.admit(a)
    finish(kv, a, [9])
    b = req([1, 2, 3, 4, 50, 51])
    kv.admit(b)
    assert b.seq_id != a.seq_id and b.cached_tokens == 4
    assert runner.copies == [(a.seq_id, b.seq_id, 4)]
    c = req([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    kv.admit(c)
    assert c.cached_tokens == 8, "a's cached conversation survived b"


def test_at_least_one_prompt_token_is_always_prefilled() -> None:
    kv = KVCache(FakeRunner(), 1000, 4)
    a = req([1, 2, 3])
    kv.admit(a)
    finish(kv, a, [4])
    b = req([1, 2, 3])
    kv.admit(b)
    assert b.cached_tokens == 2 and b.prompt_remaining == 1


def test_lru_eviction_saves_to_ram_and_restores() -> None:
    runner = FakeRunner()
    store = KVStore("fp", ram_bytes=1 << 20)
    kv = KVCache(runner, n_cells=100, n_slots=2, store=store)
    a = req(list(range(1, 41)), max_tokens=10)
    kv.admit(a)
    finish(kv, a, [99])
    b = req(list(range(101, 141)), max_tokens=10)
    kv.admit(b)
    finish(kv, b, [98])
    c = req(list(range(201, 241)), max_tokens=10)  # needs room: a (least recent) goes to RAM
    assert kv.admit(c)
    assert kv.stats["evictions"] >= 1 and store.ram_entries >= 1
    finish(kv, c, [97])
    again = req(list(range(1, 41)) + [99, 5], max_tokens=10)
    assert kv.admit(again)
    assert again.cached_tokens == 40 and kv.stats["restores"] == 1
    assert runner.restored and runner.restored[-1][1] == f"state-{a.seq_id}".encode()


def test_no_room_keeps_request_waiting() -> None:
    kv = KVCache(FakeRunner(), n_cells=50, n_slots=4)
    a = req(list(range(1, 30)), max_tokens=10)
    assert kv.admit(a)
    b = req(list(range(1, 30)), max_tokens=20)
    assert not kv.admit(b), "running requests' reservations are never evicted"


def test_disk_tier_survives_a_new_store(tmp_path: Path) -> None:
    store = KVStore("fp", 0, tmp_path / "kv", 1 << 20)
    store.put([1, 2, 3, 4], b"data-1234")
    reopened = KVStore("fp", 0, tmp_path / "kv", 1 << 20)
    entry, n = reopened.best_match(np.array([1, 2, 3, 9], dtype=np.int32))
    assert entry is not None and n == 3 and reopened.load(entry) == b"data-1234"
    assert (tmp_path / "kv").stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in (tmp_path / "kv").glob("*.kv"))


def test_disk_tier_ignores_foreign_and_corrupt_files(tmp_path: Path) -> None:
    d = tmp_path / "kv"
    KVStore("model-a", 0, d, 1 << 20).put([1, 2, 3], b"aaa")
    other = KVStore("model-b", 0, d, 1 << 20)
    assert other.best_match(np.array([1, 2, 3], dtype=np.int32)) == (None, 0)
    f = next(d.glob("*.kv"))
    f.write_bytes(f.read_bytes()[:-1] + b"X")  # corrupt the payload
    same = KVStore("model-a", 0, d, 1 << 20)
    entry, _ = same.best_match(np.array([1, 2, 3], dtype=np.int32))
    assert entry is not None and same.load(entry) is None


def test_disk_tier_is_capped_lru(tmp_path: Path) -> None:
    store = KVStore("fp", 0, tmp_path / "kv", 2500)
    for i in range(5):
        store.put([i, i + 1, i + 2], bytes(1000))
    assert sum(p.stat().st_size for p in (tmp_path / "kv").glob("*.kv")) <= 2500


def test_a_partial_match_that_blocks_admission_is_taken_over() -> None:
    """A cached sequence sharing a long document with the new prompt must not keep it waiting
    when the cache is too small to hold both: the new request takes it over, cut to the
    match, and the whole sequence goes to the host tier first."""
    runner = FakeRunner()
    store = KVStore("fp", ram_bytes=1 << 20)
    kv = KVCache(runner, n_cells=120, n_slots=4, store=store)
    a = req(list(range(1, 81)) + [500], max_tokens=10)
    assert kv.admit(a)
    finish(kv, a, [7])
    b = req(list(range(1, 81)) + [600, 601], max_tokens=10)
    assert kv.admit(b), "takes the partial match over instead of waiting forever"
    assert b.seq_id == a.seq_id and b.cached_tokens == 80
    entry, n = store.best_match(np.asarray(list(range(1, 81)) + [500, 7], dtype=np.int32))
    assert entry is not None and n == 81 and kv.stats["saved"] == 1
    c = req(list(range(1, 81)) + [500, 7, 8], max_tokens=10)  # a's conversation returns
    kv.release(b)
    assert kv.admit(c) and c.cached_tokens == 81 and kv.stats["restores"] == 1
