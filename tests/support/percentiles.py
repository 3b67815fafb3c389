"""Percentiles as Postgres computes them, to check figures against."""

from __future__ import annotations

from collections.abc import Sequence


def percentile_cont(values: Sequence[float], fraction: float) -> float:
    """Postgres' ``percentile_cont``: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
