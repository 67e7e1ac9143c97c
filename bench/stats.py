"""Latency summaries. Percentiles are nearest-rank on the raw samples, so p99 of 1,000
samples is a real observed request, not an interpolation between two."""

import math
from collections.abc import Sequence
from typing import Any


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted samples."""
    if not sorted_samples:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_samples)))
    return sorted_samples[min(rank, len(sorted_samples)) - 1]


def summary(seconds: Sequence[float]) -> dict[str, Any]:
    """p50/p90/p99/max/mean in milliseconds, the sample count, and a 101-point CDF.

    The CDF (the 0th..100th percentiles) is what the chart draws; keeping it in the JSON
    lets a later run be drawn beside this one without the raw samples.
    """
    s = sorted(seconds)
    ms = [x * 1000 for x in s]
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(ms[-1], 3),
        "mean_ms": round(sum(ms) / len(ms), 3),
        "cdf_ms": [round(percentile(ms, q) if q else ms[0], 3) for q in range(101)],
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    if math.isnan(numerator) or math.isnan(denominator):
        return None
    return numerator / denominator
