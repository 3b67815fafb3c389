"""Fixtures shared by unit and integration tests: a migrated throwaway database, an SMTP sink,
and Afterword in the test's process (``afterword_jobs``, from ``services.testing.plugin``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from tests.support.database import ADMIN_DSN, create_database, drop_database
from tests.support.redis_server import RedisServer
from tests.support.smtp_sink import SmtpSink

pytest_plugins = ["services.testing.plugin"]


@pytest.fixture(scope="session")
def afterword_postgres_url() -> str:
    """The role ``afterword_jobs`` creates its databases with: the one the other tests use."""
    return ADMIN_DSN


@pytest.fixture(scope="session")
async def database_dsn() -> AsyncIterator[str]:
    """A migrated database for this test session, dropped at its end."""
    dsn = await create_database()
    try:
        yield dsn
    finally:
        await drop_database(dsn)


@pytest.fixture(scope="session")
async def db_pool(database_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the session's database."""
    pool = await asyncpg.create_pool(database_dsn, min_size=1, max_size=8)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def conn(database_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside a transaction that is rolled back after the test."""
    connection = await asyncpg.connect(database_dsn)
    transaction = connection.transaction()
    await transaction.start()
    try:
        yield connection
    finally:
        await transaction.rollback()
        await connection.close()


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[SmtpSink]:
    """A real SMTP server in this process for the whole session."""
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A throwaway redis-server for unit tests (each test's client fixture flushes it)."""
    server = RedisServer(tmp_path_factory.mktemp("unit-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
