from warmlm.engine.budget import PrefillBudget


def test_starts_small_until_a_decode_step_is_measured() -> None:
    assert PrefillBudget(2.5, 16, 256).chunk() == 16


def test_chunk_keeps_step_time_near_ratio_times_decode_step() -> None:
    b = PrefillBudget(ratio=3.0, min_chunk=8, max_chunk=512, alpha=1.0)
    b.record(0.040, n_decode=3, n_prefill=0)  # decode-only step: 40 ms
    b.record(0.040 + 64 * 0.002, n_decode=3, n_prefill=64)  # 2 ms per prompt token
    assert b.chunk() == 40  # (3 - 1) * 40 ms / 2 ms
    assert 0.040 + b.chunk() * 0.002 <= 3.0 * 0.040 + 1e-9


def test_chunk_is_clamped() -> None:
    b = PrefillBudget(ratio=2.0, min_chunk=8, max_chunk=32, alpha=1.0)
    b.record(1.0, 1, 0)
    assert b.chunk() == 32
    b.record(0.0001, 1, 0)
    assert b.chunk() == 8


def test_learns_from_chunks_of_a_few_tokens_and_goes_below_eight() -> None:
    # a prompt token deep in a long context costing half a decode step (AVX2 CPUs, 3k deep)
    b = PrefillBudget(ratio=2.2, min_chunk=1, max_chunk=256, alpha=1.0)
    b.record(0.060, n_decode=3, n_prefill=0)
    b.record(0.060 + 2 * 0.030, n_decode=3, n_prefill=2)
    assert b.chunk() == 2  # (2.2 - 1) * 60 ms / 30 ms
    assert 0.060 + b.chunk() * 0.030 <= 2.2 * 0.060 + 1e-9
