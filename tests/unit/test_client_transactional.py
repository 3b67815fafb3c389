"""The client's ``enqueue_in_transaction`` on a real asyncpg connection to the session's database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from afterword_client import CleanupTempFiles, SendEmail, WriteLog
from afterword_client.transactional import enqueue_in_transaction
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from services import ledger
from services.contract import JobStatus
from services.gateway.identifiers import is_id


async def _job(conn: asyncpg.Connection, job_id: str) -> ledger.JobRecord:
    record = await ledger.get_job(conn, job_id)
    assert record is not None
    return record


async def test_a_payload_model_is_written_as_its_job_with_its_defaults(conn: asyncpg.Connection) -> None:
    job_id = await enqueue_in_transaction(conn, SendEmail(to="ada@example.com", subject="Hi", body="Hello"))

    record = await _job(conn, job_id)
    assert is_id(job_id)
    assert record.name == "send_email"
    assert record.payload == {"to": "ada@example.com", "subject": "Hi", "body": "Hello", "mark_welcome_sent": False}
    assert record.status is JobStatus.queued


async def test_a_job_by_name_is_validated_by_its_model_first(conn: asyncpg.Connection) -> None:
    job_id = await enqueue_in_transaction(conn, "write_log", {"message": "by name"})
    assert (await _job(conn, job_id)).payload == {"message": "by name"}

    with pytest.raises(ValidationError, match="to"):
        await enqueue_in_transaction(conn, "send_email", {"to": "not an address", "subject": "Hi", "body": ""})


async def test_a_name_the_client_does_not_know_is_left_to_the_database(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.InvalidParameterValueError, match="unknown job name 'send_emial'"):
        await enqueue_in_transaction(conn, "send_emial", {"to": "ada@example.com"})


async def test_defer_by_and_run_at_delay_the_job(conn: asyncpg.Connection) -> None:
    later = await enqueue_in_transaction(conn, WriteLog(message="later"), defer_by=timedelta(minutes=5))
    tonight = datetime.now(UTC) + timedelta(hours=6)
    at = await enqueue_in_transaction(conn, CleanupTempFiles(), run_at=tonight)

    deferred = await _job(conn, later)
    assert deferred.status is JobStatus.deferred
    assert deferred.run_at - deferred.enqueued_at == timedelta(minutes=5)
    assert (await _job(conn, at)).run_at == tonight


async def test_a_given_job_id_is_used(conn: asyncpg.Connection) -> None:
    mine = uuid.uuid4().hex

    assert await enqueue_in_transaction(conn, WriteLog(message="mine"), job_id=mine) == mine


async def test_what_cannot_be_sent_is_refused_before_anything_is(conn: asyncpg.Connection) -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="not both"):
        await enqueue_in_transaction(conn, WriteLog(message="x"), defer_by=1, run_at=now)
    with pytest.raises(ValueError, match="timezone-aware"):
        await enqueue_in_transaction(conn, WriteLog(message="x"), run_at=now.replace(tzinfo=None))
    with pytest.raises(TypeError, match="carries its payload"):
        await enqueue_in_transaction(conn, WriteLog(message="x"), {"message": "y"})  # type: ignore[call-overload]


async def test_outside_a_transaction_it_refuses(database_dsn: str) -> None:
    connection = await asyncpg.connect(database_dsn)
    try:
        with pytest.raises(RuntimeError, match="needs an open transaction"):
            await enqueue_in_transaction(connection, WriteLog(message="autocommitted"))
        assert await connection.fetchval("SELECT count(*) FROM jobs WHERE payload->>'message' = 'autocommitted'") == 0
    finally:
        await connection.close()


# SQLAlchemy: an AsyncSession and an AsyncConnection on the session's database, through asyncpg.


@pytest.fixture
async def engine(database_dsn: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        yield engine
    finally:
        await engine.dispose()


async def _committed(database_dsn: str, job_id: str) -> ledger.JobRecord | None:
    """The job's row as another connection sees it: there once its transaction committed."""
    connection = await asyncpg.connect(database_dsn)
    try:
        return await ledger.get_job(connection, job_id)
    finally:
        await connection.close()


async def test_an_sqlalchemy_session_writes_the_job_with_its_commit(engine: AsyncEngine, database_dsn: str) -> None:
    async with AsyncSession(engine) as session, session.begin():
        job_id = await enqueue_in_transaction(session, WriteLog(message="from a session"), defer_by=30)
        assert await _committed(database_dsn, job_id) is None  # not before the commit

    record = await _committed(database_dsn, job_id)
    assert record is not None
    assert (record.name, record.payload, record.status) == ("write_log", {"message": "from a session"}, "deferred")


async def test_an_sqlalchemy_rollback_leaves_no_job(engine: AsyncEngine, database_dsn: str) -> None:
    async with engine.connect() as connection:
        transaction = await connection.begin()
        job_id = await enqueue_in_transaction(connection, "write_log", {"message": "rolled back"})
        await transaction.rollback()

    assert is_id(job_id)
    assert await _committed(database_dsn, job_id) is None


async def test_an_sqlalchemy_session_gets_the_databases_refusal(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session, session.begin():
        with pytest.raises(DBAPIError, match="unknown job name 'send_emial'"):
            await enqueue_in_transaction(session, "send_emial", {"to": "ada@example.com"})


async def test_something_that_is_no_connection_is_refused() -> None:
    with pytest.raises(TypeError, match="not an asyncpg connection nor an SQLAlchemy"):
        await enqueue_in_transaction(object(), WriteLog(message="x"))  # type: ignore[call-overload]
