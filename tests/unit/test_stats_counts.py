"""Jobs per status (``stats.jobs_by_status``) on a ledger of 30,000 jobs in a database of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.contract import JobStatus
from services.ledger import stats
from tests.support.ledger_rows import EXACT_LIMIT, LEDGER, large_ledger


@pytest.fixture(scope="module")
async def ledger_dsn() -> AsyncIterator[str]:
    async with large_ledger() as dsn:
        yield dsn


@pytest.fixture
async def db(ledger_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(ledger_dsn)
    yield connection
    await connection.close()


async def _rows_read_by_seq_scans(db: asyncpg.Connection) -> int:
    """Rows of ``jobs`` read by sequential scans so far, this connection's included."""
    await db.execute("SELECT pg_stat_force_next_flush()")  # flushed when the connection goes idle
    await db.execute("SELECT pg_stat_clear_snapshot()")
    read: int = await db.fetchval("SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'jobs'")
    return read


async def test_a_status_above_the_limit_is_estimated_the_others_counted(db: asyncpg.Connection) -> None:
    result = await stats.jobs_by_status(db, exact_limit=EXACT_LIMIT)

    assert result.estimated == {JobStatus.succeeded}
    assert result.counts[JobStatus.succeeded] == pytest.approx(LEDGER[JobStatus.succeeded], rel=0.05)
    exact = {status: LEDGER.get(status, 0) for status in JobStatus if status is not JobStatus.succeeded}
    assert {status: result.counts[status] for status in exact} == exact
    assert list(result.counts) == list(JobStatus)


async def test_under_a_high_limit_every_status_is_counted_exactly(db: asyncpg.Connection) -> None:
    result = await stats.jobs_by_status(db, exact_limit=1_000_000)

    assert result.estimated == frozenset()
    assert result.counts == {status: LEDGER.get(status, 0) for status in JobStatus}


async def test_counting_reads_no_row_of_the_large_statuses(db: asyncpg.Connection) -> None:
    before = await _rows_read_by_seq_scans(db)
    await stats.jobs_by_status(db, exact_limit=EXACT_LIMIT)
    after = await _rows_read_by_seq_scans(db)
    # The measure does see a read of the whole table: count(*) over a column no index holds.
    await db.fetchval("SELECT count(*) FROM jobs WHERE payload IS NOT NULL")
    whole = await _rows_read_by_seq_scans(db)

    assert after == before
    assert whole - after == sum(LEDGER.values())
