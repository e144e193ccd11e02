import pytest

from warmlm.engine.kvcache import KVCache


def test_acquire_and_release_slots_and_cells() -> None:
    kv = KVCache(n_cells=100, n_slots=2)
    a = kv.acquire(60)
    assert kv.cells_free == 40 and kv.slots_free == 1
    assert not kv.can_admit(41)
    b = kv.acquire(40)
    assert {a, b} == {0, 1}
    assert not kv.can_admit(1)
    kv.release(a)
    assert kv.can_admit(60) and kv.slots_free == 1


def test_release_unknown_sequence_is_a_bug() -> None:
    kv = KVCache(10, 1)
    with pytest.raises(AssertionError):
        kv.release(0)
