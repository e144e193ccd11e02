"""What a group of concurrent streams did together: aggregate rates, latencies and waiting."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from warmlm.bench.client import StreamResult
from warmlm.bench.stats import percentile, rate

MIN_WINDOW_S = 0.05


def aggregate_tps(results: Sequence[StreamResult]) -> float | None:
    """All completion tokens ÷ wall time from the first request sent to the last one finished."""
    if not results:
        return None
    start = min(r.sent_at for r in results)
    end = max(r.finished_at for r in results)
    return rate(sum(r.completion_tokens for r in results), end - start)


def _tokens_in(result: StreamResult, t0: float, t1: float) -> float:
    """Tokens a stream produced in (t0, t1], scaled when chunks carry more than one token."""
    chunks = sum(1 for t in result.token_times if t0 < t <= t1)
    scale = result.completion_tokens / len(result.token_times) if result.token_times else 1.0
    return chunks * scale


def decode_phase_tps(results: Sequence[StreamResult]) -> tuple[float | None, str]:
    """Aggregate tok/s while every stream was decoding, and how the window was chosen.

    The window runs from the last stream's first token to the first stream's last token. When the
    streams never all overlap (too short a window) it falls back to the whole decode span.
    """
    streams = [r for r in results if len(r.token_times) >= 2]
    if not streams:
        return None, "none"
    w0 = max(r.token_times[0] for r in streams)
    w1 = min(r.token_times[-1] for r in streams)
    if w1 - w0 >= MIN_WINDOW_S:
        return rate(sum(_tokens_in(r, w0, w1) for r in streams), w1 - w0), "all-decoding"
    s0 = min(r.token_times[0] for r in streams)
    s1 = max(r.token_times[-1] for r in streams)
    return rate(sum(_tokens_in(r, s0, s1) for r in streams), s1 - s0), "span"


def waited_count(results: Sequence[StreamResult]) -> int:
    """How many streams got their first token only after some other stream had finished."""
    count = 0
    for r in results:
        first = r.first_token_at
        if first is None:
            continue
        if any(o is not r and o.finished_at < first for o in results):
            count += 1
    return count


def group_stats(results: Sequence[StreamResult]) -> dict[str, Any]:
    """The numbers the concurrency tables show, for one group of simultaneous streams."""
    ok = [r for r in results if r.error is None]
    ttfts = [t for t in (r.ttft for r in ok) if t is not None]
    gaps = [g for r in ok for g in r.gaps]
    decode, window = decode_phase_tps(ok)
    return {
        "requests": len(results),
        "errors": [r.error for r in results if r.error is not None],
        "completion_tokens": sum(r.completion_tokens for r in ok),
        "aggregate_tps": aggregate_tps(ok),
        "decode_aggregate_tps": decode,
        "decode_window": window,
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p95_s": percentile(ttfts, 95),
        "itl_p50_s": percentile(gaps, 50),
        "itl_p95_s": percentile(gaps, 95),
        "waited_for_other": waited_count(ok),
    }
