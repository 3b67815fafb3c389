"""Latencies counted in buckets 2 % wide, so that percentiles of many minutes can be had from a few numbers.

A latency of ``ms`` milliseconds falls in bucket ``round(ln(ms) / ln(GROWTH))``: bucket ``b``
holds ``[GROWTH ** (b - 0.5), GROWTH ** (b + 0.5))`` and stands for ``GROWTH ** b``, which is
within 1 % of every latency in it. Below ``FLOOR_MS`` (a microsecond) latencies are 0 and fall in
``ZERO_BUCKET``. Postgres does the bucketing (``bucket_sql``), so that a minute's pickups come out
of the ledger as a few hundred counts, however many jobs started in it; merged, they give the
percentiles of a whole window (:func:`percentiles`), as ``percentile_cont`` would, within 1 %.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

GROWTH = 1.02
FLOOR_MS = 0.001
ZERO_BUCKET = -1000
"""Below every real bucket: ``round(ln(FLOOR_MS) / ln(GROWTH))`` is -349."""


def bucket_sql(ms: str) -> str:
    """The SQL expression of the bucket of the latency ``ms`` (a float8 expression, 0 or more)."""
    return f"CASE WHEN {ms} < {FLOOR_MS} THEN {ZERO_BUCKET} ELSE round(ln({ms}) / ln({GROWTH}))::int END"


def bucket_of(ms: float) -> int:
    """The bucket of a latency, as :func:`bucket_sql` computes it."""
    return ZERO_BUCKET if ms < FLOOR_MS else round(math.log(ms) / math.log(GROWTH))


def value_of(bucket: int) -> float:
    """The latency a bucket stands for."""
    return 0.0 if bucket == ZERO_BUCKET else GROWTH**bucket


@dataclass(frozen=True)
class Histogram:
    """Latencies counted per bucket, as two arrays: a minute of a day's window costs a few kB, a dict tens."""

    buckets: array[int]
    counts: array[int]

    @classmethod
    def of(cls, buckets: Iterable[int], counts: Iterable[int]) -> Histogram:
        return cls(buckets=array("q", buckets), counts=array("q", counts))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Each bucket and its count."""
        return zip(self.buckets, self.counts, strict=True)

    def __bool__(self) -> bool:
        return len(self.buckets) > 0


def merged(histograms: Iterable[Iterable[tuple[int, int]]]) -> Counter[int]:
    """The counts of several histograms (pairs of bucket and count) added up, bucket by bucket."""
    total: Counter[int] = Counter()
    for histogram in histograms:
        for bucket, count in histogram:
            total[bucket] += count
    return total


def percentiles(histogram: Mapping[int, int], fractions: Sequence[float]) -> list[float] | None:
    """Each fraction's percentile, interpolated between the closest ranks like ``percentile_cont``.

    Each latency counts as the value of its bucket; None for an empty histogram.
    """
    buckets = sorted(b for b, n in histogram.items() if n > 0)
    count = sum(histogram[b] for b in buckets)
    if not count:
        return None
    wanted = sorted({rank for f in fractions for rank in _ranks(f, count)})
    found: dict[int, float] = {}
    seen = 0
    position = iter(wanted)
    rank = next(position, None)
    for bucket in buckets:
        seen += histogram[bucket]
        while rank is not None and rank < seen:  # the rank-th smallest latency (from 0) is in this bucket
            found[rank] = value_of(bucket)
            rank = next(position, None)
    result = []
    for fraction in fractions:
        low, high = _ranks(fraction, count)
        exact = fraction * (count - 1)
        result.append(found[low] + (found[high] - found[low]) * (exact - low))
    return result


def _ranks(fraction: float, count: int) -> tuple[int, int]:
    """The two ranks (from 0) that ``percentile_cont(fraction)`` interpolates between."""
    low = math.floor(fraction * (count - 1))
    return low, min(low + 1, count - 1)
