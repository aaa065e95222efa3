"""Bounded histograms of durations in working hours, and percentiles read from them.

Rollups keep one count per bucket and day instead of every duration, so a report's
median and p90 cost the same for ten incidents as for a million. A percentile is
interpolated linearly inside the bucket it falls in: its error is at most the width of
that bucket (a quarter of an hour for the first ones, a working week for the last).
"""

from __future__ import annotations

from collections.abc import Sequence

# Upper edges (working hours, exclusive) of the buckets; the last bucket is open-ended.
EDGES: tuple[float, ...] = (0.25, 0.5, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 40, 56, 80, 120, 160, 240)
BUCKETS = len(EDGES) + 1


def bucket_of(hours: float) -> int:
    for i, edge in enumerate(EDGES):
        if hours < edge:
            return i
    return len(EDGES)


def percentile(counts: Sequence[int], q: float) -> float | None:
    """The q-quantile (0 < q <= 1) of the durations counted in `counts`; None if empty."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n <= 0:
            continue
        if seen + n >= rank:
            low = EDGES[i - 1] if i > 0 else 0.0
            if i >= len(EDGES):
                return low  # open-ended last bucket: its lower edge
            high = EDGES[i]
            return low + (high - low) * (rank - seen) / n
        seen += n
    return EDGES[-1]  # pragma: no cover (rounding)
