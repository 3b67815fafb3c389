"""A claimed job runs as ARQ's ``run_job`` would run it, from what the claim script read.

The claim script does what ARQ's ``run_job`` starts with (read the job, count its try, take it
off the abort set); these tests hold the runner to ARQ's outcomes for each of those answers.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from arq import Retry
from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.jobs import Job, JobResult
from arq.utils import timestamp_ms
from arq.worker import func
from redis.exceptions import ConnectionError as RedisConnectionError

from services.core.serialization import deserialize, serialize
from services.queue import enqueue as queue
from services.queue.worker import QueueWorker
from tests.support.redis_server import RedisServer
from tests.unit.test_wakeup import QUEUE, enqueue, running, soon


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[ArqRedis]:
    async with redis_server.fresh_arq_client(QUEUE) as client:
        yield client


class Calls:
    """Each run of the test job: its message and ``job_try``."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, int]] = []


def worker(server: RedisServer, calls: Calls, *, retry_first: bool = False, **options: Any) -> QueueWorker:
    async def record(ctx: dict[str, Any], message: str, seconds: float = 0) -> str:
        calls.runs.append((message, ctx["job_try"]))
        if retry_first and ctx["job_try"] == 1:
            raise Retry(defer=0.01)
        await asyncio.sleep(seconds)
        return message

    return QueueWorker(
        [func(record, name="record")],
        redis_pool=server.arq_client(QUEUE),
        queue_name=QUEUE,
        job_serializer=serialize,
        job_deserializer=deserialize,
        handle_signals=False,
        **{"poll_delay": 60.0, **options},
    )


async def ended(redis: ArqRedis, job_id: str) -> JobResult:
    """The job's result once ARQ stored it."""
    job = Job(job_id, redis, _queue_name=QUEUE, _deserializer=deserialize)

    async def stored() -> bool:
        return await job.result_info() is not None

    await soon(stored)
    info = await job.result_info()
    assert info is not None
    return info


async def test_a_job_runs_with_its_first_try_and_leaves_no_keys(redis_server: RedisServer, redis: ArqRedis) -> None:
    calls = Calls()
    async with running(worker(redis_server, calls), redis):
        job_id = await enqueue(redis, "hello")
        info = await ended(redis, job_id)

    assert (info.success, info.result, info.job_try) == (True, "hello", 1)
    assert calls.runs == [("hello", 1)]
    assert not await redis.exists(in_progress_key_prefix + job_id, job_key_prefix + job_id, retry_key_prefix + job_id)


async def test_a_retried_job_counts_its_tries(redis_server: RedisServer, redis: ArqRedis) -> None:
    calls = Calls()
    async with running(worker(redis_server, calls, retry_first=True), redis):
        job_id = await enqueue(redis, "again")
        info = await ended(redis, job_id)

    assert calls.runs == [("again", 1), ("again", 2)]
    assert (info.success, info.job_try) == (True, 2)


async def test_a_job_marked_for_abort_before_its_claim_never_runs(redis_server: RedisServer, redis: ArqRedis) -> None:
    calls = Calls()
    job_id = uuid.uuid4().hex
    await redis.zadd(abort_jobs_ss, {job_id: timestamp_ms()})  # aborted before any worker took it
    async with running(worker(redis_server, calls, allow_abort_jobs=True), redis):
        await enqueue_with_id(redis, job_id, "never")
        info = await ended(redis, job_id)

    assert calls.runs == []
    assert not info.success
    assert str(info.result).startswith("CancelledError")  # the JSON serializer keeps errors as text
    assert await redis.zscore(abort_jobs_ss, job_id) is None


async def test_a_job_whose_data_expired_fails_without_running(redis_server: RedisServer, redis: ArqRedis) -> None:
    calls = Calls()
    job_id = uuid.uuid4().hex
    await redis.zadd(QUEUE, {job_id: timestamp_ms()})  # queued, but its arq:job key is gone
    async with running(worker(redis_server, calls), redis):
        info = await ended(redis, job_id)

    assert calls.runs == []
    assert not info.success
    assert "job expired" in str(info.result)
    assert await redis.zscore(QUEUE, job_id) is None
    assert not await redis.exists(in_progress_key_prefix + job_id, retry_key_prefix + job_id)


async def test_a_job_past_its_max_tries_fails_without_running(redis_server: RedisServer, redis: ArqRedis) -> None:
    calls = Calls()
    job_id = uuid.uuid4().hex
    await redis.set(retry_key_prefix + job_id, 2)  # two tries already: the claim counts the third
    async with running(worker(redis_server, calls, max_tries=2), redis):
        await enqueue_with_id(redis, job_id, "too late")
        info = await ended(redis, job_id)

    assert calls.runs == []
    assert not info.success
    assert "max 2 retries exceeded" in str(info.result)
    assert info.job_try == 3


async def enqueue_with_id(redis: ArqRedis, job_id: str, message: str) -> None:
    """:func:`tests.unit.test_wakeup.enqueue` with a chosen id."""
    entry = queue.Entry("record", job_id, args=(message,), kwargs={})
    await queue.enqueue(redis, [entry], queue_name=QUEUE, serializer=serialize)


async def test_a_redis_outage_closes_the_worker_only_once_its_jobs_have_ended(tmp_path: Path) -> None:
    # Redis dies under two running jobs. The short one ends within the grace (its end cannot
    # reach Redis); the long one is cancelled at the grace's end and hands itself back; only
    # then does on_shutdown run (it closes what the jobs use).
    server = RedisServer(tmp_path / "redis")
    server.start()
    events: list[str] = []

    async def job(ctx: dict[str, Any], name: str, seconds: float) -> str:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            events.append(f"{name} handed back")
            raise
        events.append(f"{name} ended")
        return name

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        events.append("on_shutdown")

    redis = server.arq_client(QUEUE)
    worker = QueueWorker(
        [func(job, name="job")],
        redis_pool=server.arq_client(QUEUE),
        queue_name=QUEUE,
        job_serializer=serialize,
        job_deserializer=deserialize,
        on_shutdown=on_shutdown,
        job_completion_wait=2,  # the shutdown grace
        poll_delay=0.05,
    )  # handle_signals stays on, as in the jobs service: ARQ's close cancels every job at once without
    main = asyncio.create_task(worker.async_run())
    try:
        for name, seconds in (("short", 0.5), ("long", 60)):
            entry = queue.Entry("job", f"{name}-{uuid.uuid4().hex}", args=(name, seconds), kwargs={})
            await queue.enqueue(redis, [entry], queue_name=QUEUE, serializer=serialize)
        await soon(lambda: _running(worker, 2))
        server.kill()
        with pytest.raises(RedisConnectionError):
            await main
        await worker.close()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().remove_signal_handler(sig)
        main.cancel()
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
        await redis.aclose(close_connection_pool=True)
        server.stop()

    assert events == ["short ended", "long handed back", "on_shutdown"]


async def _running(worker: QueueWorker, count: int) -> bool:
    return sum(not task.done() for task in worker.tasks.values()) == count
