"""Statistics of benchmark samples: percentiles, summaries and ratios."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0–100), interpolated linearly like numpy's default; None if empty."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = math.ceil(rank)
    if lo == hi:
        return float(ordered[lo])
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo))


def median(values: Sequence[float]) -> float | None:
    return percentile(values, 50.0)


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """Count, mean, min, p50, p95, max of a sample (None entries where the sample is empty)."""
    return {
        "n": len(values),
        "mean": mean(values),
        "min": min(values) if values else None,
        "p50": percentile(values, 50.0),
        "p95": percentile(values, 95.0),
        "max": max(values) if values else None,
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator ÷ denominator, or None when either is missing or the denominator is not > 0."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def rate(count: float, seconds: float | None) -> float | None:
    """count ÷ seconds (events per second), or None for an empty or missing interval."""
    if seconds is None or seconds <= 0:
        return None
    return count / seconds
