"""A large ledger made in one statement, and a gateway on it, for the tests of the counts per status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from services.contract import JobStatus
from tests.support.database import create_database, drop_database
from tests.support.lone_gateway import lone_gateway

LEDGER = {JobStatus.succeeded: 28_500, JobStatus.failed: 1_200, JobStatus.queued: 300}
"""How many jobs of each status :func:`fill_ledger` writes; the other statuses get none."""

EXACT_LIMIT = 5_000
"""The ``STATS_EXACT_COUNT_LIMIT`` of :func:`estimating_gateway`: only ``succeeded`` is above it."""


async def fill_ledger(db: asyncpg.Connection) -> None:
    """Write the jobs of :data:`LEDGER` (ids ``bulk-<n>``), then ANALYZE, as autovacuum would."""
    first = 0
    for status, count in LEDGER.items():
        await db.execute(
            "INSERT INTO jobs (id, name, payload, status) "
            "SELECT 'bulk-' || n, 'write_log', '{\"message\": \"bulk\"}', $3 FROM generate_series($1::int, $2::int) n",
            first,
            first + count - 1,
            status.value,
        )
        first += count
    await db.execute("ANALYZE jobs")


@asynccontextmanager
async def large_ledger() -> AsyncIterator[str]:
    """A migrated database holding the jobs of :data:`LEDGER`; yields its DSN, drops it after."""
    dsn = await create_database("afterword_counts")
    try:
        db = await asyncpg.connect(dsn)
        try:
            await fill_ledger(db)
        finally:
            await db.close()
        yield dsn
    finally:
        await drop_database(dsn)


@asynccontextmanager
async def estimating_gateway(workdir: Path, *, label: str) -> AsyncIterator[str]:
    """A gateway (no worker, no API key) on :func:`large_ledger` with ``EXACT_LIMIT``; yields its URL."""
    async with (
        large_ledger() as dsn,
        lone_gateway(
            workdir,
            api_keys="",
            label=label,
            database_dsn=dsn,
            extra_env={"STATS_EXACT_COUNT_LIMIT": str(EXACT_LIMIT)},
        ) as (url, _gateway),
    ):
        yield url
