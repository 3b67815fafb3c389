"""The relay against the session's database and a real Redis: what commits is queued, once.

Jobs are enqueued with ``afterword_enqueue`` on connections of the test's own, and committed (or
rolled back); the relay under test pushes them to the throwaway Redis. No worker runs here: the
tests look at ARQ's keys.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from arq.connections import ArqRedis
from arq.constants import job_key_prefix
from arq.utils import to_unix_ms

from services.core.serialization import deserialize
from services.core.settings import Settings
from services.jobs.relay import LISTENER_NAME, Relay
from services.jobs.setup import on_shutdown, on_startup
from tests.support.database import create_database, drop_database
from tests.support.redis_server import RedisServer

QUEUE = "relay-test:queue"


@pytest.fixture
async def database_dsn() -> AsyncIterator[str]:
    """A migrated database of each test's own: a relay's catch-up reads every waiting job of its
    database, and the session's database holds the other tests' jobs."""
    dsn = await create_database("afterword_relay")
    try:
        yield dsn
    finally:
        await drop_database(dsn)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[ArqRedis]:
    async with redis_server.fresh_arq_client(QUEUE) as client:
        yield client


@asynccontextmanager
async def running(dsn: str, redis: ArqRedis, **options: float) -> AsyncIterator[Relay]:
    """A relay, listening and caught up."""
    relay = Relay(dsn, redis, queue_name=QUEUE, catch_up_seconds=options.pop("catch_up_seconds", 30), **options)
    await relay.start()
    try:
        assert await relay.wait_connected(within=10)
        yield relay
    finally:
        await relay.stop()


async def enqueue(dsn: str, payloads: list[dict[str, str]], *, commit: bool = True, **options: object) -> list[str]:
    """Enqueue ``write_log`` jobs in one transaction, then commit it or roll it back; their ids."""
    connection = await asyncpg.connect(dsn)
    try:
        transaction = connection.transaction()
        await transaction.start()
        ids = [
            await connection.fetchval(
                "SELECT afterword_enqueue('write_log', $1::jsonb, p_defer_by => $2)",
                json.dumps(payload),
                options.get("defer_by"),
            )
            for payload in payloads
        ]
        await (transaction.commit() if commit else transaction.rollback())
        return ids
    finally:
        await connection.close()


async def eventually(condition: Callable[[], Awaitable[bool]], *, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.02)


async def stored(redis: ArqRedis, job_id: str) -> dict[str, object] | None:
    raw = await redis.get(job_key_prefix + job_id)
    return None if raw is None else deserialize(raw)


async def all_queued(redis: ArqRedis, ids: list[str]) -> bool:
    scores = await redis.zmscore(QUEUE, ids)
    return all(score is not None for score in scores)


async def test_a_committed_job_is_queued_with_its_payload(database_dsn: str, redis: ArqRedis) -> None:
    async with running(database_dsn, redis):
        (job_id,) = await enqueue(database_dsn, [{"message": "committed"}])

        await eventually(lambda: all_queued(redis, [job_id]))

    job = await stored(redis, job_id)
    assert job is not None
    assert (job["f"], job["a"]) == ("write_log", [{"message": "committed"}])


async def test_a_rolled_back_job_is_never_queued(database_dsn: str, redis: ArqRedis) -> None:
    async with running(database_dsn, redis):
        (rolled_back,) = await enqueue(database_dsn, [{"message": "rolled back"}], commit=False)
        (committed,) = await enqueue(database_dsn, [{"message": "committed after"}])
        await eventually(lambda: all_queued(redis, [committed]))

    assert await redis.zscore(QUEUE, rolled_back) is None
    assert await stored(redis, rolled_back) is None


async def test_a_deferred_job_is_queued_at_its_time(database_dsn: str, redis: ArqRedis) -> None:
    async with running(database_dsn, redis):
        (job_id,) = await enqueue(database_dsn, [{"message": "later"}], defer_by=120.0)
        await eventually(lambda: all_queued(redis, [job_id]))

    connection = await asyncpg.connect(database_dsn)
    try:
        run_at: datetime = await connection.fetchval("SELECT run_at FROM jobs WHERE id = $1", job_id)
    finally:
        await connection.close()
    assert await redis.zscore(QUEUE, job_id) == to_unix_ms(run_at)
    assert run_at > datetime.now(UTC)


async def test_many_jobs_of_many_transactions_are_each_queued(database_dsn: str, redis: ArqRedis) -> None:
    async with running(database_dsn, redis):
        batches = await asyncio.gather(
            *(enqueue(database_dsn, [{"message": f"{t}-{n}"} for n in range(10)]) for t in range(20))
        )
        ids = [job_id for batch in batches for job_id in batch]

        await eventually(lambda: all_queued(redis, ids))

    assert len(set(ids)) == 200


async def test_two_relays_queue_each_job_once(database_dsn: str, redis: ArqRedis) -> None:
    async with running(database_dsn, redis) as first, running(database_dsn, redis) as second:
        before = first.queued + second.queued
        ids = [job_id for _ in range(10) for job_id in await enqueue(database_dsn, [{"message": "x"}] * 5)]
        await eventually(lambda: all_queued(redis, ids))
        await asyncio.sleep(0.3)  # the slower relay hears them too, and finds ARQ knows them

        assert first.queued + second.queued - before == len(ids)


async def test_a_job_committed_while_nobody_listened_is_queued_at_the_start(database_dsn: str, redis: ArqRedis) -> None:
    (job_id,) = await enqueue(database_dsn, [{"message": "before the relay"}])

    async with running(database_dsn, redis):
        assert await redis.zscore(QUEUE, job_id) is not None  # caught up before it says it is connected


async def test_a_job_older_than_the_catch_up_is_left_to_the_sweep(database_dsn: str, redis: ArqRedis) -> None:
    (job_id,) = await enqueue(database_dsn, [{"message": "long ago"}])
    await asyncio.sleep(0.5)

    async with running(database_dsn, redis, catch_up_seconds=0.2):
        assert await redis.zscore(QUEUE, job_id) is None


async def test_after_its_connection_is_lost_the_relay_reconnects_and_catches_up(
    database_dsn: str, redis: ArqRedis
) -> None:
    async with running(database_dsn, redis, reconnect_seconds=1.5) as relay:
        admin = await asyncpg.connect(database_dsn)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1 AND datname = current_database()",
                LISTENER_NAME,
            )
            assert killed == 1

            async def disconnected() -> bool:
                return not relay.connected

            await eventually(disconnected)
            (missed,) = await enqueue(database_dsn, [{"message": "while it reconnects"}])
            assert not relay.connected  # nobody heard it: it can only come from the catch-up
            await eventually(lambda: all_queued(redis, [missed]))
            assert await relay.wait_connected(within=5)
            (heard,) = await enqueue(database_dsn, [{"message": "after"}])
            await eventually(lambda: all_queued(redis, [heard]))
        finally:
            await admin.close()


async def test_with_redis_away_the_job_stays_queued_in_the_ledger(database_dsn: str, redis_server: RedisServer) -> None:
    nowhere = ArqRedis.from_url("redis://127.0.0.1:1")  # nothing listens there
    try:
        async with running(database_dsn, nowhere) as relay:
            (job_id,) = await enqueue(database_dsn, [{"message": "redis away"}])
            await asyncio.sleep(0.3)
            assert relay.connected
            assert relay.queued == 0
    finally:
        await nowhere.aclose()
    connection = await asyncpg.connect(database_dsn)
    try:
        assert await connection.fetchval("SELECT status FROM jobs WHERE id = $1", job_id) == "queued"
    finally:
        await connection.close()


async def test_a_starting_worker_writes_the_job_kinds_and_relays(
    database_dsn: str, redis_server: RedisServer, redis: ArqRedis, tmp_path: Path
) -> None:
    settings = Settings(
        _env_file=None,
        database_url=database_dsn,
        redis_url=redis_server.url,
        queue_name=QUEUE,
        worker_metrics_port=0,
        log_file=tmp_path / "log",
        temp_dir=tmp_path,
    )
    admin = await asyncpg.connect(database_dsn)
    ctx: dict[str, Any] = {"settings": settings, "worker_id": "relay-test", "redis": redis}
    try:
        await admin.execute("DELETE FROM job_kinds WHERE name = 'write_log'")
        await on_startup(ctx)
        try:
            assert await admin.fetchval("SELECT required FROM job_kinds WHERE name = 'write_log'") == ["message"]
            assert await ctx["relay"].wait_connected(within=10)
            (job_id,) = await enqueue(database_dsn, [{"message": "through the worker's relay"}])
            await eventually(lambda: all_queued(redis, [job_id]))
        finally:
            await on_shutdown(ctx)
    finally:
        await admin.close()
