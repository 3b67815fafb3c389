"""The worker woken by work: it starts jobs without waiting for its (here very long) poll delay.

No timings are asserted beyond "long before the next poll": with ``poll_delay=60`` a job that runs
within a few seconds was started by a wake-up (a message, a freed slot, a due time), not a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from arq.jobs import Job, JobStatus, SerializationError
from arq.worker import Function, func

from services import ledger
from services.contract import JobStatus as LedgerStatus
from services.core.serialization import deserialize, serialize
from services.jobs.attempts import AttemptBook, End, Operation, Written
from services.queue import ends
from services.queue import enqueue as queue
from services.queue.leases import LeaseKeeper
from services.queue.worker import QueueWorker
from tests.support.ledger_jobs import insert_job
from tests.support.redis_server import RedisServer

QUEUE = "wakeup-test:queue"
LONG_POLL = 60.0
SOON = 10.0
"""Generous: only says the job did not wait for a poll."""


def arq_redis(server: RedisServer) -> ArqRedis:
    return server.arq_client(QUEUE)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[ArqRedis]:
    async with redis_server.fresh_arq_client(QUEUE) as client:
        yield client


class Ran:
    """What the test jobs did."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.changed = asyncio.Event()


def worker_for(server: RedisServer, ran: Ran, **options: Any) -> QueueWorker:
    async def record(ctx: dict[str, Any], message: str, seconds: float = 0) -> str:
        await asyncio.sleep(seconds)
        ran.messages.append(message)
        ran.changed.set()
        return message

    return worker_with(server, [func(record, name="record")], **options)


def worker_with(server: RedisServer, functions: list[Function], **options: Any) -> QueueWorker:
    """Our worker on the test queue, with a very long poll delay unless told otherwise."""
    return QueueWorker(
        functions,
        redis_pool=arq_redis(server),
        queue_name=QUEUE,
        job_serializer=serialize,
        job_deserializer=deserialize,
        handle_signals=False,
        **{"poll_delay": LONG_POLL, **options},
    )


@contextlib.asynccontextmanager
async def running(worker: QueueWorker, redis: ArqRedis) -> AsyncIterator[QueueWorker]:
    """Run ``worker`` until the block ends; enter once it listens on the wake channel."""
    task = asyncio.create_task(worker.async_run())
    channel = queue.wake_channel(QUEUE)
    try:
        await soon(lambda: subscribed(redis, channel))
        yield worker
    finally:
        await stop(worker, task)


async def stop(worker: QueueWorker, task: asyncio.Task[None] | None = None) -> None:
    """What ``QueueWorker.close`` does, minus redis-py's deprecated ``close()`` of the pool."""
    worker.handle_sig(signal.SIGUSR1)  # cancels the running jobs and the main loop
    if task is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
    await worker.pool.aclose(close_connection_pool=True)


async def soon(condition: Callable[[], Awaitable[bool]]) -> None:
    """Wait until ``condition`` holds (at most :data:`SOON` seconds)."""
    async with asyncio.timeout(SOON):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.01)


async def subscribed(redis: ArqRedis, channel: str) -> bool:
    return bool((await redis.pubsub_numsub(channel))[0][1])


async def running_now(job: Job) -> bool:
    return await job.status() is JobStatus.in_progress


async def enqueue(redis: ArqRedis, message: str, *, seconds: float = 0, defer_by: float = 0) -> str:
    job_id = uuid.uuid4().hex
    run_at = datetime.now(UTC) + timedelta(seconds=defer_by) if defer_by else None
    entry = queue.Entry("record", job_id, args=(message,), kwargs={"seconds": seconds}, defer_until=run_at)
    await queue.enqueue(redis, [entry], queue_name=QUEUE, serializer=serialize)
    return job_id


async def until_ran(ran: Ran, count: int) -> None:
    async with asyncio.timeout(SOON):
        while len(ran.messages) < count:
            ran.changed.clear()
            await ran.changed.wait()


async def test_a_new_job_wakes_the_waiting_worker(redis_server: RedisServer, redis: ArqRedis) -> None:
    ran = Ran()
    async with running(worker_for(redis_server, ran), redis):
        await asyncio.sleep(0.2)  # the worker is waiting now
        await enqueue(redis, "woken")
        await until_ran(ran, 1)

    assert ran.messages == ["woken"]


async def test_a_deferred_job_runs_when_due_without_a_poll(redis_server: RedisServer, redis: ArqRedis) -> None:
    ran = Ran()
    async with running(worker_for(redis_server, ran), redis):
        await enqueue(redis, "later", defer_by=0.5)
        await until_ran(ran, 1)

    assert ran.messages == ["later"]


async def test_a_freed_slot_takes_the_next_due_job_at_once(redis_server: RedisServer, redis: ArqRedis) -> None:
    ran = Ran()
    for i in range(4):
        await enqueue(redis, f"job {i}", seconds=0.05)
    async with running(worker_for(redis_server, ran, max_jobs=1), redis):
        await until_ran(ran, 4)

    assert sorted(ran.messages) == [f"job {i}" for i in range(4)]


async def preload_straggler_group(redis: ArqRedis, *, straggler_seconds: float) -> None:
    """Two jobs claimed first (the straggler and a quick one), then two quick ones waiting."""
    await enqueue(redis, "straggler", seconds=straggler_seconds)
    await enqueue(redis, "quick")
    await asyncio.sleep(0.01)  # a later score: claimed after the first two
    await enqueue(redis, "waiting 1")
    await enqueue(redis, "waiting 2")


async def test_while_jobs_wait_a_freed_slot_waits_for_the_running_jobs(
    redis_server: RedisServer, redis: ArqRedis
) -> None:
    ran = Ran()
    await preload_straggler_group(redis, straggler_seconds=0.3)
    async with running(worker_for(redis_server, ran, max_jobs=2, claim_linger=SOON), redis):
        await until_ran(ran, 4)

    # The quick job's slot waited for the straggler: the two waiting jobs were claimed together.
    assert ran.messages[:2] == ["quick", "straggler"]
    assert sorted(ran.messages[2:]) == ["waiting 1", "waiting 2"]


async def test_without_a_linger_each_freed_slot_takes_a_job_at_once(redis_server: RedisServer, redis: ArqRedis) -> None:
    ran = Ran()
    await preload_straggler_group(redis, straggler_seconds=0.3)
    async with running(worker_for(redis_server, ran, max_jobs=2, claim_linger=0), redis):
        await until_ran(ran, 4)

    assert ran.messages[-1] == "straggler"


async def test_a_freed_slot_waits_no_longer_than_the_linger(redis_server: RedisServer, redis: ArqRedis) -> None:
    ran = Ran()
    await preload_straggler_group(redis, straggler_seconds=SOON / 2)
    async with running(worker_for(redis_server, ran, max_jobs=2, claim_linger=0.05), redis):
        await until_ran(ran, 4)

    assert ran.messages[-1] == "straggler"


async def test_with_nothing_waiting_a_new_job_does_not_wait_for_running_ones(
    redis_server: RedisServer, redis: ArqRedis
) -> None:
    ran = Ran()
    async with running(worker_for(redis_server, ran, max_jobs=2, claim_linger=SOON), redis):
        await enqueue(redis, "long", seconds=SOON / 2)
        await asyncio.sleep(0.2)  # the long job runs, the other slot waits for hand-overs
        await enqueue(redis, "new")
        await until_ran(ran, 1)

        assert ran.messages == ["new"]


class RecordingBook(AttemptBook):
    """An attempt book that records what each of its statements wrote."""

    def __init__(self, db: asyncpg.Pool, *, worker_id: str) -> None:
        super().__init__(db, worker_id=worker_id)
        self.statements: list[list[str]] = []

    async def _write(self, operations: list[Operation]) -> list[Written]:
        kinds = [
            "start" if isinstance(op, str | ledger.Start) else "end" if isinstance(op, End) else "effect"
            for op in operations
        ]
        self.statements.append(kinds)
        return await super()._write(operations)


async def test_while_jobs_wait_a_group_ends_in_the_commit_that_starts_the_next(
    redis_server: RedisServer, redis: ArqRedis, db_pool: asyncpg.Pool
) -> None:
    async def booked(ctx: dict[str, Any]) -> None:
        started = await ctx["attempts"].start(ctx["job_id"])
        await ctx["attempts"].finish(job_id=ctx["job_id"], attempt=started.attempt, status=LedgerStatus.succeeded)

    ids = [await insert_job(db_pool) for _ in range(6)]
    entries = [queue.Entry("booked", job_id) for job_id in ids]
    await queue.enqueue(redis, entries, queue_name=QUEUE, serializer=serialize)
    worker = worker_with(redis_server, [func(booked, name="booked")], max_jobs=2, claim_linger=SOON)
    worker.ctx["attempts"] = book = RecordingBook(db_pool, worker_id="w-groups")

    async def all_succeeded() -> bool:
        jobs = [await ledger.get_job(db_pool, job_id) for job_id in ids]
        return all(job is not None and job.status is LedgerStatus.succeeded for job in jobs)

    async with running(worker, redis):
        await soon(all_succeeded)
        await soon(lambda: queue_empty(redis))

    # Three groups of two: the ends of the first two shared the statement of the next starts.
    assert ["end", "end", "start", "start"] in [sorted(kinds) for kinds in book.statements], book.statements
    for job_id in ids:
        assert [a.outcome for a in await ledger.get_attempts(db_pool, job_id)] == ["succeeded"]


async def test_a_job_running_elsewhere_is_left_alone(redis_server: RedisServer, redis: ArqRedis) -> None:
    ran = Ran()
    elsewhere = await enqueue(redis, "elsewhere")
    await redis.psetex(in_progress_key_prefix + elsewhere, 60_000, b"1")
    async with running(worker_for(redis_server, ran), redis):
        await enqueue(redis, "here")
        await until_ran(ran, 1)
        await asyncio.sleep(0.2)

        assert ran.messages == ["here"]
        assert await redis.zscore(QUEUE, elsewhere) is not None


async def test_burst_mode_runs_everything_then_returns(redis_server: RedisServer, redis: ArqRedis) -> None:
    ran = Ran()
    for i in range(5):
        await enqueue(redis, f"job {i}")
    worker = worker_for(redis_server, ran, burst=True, poll_delay=0)
    try:
        await asyncio.wait_for(worker.async_run(), SOON)
    finally:
        await worker.pool.aclose(close_connection_pool=True)

    assert sorted(ran.messages) == [f"job {i}" for i in range(5)]
    assert worker.jobs_complete == 5


async def test_a_running_job_can_be_aborted(redis_server: RedisServer, redis: ArqRedis) -> None:
    ran = Ran()
    async with running(worker_for(redis_server, ran, allow_abort_jobs=True, poll_delay=0.1), redis):
        job_id = await enqueue(redis, "never", seconds=30)
        job = Job(job_id, redis, _queue_name=QUEUE, _deserializer=deserialize)
        await soon(lambda: running_now(job))

        # Aborted: ARQ stores the CancelledError, which the JSON serializer keeps as text.
        with pytest.raises(SerializationError, match="CancelledError"):
            await job.abort(timeout=SOON)

    assert ran.messages == []


async def test_the_ends_of_concurrent_jobs_share_a_script(
    redis_server: RedisServer, redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    finish = ends._FINISH
    scripts = 0

    async def counted(redis: ArqRedis, keys: list[str], args: list[Any]) -> Any:
        nonlocal scripts
        scripts += 1
        return await finish(redis, keys, args)

    monkeypatch.setattr(ends, "_FINISH", counted)
    ran = Ran()
    ids = [await enqueue(redis, f"job {i}") for i in range(20)]
    execs_before = await exec_calls(redis)
    async with running(worker_for(redis_server, ran, max_jobs=20), redis):
        await until_ran(ran, 20)
        await soon(lambda: queue_empty(redis))

    # Each job's end is ARQ's: its result stored, its keys and its queue entry gone...
    for job_id in ids:
        job = Job(job_id, redis, _queue_name=QUEUE, _deserializer=deserialize)
        info = await job.result_info()
        assert info is not None
        assert info.success
        assert not await redis.exists(in_progress_key_prefix + job_id, "arq:job:" + job_id, "arq:retry:" + job_id)
    # ...but the ends went in fewer scripts (each atomic, as ARQ's MULTI/EXEC) than jobs, and no
    # MULTI/EXEC was used: ARQ's at each job's start is done by the claim script
    # (services.queue.runner), ARQ's at each end by the finish script.
    assert 1 <= scripts < len(ids), scripts
    assert await exec_calls(redis) == execs_before


async def test_a_claimed_job_is_leased_until_it_ends(redis_server: RedisServer, redis: ArqRedis) -> None:
    ran = Ran()
    worker = worker_for(redis_server, ran)
    worker.ctx["leases"] = leases = LeaseKeeper(redis, lease_seconds=3)
    async with running(worker, redis):
        job_id = await enqueue(redis, "leased", seconds=1)
        await soon(lambda: redis.exists(in_progress_key_prefix + job_id))

        # The claim set the lease's TTL (not ARQ's job timeout + 10 s), and the job is held.
        ttl_ms = await redis.pttl(in_progress_key_prefix + job_id)
        assert 0 < ttl_ms <= 3000, ttl_ms
        assert job_id in leases.held
        await until_ran(ran, 1)
        await soon(lambda: queue_empty(redis))

    assert job_id not in leases.held


async def exec_calls(redis: ArqRedis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_exec", {}).get("calls", 0))


async def queue_empty(redis: ArqRedis) -> bool:
    return bool(await redis.zcard(QUEUE) == 0)
