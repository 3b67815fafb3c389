"""``afterword_enqueue`` (migration 0012) and the ``job_kinds`` it checks, against the session's database.

Most tests run in the rolled-back ``conn``; a refusal is caught inside a savepoint, so the test
can look at what the transaction holds afterwards. The notification tests commit on their own
connections: a notification exists only once its transaction commits.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services import ledger
from services.contract import JobName, JobStatus
from services.gateway.identifiers import is_id
from services.ledger import job_kinds
from services.ledger.relay import CHANNEL, recent, waiting

EMAIL = {"to": "ada@example.com", "subject": "Hi", "body": "Hello"}


async def _enqueue(conn: asyncpg.Connection, name: str, payload: object, **options: object) -> str:
    arguments = ", ".join(f"p_{key} => ${i}" for i, key in enumerate(options, start=3))
    job_id: str = await conn.fetchval(
        f"SELECT afterword_enqueue($1, $2::jsonb{', ' if options else ''}{arguments})",
        name,
        json.dumps(payload),
        *options.values(),
    )
    return job_id


async def _refused(conn: asyncpg.Connection, name: str, payload: object, **options: object) -> str:
    """The message of the refusal (SQLSTATE 22023), raised inside a savepoint that is rolled back."""
    with pytest.raises(asyncpg.InvalidParameterValueError) as refused:
        async with conn.transaction():
            await _enqueue(conn, name, payload, **options)
    assert refused.value.sqlstate == "22023"
    return str(refused.value)


async def _jobs(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM jobs")
    return count


async def test_a_job_is_written_as_the_gateway_writes_one(conn: asyncpg.Connection) -> None:
    before = await conn.fetchval("SELECT clock_timestamp()")

    job_id = await _enqueue(conn, "send_email", EMAIL)

    assert is_id(job_id)
    assert uuid.UUID(job_id).version == 4
    record = await ledger.get_job(conn, job_id)
    assert record is not None
    assert (record.name, record.payload, record.status, record.tries) == ("send_email", EMAIL, JobStatus.queued, 0)
    assert record.request_id is None
    assert before <= record.enqueued_at == record.run_at
    assert record.started_at is None


async def test_each_call_makes_a_new_id(conn: asyncpg.Connection) -> None:
    ids = {await _enqueue(conn, "write_log", {"message": str(n)}) for n in range(20)}

    assert len(ids) == 20
    assert all(is_id(job_id) for job_id in ids)


async def test_defer_by_defers_the_job_by_that_many_seconds(conn: asyncpg.Connection) -> None:
    job_id = await _enqueue(conn, "write_log", {"message": "later"}, defer_by=90.5)

    record = await ledger.get_job(conn, job_id)
    assert record is not None
    assert record.status is JobStatus.deferred
    assert record.run_at - record.enqueued_at == timedelta(seconds=90.5)


async def test_a_run_at_ahead_defers_to_it_and_one_past_runs_now(conn: asyncpg.Connection) -> None:
    ahead = datetime.now(UTC) + timedelta(hours=2)
    later = await _enqueue(conn, "write_log", {"message": "tonight"}, run_at=ahead)
    now = await _enqueue(conn, "write_log", {"message": "now"}, run_at=datetime.now(UTC) - timedelta(hours=1))

    deferred, queued = await ledger.get_job(conn, later), await ledger.get_job(conn, now)
    assert deferred is not None
    assert queued is not None
    assert (deferred.status, deferred.run_at) == (JobStatus.deferred, ahead)
    assert (queued.status, queued.run_at) == (JobStatus.queued, queued.enqueued_at)


async def test_a_given_id_is_used(conn: asyncpg.Connection) -> None:
    mine = uuid.uuid4().hex

    assert await _enqueue(conn, "write_log", {"message": "mine"}, id=mine) == mine
    assert await ledger.get_job(conn, mine) is not None


async def test_an_id_taken_already_is_a_unique_violation(conn: asyncpg.Connection) -> None:
    mine = await _enqueue(conn, "write_log", {"message": "once"})

    with pytest.raises(asyncpg.UniqueViolationError):
        await _enqueue(conn, "write_log", {"message": "twice"}, id=mine)


async def test_an_unknown_name_is_refused_naming_it_and_the_known_ones(conn: asyncpg.Connection) -> None:
    before = await _jobs(conn)

    message = await _refused(conn, "send_emial", EMAIL)

    assert "unknown job name 'send_emial'" in message
    assert all(name.value in message for name in JobName)
    assert await _jobs(conn) == before


async def test_a_payload_that_is_not_an_object_is_refused(conn: asyncpg.Connection) -> None:
    assert "must be a JSON object, not array" in await _refused(conn, "write_log", ["hello"])
    assert "must be a JSON object, not string" in await _refused(conn, "write_log", "hello")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="not NULL"):
        async with conn.transaction():
            await conn.fetchval("SELECT afterword_enqueue('write_log', NULL)")


async def test_a_field_the_job_does_not_have_is_refused_naming_it(conn: asyncpg.Connection) -> None:
    message = await _refused(conn, "send_email", {**EMAIL, "too": "eve@example.com"})

    assert "send_email has no field(s) too" in message
    assert "to, subject, body, mark_welcome_sent" in message


async def test_a_missing_required_field_is_refused_naming_it(conn: asyncpg.Connection) -> None:
    message = await _refused(conn, "send_email", {"subject": "Hi"})

    assert "lacks the required field(s) body, to" in message


async def test_a_field_with_a_default_may_be_left_out(conn: asyncpg.Connection) -> None:
    job_id = await _enqueue(conn, "send_email", EMAIL)  # without mark_welcome_sent

    assert is_id(job_id)
    assert is_id(await _enqueue(conn, "cleanup_temp_files", {}))


async def test_delays_beyond_the_gateways_bounds_are_refused(conn: asyncpg.Connection) -> None:
    log = {"message": "x"}
    assert "p_defer_by must be 0 to 604800" in await _refused(conn, "write_log", log, defer_by=-1.0)
    assert "p_defer_by must be 0 to 604800" in await _refused(conn, "write_log", log, defer_by=8 * 86400.0)
    assert "p_defer_by must be 0 to 604800" in await _refused(conn, "write_log", log, defer_by=float("nan"))
    far = datetime.now(UTC) + timedelta(days=8)
    assert "at most 7 days ahead" in await _refused(conn, "write_log", log, run_at=far)
    assert "not both" in await _refused(conn, "write_log", log, defer_by=1.0, run_at=datetime.now(UTC))


async def test_an_id_the_gateway_would_refuse_is_refused(conn: asyncpg.Connection) -> None:
    for bad in ("", "ABCDEF" + "0" * 26, "0" * 31, "0" * 33, "x" * 32):
        assert "p_id must be 32 lowercase hex digits" in await _refused(conn, "write_log", {"message": "x"}, id=bad)


# The notification: only at the commit, never after a rollback


@pytest.fixture
async def listener(database_dsn: str) -> AsyncIterator[asyncio.Queue[str]]:
    """The ids notified on the relay's channel, as they arrive."""
    heard: asyncio.Queue[str] = asyncio.Queue()
    connection = await asyncpg.connect(database_dsn)
    await connection.add_listener(CHANNEL, lambda *args: heard.put_nowait(str(args[3])))
    try:
        yield heard
    finally:
        await connection.close()


async def test_the_id_is_notified_when_the_transaction_commits(database_dsn: str, listener: asyncio.Queue[str]) -> None:
    connection = await asyncpg.connect(database_dsn)
    try:
        async with connection.transaction():
            job_id = await _enqueue(connection, "write_log", {"message": "committed"})
            await asyncio.sleep(0.2)
            assert listener.empty()  # not before the commit
        assert await asyncio.wait_for(listener.get(), timeout=5) == job_id
    finally:
        await connection.close()


async def test_a_rolled_back_enqueue_notifies_nothing_and_leaves_no_row(
    database_dsn: str, listener: asyncio.Queue[str]
) -> None:
    connection = await asyncpg.connect(database_dsn)
    try:
        transaction = connection.transaction()
        await transaction.start()
        rolled_back = await _enqueue(connection, "write_log", {"message": "rolled back"})
        await transaction.rollback()
        committed = await _enqueue(connection, "write_log", {"message": "committed after"})  # its own transaction

        assert await asyncio.wait_for(listener.get(), timeout=5) == committed
        assert listener.empty()
        assert await ledger.get_job(connection, rolled_back) is None
    finally:
        await connection.close()


# What the relay reads


async def test_the_relay_reads_only_jobs_still_waiting(conn: asyncpg.Connection) -> None:
    queued = await _enqueue(conn, "write_log", {"message": "waiting"})
    deferred = await _enqueue(conn, "write_log", {"message": "later"}, defer_by=60.0)
    started = await _enqueue(conn, "write_log", {"message": "started"})
    await conn.execute("UPDATE jobs SET status = 'in_progress', tries = 1 WHERE id = $1", started)

    found = {job.id: job for job in await waiting(conn, [queued, deferred, started, uuid.uuid4().hex])}

    assert set(found) == {queued, deferred}
    assert found[queued].name is JobName.write_log
    assert found[queued].payload == {"message": "waiting"}
    assert found[deferred].status is JobStatus.deferred
    assert {job.id for job in await recent(conn, within_seconds=60, limit=1000)} >= {queued, deferred}
    await conn.execute("UPDATE jobs SET enqueued_at = enqueued_at - interval '2 minutes' WHERE id = $1", queued)
    assert queued not in {job.id for job in await recent(conn, within_seconds=60, limit=1000)}


# job_kinds, written from the contract


async def test_job_kinds_hold_the_contracts_jobs_after_migrating(conn: asyncpg.Connection) -> None:
    kinds = {kind.name: kind for kind in await job_kinds.known(conn)}

    assert set(kinds) >= {name.value for name in JobName}
    email = kinds["send_email"]
    assert email.fields == ("to", "subject", "body", "mark_welcome_sent")
    assert email.required == ("to", "subject", "body")
    assert kinds["cleanup_temp_files"] == job_kinds.JobKind("cleanup_temp_files", (), ())
    assert [kinds[name.value] for name in JobName] == job_kinds.contract_kinds()


async def test_sync_updates_a_changed_kind_and_keeps_one_the_contract_dropped(conn: asyncpg.Connection) -> None:
    await conn.execute("UPDATE job_kinds SET fields = '{message,old}', required = '{old}' WHERE name = 'write_log'")
    await conn.execute("INSERT INTO job_kinds (name, fields, required) VALUES ('retired_job', NULL, '{}')")

    await job_kinds.sync(conn)
    await job_kinds.sync(conn)  # twice: the same

    kinds = {kind.name: kind for kind in await job_kinds.known(conn)}
    assert kinds["write_log"] == job_kinds.JobKind("write_log", ("message",), ("message",))
    assert kinds["retired_job"] == job_kinds.JobKind("retired_job", None, ())
    assert is_id(await _enqueue(conn, "retired_job", {"anything": [1, 2]}))  # NULL fields: any payload object
