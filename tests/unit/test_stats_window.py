"""The window figures of ``GET /stats`` (throughput, pickup latency) on a ledger written by hand.

Each first attempt carries the due time its start recorded (``due_at``, migration 0007) as
``afterword_start_attempt`` writes it: its job's ``run_at`` at that moment.

A database of its own, so that nothing else lands in the window. The jobs sit 3 and 2 minutes
before the minute the module starts in, inside a 10-minute window even if a minute turns during
the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.gateway.settled_minutes import READ_MINUTES, SettledMinutes
from services.ledger import Executor, stats
from tests.support.database import create_database, drop_database
from tests.support.percentiles import percentile_cont

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

    def attempts(self) -> list[Attempt]:
        """Its attempts, each recording ``run_at`` as its due time."""
        starts = [self.run_at + timedelta(milliseconds=self.pickup_ms, seconds=k) for k in range(self.try_)]
        return [Attempt(start, start + timedelta(milliseconds=self.finished_ms), self.run_at) for start in starts]


@dataclass(frozen=True)
class Attempt:
    """An attempt's start and end, and the due time it recorded (None: started before migration 0007)."""

    start: datetime
    end: datetime
    due: datetime | None


async def _write_job(
    db: asyncpg.Connection, job_id: str, status: str, run_at: datetime, attempts: Sequence[Attempt]
) -> None:
    """A job and its attempts, the job's start and end those of its last attempt."""
    await db.execute(
        "INSERT INTO jobs (id, name, payload, status, tries, run_at, started_at, finished_at) "
        "VALUES ($1, 'write_log', '{}', $2, $3, $4, $5, $6)",
        job_id, status, len(attempts), run_at, attempts[-1].start, attempts[-1].end,
    )  # fmt: skip
    for number, attempt in enumerate(attempts, start=1):
        await db.execute(
            "INSERT INTO job_attempts (job_id, try, worker, started_at, finished_at, outcome, due_at) "
            "VALUES ($1, $2, 'w', $3, $4, $5, $6)",
            job_id, number, attempt.start, attempt.end, status, attempt.due,
        )  # fmt: skip


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
    try:
        for i, row in enumerate(rows):
            await _write_job(db, f"w{i}", row.status, row.run_at, row.attempts())
        # Run again by POST /jobs/{id}/retry: a new run_at after its first attempt ended, which
        # keeps the due time it started against (5 ms before it).
        rerun, ms = second + timedelta(seconds=30), timedelta(milliseconds=1)
        again = [
            Attempt(
                second + timedelta(seconds=20), second + timedelta(seconds=21), second + timedelta(seconds=20) - 5 * ms
            )
        ]
        await _write_job(db, "rerun", "succeeded", rerun, [*again, Attempt(rerun + 3 * ms, rerun + 9 * ms, rerun)])
        # Started before migration 0007: no due time, left out.
        await _write_job(db, "old", "succeeded", first, [Attempt(first + 500 * ms, first + 550 * ms, None)])
        yield db, minute
    finally:
        await db.close()
        await drop_database(dsn)


FIRST = [0, 1, 2, 3, 4, 100]
SECOND = [5, 7, 10, 20, 30, 40]


def _expected(values: Sequence[float]) -> stats.Latency:
    p50, p95, p99 = (round(percentile_cont(values, f), 3) for f in stats.PERCENTILES)
    return stats.Latency(p50=p50, p95=p95, p99=p99)


def _close(found: stats.Latency, expected: stats.Latency) -> bool:
    """Within 1 % (a window's percentiles come from histograms), or exactly for 0."""
    return [found.p50, found.p95, found.p99] == pytest.approx(
        [expected.p50, expected.p95, expected.p99], rel=0.01, abs=1e-9
    )


async def _window(db: asyncpg.Connection, minutes: int) -> stats.Window:
    """The window as GET /stats computes it, on a fresh cache (every minute read, settled or not)."""
    return await SettledMinutes().window(db, minutes=minutes)


async def test_pickup_latency_over_the_window(ledger_db: tuple[asyncpg.Connection, datetime]) -> None:
    db, _ = ledger_db
    assert _close((await _window(db, WINDOW)).pickups.whole, _expected(FIRST + SECOND))


async def test_pickup_latency_per_minute_is_exact(ledger_db: tuple[asyncpg.Connection, datetime]) -> None:
    db, minute = ledger_db
    by_minute = (await _window(db, WINDOW)).pickups.by_minute
    assert by_minute == [
        stats.LatencyMinute(minute=minute - timedelta(minutes=3), latency=_expected(FIRST)),
        stats.LatencyMinute(minute=minute - timedelta(minutes=2), latency=_expected(SECOND)),
    ]


async def test_no_start_in_the_window_gives_no_latency(ledger_db: tuple[asyncpg.Connection, datetime]) -> None:
    db, _ = ledger_db
    pickups = (await _window(db, 1)).pickups
    assert pickups == stats.Pickups(whole=stats.Latency(p50=None, p95=None, p99=None), by_minute=[])


async def test_throughput_per_minute(ledger_db: tuple[asyncpg.Connection, datetime]) -> None:
    db, minute = ledger_db
    per_minute = (await _window(db, WINDOW)).throughput

    assert len(per_minute) == WINDOW
    assert per_minute[-1].minute >= minute
    assert [m.minute for m in per_minute] == [per_minute[0].minute + k * stats.MINUTE for k in range(WINDOW)]
    ended = {m.minute: (m.succeeded, m.failed) for m in per_minute if m.succeeded or m.failed}
    assert ended == {minute - timedelta(minutes=3): (6, 1), minute - timedelta(minutes=2): (5, 1)}


# --- Settled minutes are read once ----------------------------------------------------------------


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[datetime, datetime]]:
    """The ranges of minutes read from the ledger, from first to end (excluded)."""
    ranges: list[tuple[datetime, datetime]] = []
    read = stats.minute_figures

    async def recorded(db: Executor, first: datetime, end: datetime) -> list[stats.MinuteFigures]:
        ranges.append((first, end))
        return await read(db, first, end)

    monkeypatch.setattr(stats, "minute_figures", recorded)
    return ranges


async def test_settled_minutes_are_read_once_and_give_the_same_window(
    ledger_db: tuple[asyncpg.Connection, datetime], reads: list[tuple[datetime, datetime]]
) -> None:
    db, _ = ledger_db
    settled = SettledMinutes()
    first = await settled.window(db, minutes=WINDOW)
    second = await settled.window(db, minutes=WINDOW)
    now = (await db.fetchval("SELECT now()")).astimezone(UTC)

    assert second == first or second.throughput[0].minute > first.throughput[0].minute  # or a minute turned
    (_, current_end), *_ = reversed(reads)
    assert current_end == now.replace(second=0, microsecond=0) + stats.MINUTE
    # The first call read every minute of the window; the second only those not settled yet,
    # which start at most 30 s (SETTLE) before now.
    assert reads[0][0] == first.throughput[0].minute
    assert len(reads) == 3
    assert reads[2][0] == reads[1][0] >= now - timedelta(minutes=1, seconds=30)


async def test_a_minute_not_settled_is_read_again(reads: list[tuple[datetime, datetime]]) -> None:
    dsn = await create_database("afterword_window_fresh")
    db = await asyncpg.connect(dsn)
    try:
        settled = SettledMinutes(settle=timedelta(days=1))  # nothing is settled
        before = await settled.window(db, minutes=2)
        now = await db.fetchval("SELECT now()")
        await _write_job(db, "new", "succeeded", now, Row("succeeded", now, 3.0).attempts())
        after = await settled.window(db, minutes=2)

        ended = sum(m.succeeded for m in after.throughput) - sum(m.succeeded for m in before.throughput)
        assert ended == 1
        assert _close(after.pickups.whole, stats.Latency(p50=3.0, p95=3.0, p99=3.0))
        assert all(first == before.throughput[0].minute for first, _ in reads)
    finally:
        await db.close()
        await drop_database(dsn)


async def test_a_settled_minute_is_not_read_again(reads: list[tuple[datetime, datetime]]) -> None:
    dsn = await create_database("afterword_window_settled")
    db = await asyncpg.connect(dsn)
    try:
        settled = SettledMinutes(settle=timedelta(0))  # every minute before the current one is settled
        minute = (await db.fetchval("SELECT date_trunc('minute', now())")).astimezone(UTC)
        await settled.window(db, minutes=3)
        # Written after the first call into a minute already kept (the ledger never does that):
        # the second call does not read it.
        at = minute - timedelta(minutes=1, seconds=-5)
        await _write_job(db, "late", "succeeded", at, Row("succeeded", at, 3.0).attempts())
        window = await settled.window(db, minutes=3)

        assert sum(m.succeeded for m in window.throughput) == 0
        assert window.pickups.whole == stats.Latency(p50=None, p95=None, p99=None)
        assert len(reads) >= 3  # the first call read the settled minutes, then the current one
        assert all(first > at for first, _ in reads[2:])
    finally:
        await db.close()
        await drop_database(dsn)


@pytest.fixture
async def empty_db() -> AsyncIterator[asyncpg.Pool]:
    """A pool, as the gateway's: a read given up goes on while the next call queries."""
    dsn = await create_database("afterword_window_empty")
    db = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        yield db
    finally:
        await db.close()
        await drop_database(dsn)


async def test_a_long_window_is_read_in_short_runs(
    empty_db: asyncpg.Pool, reads: list[tuple[datetime, datetime]]
) -> None:
    window = await SettledMinutes(settle=timedelta(0)).window(empty_db, minutes=40)

    assert len(window.throughput) == 40
    assert all(end - first <= READ_MINUTES * stats.MINUTE for first, end in reads)
    covered = [m for first, end in reads for m in stats.minutes_between(first, end)]
    assert covered == [m.minute for m in window.throughput]  # each minute read once, in order
    assert len(reads) >= 4  # 39 settled minutes in runs of 15, then the current one


async def test_a_call_does_not_wait_for_another_ones_read_and_a_read_given_up_is_kept(
    empty_db: asyncpg.Pool, reads: list[tuple[datetime, datetime]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settled = SettledMinutes(settle=timedelta(0))
    await settled.window(empty_db, minutes=3)  # the last 2 settled minutes kept
    held, release = asyncio.Event(), asyncio.Event()
    read = stats.minute_figures
    old = (await empty_db.fetchval("SELECT date_trunc('minute', now())")) - timedelta(minutes=10)

    asked: list[tuple[datetime, datetime]] = []  # every read begun, also one cancelled before its query

    async def slow(db: Executor, first: datetime, end: datetime) -> list[stats.MinuteFigures]:
        asked.append((first, end))
        if first < old:  # the long window's old minutes: held until released
            held.set()
            await release.wait()
        return await read(db, first, end)

    monkeypatch.setattr(stats, "minute_figures", slow)
    long_call = asyncio.create_task(settled.window(empty_db, minutes=60))
    await asyncio.wait_for(held.wait(), 5)
    short = await asyncio.wait_for(settled.window(empty_db, minutes=3), 5)  # not behind the held read
    assert len(short.throughput) == 3

    long_call.cancel()  # its client went away; the read it started goes on
    with pytest.raises(asyncio.CancelledError):
        await long_call
    release.set()
    window = await asyncio.wait_for(settled.window(empty_db, minutes=60), 5)

    assert len(window.throughput) == 60
    held_run = next(run for run in asked if run[0] < old)
    assert held_run[1] - held_run[0] == READ_MINUTES * stats.MINUTE
    assert asked.count(held_run) == 1  # kept from the call given up, not read again
