"""The window figures of ``GET /stats`` (throughput, pickup latency) on a ledger written by hand.

Each first attempt carries the due time its start recorded (``due_at``, migration 0007) as
``afterword_start_attempt`` writes it: its job's ``run_at`` at that moment.

A database of its own, so that nothing else lands in the window. The jobs sit 3 and 2 minutes
before the minute the module starts in, inside a 10-minute window even if a minute turns during
the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services import stats
from tests.support.database import create_database, drop_database

WINDOW = 10


@dataclass(frozen=True)
class Row:
    """One job: due at ``run_at``, its first attempt started ``pickup_ms`` later, ended as ``status``.

    A job of several tries starts again every second after its first start.
    """

    status: str
    run_at: datetime
    pickup_ms: float
    finished_ms: float = 50.0
    """How long each attempt ran."""
    try_: int = 1


def percentile_cont(values: Sequence[float], fraction: float) -> float:
    """Postgres' ``percentile_cont``: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@pytest.fixture(scope="module")
async def ledger_db() -> AsyncIterator[tuple[asyncpg.Connection, datetime]]:
    dsn = await create_database("afterword_window")
    db = await asyncpg.connect(dsn)
    minute = (await db.fetchval("SELECT date_trunc('minute', now())")).astimezone(UTC)
    first, second = minute - timedelta(minutes=3), minute - timedelta(minutes=2)
    rows = [
        *(Row("succeeded", first + timedelta(seconds=i), ms) for i, ms in enumerate([1, 2, 3, 4, 100])),
        Row("failed", first + timedelta(seconds=10), -2),  # started before its due time: counts as 0
        *(Row("succeeded", second + timedelta(seconds=i), ms) for i, ms in enumerate([10, 20, 30, 40])),
        Row("failed", second + timedelta(seconds=10), 7, try_=2),  # its second start is not a pickup
        Row("succeeded", minute - timedelta(minutes=WINDOW + 5), 5),  # before the window
    ]
    # Run again by POST /jobs/{id}/retry: a new run_at after its first attempt ended, which keeps
    # the due time it started against (5 ms before it).
    rerun = second + timedelta(seconds=30)
    try:
        for i, row in enumerate(rows):
            starts = [row.run_at + timedelta(milliseconds=row.pickup_ms, seconds=k) for k in range(row.try_)]
            ends = [start + timedelta(milliseconds=row.finished_ms) for start in starts]
            await db.execute(
                "INSERT INTO jobs (id, name, payload, status, tries, run_at, started_at, finished_at) "
                "VALUES ($1, 'write_log', '{}', $2, $3, $4, $5, $6)",
                f"w{i}", row.status, row.try_, row.run_at, starts[-1], ends[-1],
            )  # fmt: skip
            for attempt, (start, end) in enumerate(zip(starts, ends, strict=True), start=1):
                await db.execute(
                    "INSERT INTO job_attempts (job_id, try, worker, started_at, finished_at, outcome, due_at) "
                    "VALUES ($1, $2, 'w', $3, $4, $5, $6)",
                    f"w{i}", attempt, start, end, row.status, row.run_at,
                )  # fmt: skip
        await db.execute(
            "INSERT INTO jobs (id, name, payload, status, tries, run_at, started_at, finished_at) "
            "VALUES ('rerun', 'write_log', '{}', 'succeeded', 2, $1, $2, $3)",
            rerun, rerun + timedelta(milliseconds=3), rerun + timedelta(milliseconds=9),
        )  # fmt: skip
        await db.execute(
            "INSERT INTO job_attempts (job_id, try, worker, started_at, finished_at, outcome, due_at) VALUES "
            "('rerun', 1, 'w', $1, $2, 'failed', $3), ('rerun', 2, 'w', $4, $5, 'succeeded', $6)",
            second + timedelta(seconds=20), second + timedelta(seconds=21), second + timedelta(seconds=19.995),
            rerun + timedelta(milliseconds=3), rerun + timedelta(milliseconds=9), rerun,
        )  # fmt: skip
        # Started before migration 0007: no due time, left out.
        await db.execute(
            "INSERT INTO jobs (id, name, payload, status, tries, run_at, started_at, finished_at) "
            "VALUES ('old', 'write_log', '{}', 'succeeded', 1, $1, $2, $3)",
            first, first + timedelta(milliseconds=500), first + timedelta(milliseconds=550),
        )  # fmt: skip
        await db.execute(
            "INSERT INTO job_attempts (job_id, try, worker, started_at, finished_at, outcome) "
            "VALUES ('old', 1, 'w', $1, $2, 'succeeded')",
            first + timedelta(milliseconds=500), first + timedelta(milliseconds=550),
        )  # fmt: skip
        yield db, minute
    finally:
        await db.close()
        await drop_database(dsn)


FIRST = [0, 1, 2, 3, 4, 100]
SECOND = [5, 7, 10, 20, 30, 40]


def _expected(values: Sequence[float]) -> stats.Latency:
    p50, p95, p99 = (round(percentile_cont(values, f), 3) for f in stats.PERCENTILES)
    return stats.Latency(p50=p50, p95=p95, p99=p99)


async def test_pickup_latency_over_the_window(ledger_db: tuple[asyncpg.Connection, datetime]) -> None:
    db, _ = ledger_db
    assert (await stats.pickup_latency(db, minutes=WINDOW)).whole == _expected(FIRST + SECOND)


async def test_pickup_latency_per_minute(ledger_db: tuple[asyncpg.Connection, datetime]) -> None:
    db, minute = ledger_db
    by_minute = (await stats.pickup_latency(db, minutes=WINDOW)).by_minute
    assert by_minute == [
        stats.LatencyMinute(minute=minute - timedelta(minutes=3), latency=_expected(FIRST)),
        stats.LatencyMinute(minute=minute - timedelta(minutes=2), latency=_expected(SECOND)),
    ]


async def test_no_start_in_the_window_gives_no_latency(ledger_db: tuple[asyncpg.Connection, datetime]) -> None:
    db, _ = ledger_db
    pickups = await stats.pickup_latency(db, minutes=1)
    assert pickups == stats.Pickups(whole=stats.Latency(p50=None, p95=None, p99=None), by_minute=[])


async def test_throughput_per_minute(ledger_db: tuple[asyncpg.Connection, datetime]) -> None:
    db, minute = ledger_db
    per_minute = await stats.throughput(db, minutes=WINDOW)

    assert len(per_minute) == WINDOW
    assert per_minute[-1].minute >= minute
    ended = {m.minute: (m.succeeded, m.failed) for m in per_minute if m.succeeded or m.failed}
    assert ended == {minute - timedelta(minutes=3): (6, 1), minute - timedelta(minutes=2): (5, 1)}
