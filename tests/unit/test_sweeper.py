"""The recovery sweep against a real Redis and the test database: one case per branch."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.utils import to_unix_ms

from services import ledger
from services.contract import JobName, JobStatus
from services.core.serialization import deserialize, serialize
from services.jobs.sweeper import sweep
from tests.support.redis_server import RedisServer

QUEUE = "sweep-test:queue"
STORED_JOB = serialize({"f": "write_log", "a": [], "k": {}, "t": None, "et": 0})
"""A job key's content as ARQ stores it."""


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[ArqRedis]:
    async with redis_server.fresh_arq_client(QUEUE) as client:
        yield client


async def idle_job(db: asyncpg.Pool, status: JobStatus = JobStatus.queued, *, run_at: datetime | None = None) -> str:
    """A ledger row that has not changed for a minute."""
    job_id = uuid.uuid4().hex
    await ledger.insert_jobs(
        db,
        [
            ledger.NewJob(
                id=job_id,
                name=JobName.write_log,
                payload={"message": "swept"},
                status=status,
                run_at=run_at or datetime.now(UTC),
            )
        ],
    )
    await db.execute("UPDATE jobs SET updated_at = now() - interval '1 minute' WHERE id = $1", job_id)
    return job_id


async def test_a_job_redis_forgot_is_queued_again_under_its_id(db_pool: asyncpg.Pool, redis: ArqRedis) -> None:
    job_id = await idle_job(db_pool)

    report = await sweep(db=db_pool, redis=redis, queue_name=QUEUE, idle_seconds=30)

    assert job_id in report.requeued
    stored = deserialize(await redis.get(job_key_prefix + job_id))
    assert stored["f"] == "write_log"
    assert stored["a"] == [{"message": "swept"}]
    assert await redis.zscore(QUEUE, job_id) is not None


@pytest.mark.parametrize("status", [JobStatus.deferred, JobStatus.retrying])
async def test_a_job_due_later_keeps_its_time_when_queued_again(
    db_pool: asyncpg.Pool, redis: ArqRedis, status: JobStatus
) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    job_id = await idle_job(db_pool, status, run_at=later)

    report = await sweep(db=db_pool, redis=redis, queue_name=QUEUE, idle_seconds=30)

    assert job_id in report.requeued
    assert await redis.zscore(QUEUE, job_id) == to_unix_ms(later)


async def test_a_job_key_without_a_queue_entry_is_put_back_at_its_due_time(
    db_pool: asyncpg.Pool, redis: ArqRedis
) -> None:
    due = datetime.now(UTC) - timedelta(seconds=5)
    job_id = await idle_job(db_pool, run_at=due)
    await redis.set(job_key_prefix + job_id, STORED_JOB)

    report = await sweep(db=db_pool, redis=redis, queue_name=QUEUE, idle_seconds=30)

    assert job_id in report.restored
    assert job_id not in report.requeued
    assert await redis.zscore(QUEUE, job_id) == to_unix_ms(due)


@pytest.mark.parametrize("status", [JobStatus.deferred, JobStatus.retrying])
async def test_a_restored_job_due_later_keeps_its_due_time(
    db_pool: asyncpg.Pool, redis: ArqRedis, status: JobStatus
) -> None:
    """A deferred job, or one whose next try is scheduled (its due time is the ledger's run_at), waits."""
    later = datetime.now(UTC) + timedelta(hours=1)
    job_id = await idle_job(db_pool, status, run_at=later)
    await redis.set(job_key_prefix + job_id, STORED_JOB)

    report = await sweep(db=db_pool, redis=redis, queue_name=QUEUE, idle_seconds=30)

    assert job_id in report.restored
    assert await redis.zscore(QUEUE, job_id) == to_unix_ms(later)


async def test_a_job_arq_failed_without_running_is_marked_failed(db_pool: asyncpg.Pool, redis: ArqRedis) -> None:
    job_id = await idle_job(db_pool, JobStatus.in_progress)
    result = {"s": False, "r": "JobExecutionFailed: max 5 retries exceeded", "f": "write_log"}
    await redis.set(result_key_prefix + job_id, serialize(result))

    report = await sweep(db=db_pool, redis=redis, queue_name=QUEUE, idle_seconds=30)

    assert report.settled[job_id] is JobStatus.failed
    record = await ledger.get_job(db_pool, job_id)
    assert record is not None
    assert record.status is JobStatus.failed
    assert record.error == "JobExecutionFailed: max 5 retries exceeded"
    assert record.finished_at is not None


async def test_a_job_arq_finished_is_marked_succeeded_with_its_result(db_pool: asyncpg.Pool, redis: ArqRedis) -> None:
    job_id = await idle_job(db_pool, JobStatus.in_progress)
    await redis.set(result_key_prefix + job_id, serialize({"s": True, "r": {"written_now": True}}))

    report = await sweep(db=db_pool, redis=redis, queue_name=QUEUE, idle_seconds=30)

    assert report.settled[job_id] is JobStatus.succeeded
    record = await ledger.get_job(db_pool, job_id)
    assert record is not None
    assert record.status is JobStatus.succeeded
    assert record.result == {"written_now": True}


async def test_a_running_or_waiting_job_is_left_alone(db_pool: asyncpg.Pool, redis: ArqRedis) -> None:
    running = await idle_job(db_pool, JobStatus.in_progress)
    await redis.set(in_progress_key_prefix + running, b"1")
    waiting = await idle_job(db_pool)
    await redis.set(job_key_prefix + waiting, STORED_JOB)
    await redis.zadd(QUEUE, {waiting: time.time() * 1000})

    report = await sweep(db=db_pool, redis=redis, queue_name=QUEUE, idle_seconds=30)

    for job_id in (running, waiting):
        assert job_id not in report.requeued
        assert job_id not in report.restored
        assert job_id not in report.settled
    record = await ledger.get_job(db_pool, running)
    assert record is not None
    assert record.status is JobStatus.in_progress


async def test_a_recently_changed_row_is_not_checked(db_pool: asyncpg.Pool, redis: ArqRedis) -> None:
    job_id = await idle_job(db_pool)
    await db_pool.execute("UPDATE jobs SET updated_at = clock_timestamp() WHERE id = $1", job_id)

    report = await sweep(db=db_pool, redis=redis, queue_name=QUEUE, idle_seconds=30)

    assert job_id not in report.requeued
    assert not await redis.exists(job_key_prefix + job_id)


async def test_a_final_job_is_never_touched(db_pool: asyncpg.Pool, redis: ArqRedis) -> None:
    job_id = await idle_job(db_pool)
    await ledger.settle(db_pool, job_id=job_id, status=JobStatus.cancelled, error="cancelled by request")
    await db_pool.execute("UPDATE jobs SET updated_at = now() - interval '1 minute' WHERE id = $1", job_id)

    report = await sweep(db=db_pool, redis=redis, queue_name=QUEUE, idle_seconds=30)

    assert job_id not in report.requeued
    assert not await redis.exists(job_key_prefix + job_id)
