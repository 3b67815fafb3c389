"""Latency histograms: Postgres and Python bucket alike, and merged buckets give percentiles within 1 %."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ledger import latency_buckets as latency_histogram
from services.ledger.latency_buckets import Histogram
from tests.support.percentiles import percentile_cont

FRACTIONS = (0.0, 0.5, 0.95, 0.99, 1.0)


def _histogram(values: Sequence[float]) -> Counter[int]:
    return Counter(latency_histogram.bucket_of(v) for v in values)


async def test_postgres_buckets_latencies_as_python_does(conn: asyncpg.Connection) -> None:
    values = [0.0, 0.0004, 0.000999, 0.001, 0.0012, 0.5, 1.0, 1.0099, 1.0101, 1.7, 2.0, 250.0, 9_999.9, 3.6e6]
    rows = await conn.fetch(
        f"SELECT {latency_histogram.bucket_sql('ms')} AS bucket "
        "FROM unnest($1::float8[]) WITH ORDINALITY AS v (ms, i) ORDER BY i",
        values,
    )
    assert [row["bucket"] for row in rows] == [latency_histogram.bucket_of(v) for v in values]


@given(st.floats(min_value=0.001, max_value=1e7, allow_nan=False))
def test_a_bucket_stands_within_1_percent_of_each_latency_in_it(ms: float) -> None:
    assert latency_histogram.value_of(latency_histogram.bucket_of(ms)) == pytest.approx(ms, rel=0.01)


def test_latencies_below_a_microsecond_count_as_0() -> None:
    assert latency_histogram.value_of(latency_histogram.bucket_of(0.0009)) == 0.0
    assert latency_histogram.value_of(latency_histogram.bucket_of(0.0)) == 0.0


@settings(max_examples=200)
@given(
    st.lists(
        st.one_of(st.just(0.0), st.floats(min_value=0.001, max_value=1e6, allow_nan=False)), min_size=1, max_size=300
    )
)
def test_percentiles_are_within_1_percent_of_percentile_cont(values: list[float]) -> None:
    found = latency_histogram.percentiles(_histogram(values), FRACTIONS)
    assert found is not None
    # Interpolating between two ranks whose values are each within 1 % stays within 1 %.
    assert found == pytest.approx([percentile_cont(values, f) for f in FRACTIONS], rel=0.01, abs=1e-9)


def test_merged_histograms_give_the_percentiles_of_all_their_latencies() -> None:
    minutes = [[1.0, 2.0, 3.0], [100.0], [4.0, 5.0, 6.0, 7.0]]
    histograms = [Histogram.of(*zip(*sorted(_histogram(m).items()), strict=True)) for m in minutes]
    merged = latency_histogram.merged(histograms)

    assert merged == _histogram([v for m in minutes for v in m])
    everything = sorted(v for m in minutes for v in m)
    assert latency_histogram.percentiles(merged, (0.5, 0.99)) == pytest.approx(
        [percentile_cont(everything, 0.5), percentile_cont(everything, 0.99)], rel=0.01
    )


def test_no_latency_gives_no_percentiles() -> None:
    assert latency_histogram.percentiles(Counter(), (0.5,)) is None
    assert not Histogram.of([], [])
