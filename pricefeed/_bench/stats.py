"""Percentiles, summaries and ratios. Every time here is an int of ns; tables show µs."""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

#: The percentiles every latency series is reported at.
PERCENTILES = (50.0, 90.0, 99.0, 99.9)

Summary = Dict[str, float]


def percentile(ordered: Sequence[float], p: float) -> float:
    """The ``p``-th percentile of an already sorted sequence, by linear interpolation."""
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarise(samples: Sequence[float]) -> Summary:
    """n, mean, min, the PERCENTILES (as ``p50``, ``p99.9``, ...) and max of ``samples``."""
    ordered = sorted(samples)
    out: Summary = {"n": float(len(ordered))}
    if not ordered:
        return out
    out["mean"] = sum(ordered) / len(ordered)
    out["min"] = ordered[0]
    for p in PERCENTILES:
        out[key(p)] = percentile(ordered, p)
    out["max"] = ordered[-1]
    return out


#: The percentiles kept for a distribution plot.
DISTRIBUTION = (0.0, 1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97, 99, 99.5, 99.9, 99.95, 99.99, 100.0)


def distribution(samples: Sequence[float]) -> List[List[float]]:
    """[percentile, value] pairs at DISTRIBUTION: enough to draw a latency percentile plot."""
    ordered = sorted(samples)
    return [[p, percentile(ordered, p)] for p in DISTRIBUTION] if ordered else []


def key(p: float) -> str:
    """``p50``, ``p99.9``: the name of a percentile in summaries and in the JSON file."""
    return f"p{p:g}"


def ratio(value: Optional[float], baseline: Optional[float]) -> Optional[float]:
    """value / baseline, or None when either is missing or the baseline is not positive."""
    if value is None or baseline is None or math.isnan(value) or math.isnan(baseline) or baseline <= 0:
        return None
    return value / baseline


def per_round_medians(samples: Sequence[float], round_sizes: Sequence[int]) -> List[float]:
    """The median of each round, in order: shows how far the machine drifted during the run."""
    out = []
    start = 0
    for size in round_sizes:
        part = sorted(samples[start : start + size])
        start += size
        out.append(percentile(part, 50.0))
    return out


def us(ns: Optional[float]) -> str:
    """A time in ns as µs for a table: 3 significant figures, or '-' when missing."""
    if ns is None or math.isnan(ns):
        return "-"
    value = ns / 1000.0
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def times(r: Optional[float]) -> str:
    """A ratio for a table: '1.73x', or '-' when missing."""
    return "-" if r is None else f"{r:.2f}x"


def rate(per_second: Optional[float]) -> str:
    """A rate for a table: '412k/s', '1.52M/s'."""
    if per_second is None or math.isnan(per_second):
        return "-"
    if per_second >= 1e6:
        return f"{per_second / 1e6:.2f}M/s"
    if per_second >= 1e3:
        return f"{per_second / 1e3:.0f}k/s"
    return f"{per_second:.0f}/s"
