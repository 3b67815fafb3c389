"""A key of the wrong type in Redis holds up the sweep of its own job only, never the others'."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from arq.connections import ArqRedis
from arq.constants import result_key_prefix

from services.jobs.sweeper import sweep
from tests.support.redis_server import RedisServer
from tests.unit.test_sweeper import QUEUE, idle_job


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[ArqRedis]:
    async with redis_server.fresh_arq_client(QUEUE) as client:
        yield client


async def test_a_result_key_of_the_wrong_type_is_skipped(db_pool: asyncpg.Pool, redis: ArqRedis) -> None:
    hostile, forgotten = await idle_job(db_pool), await idle_job(db_pool)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(result_key_prefix + hostile, "s", "1")  # a hash where ARQ's result belongs
        await pipe.execute()

    report = await sweep(db=db_pool, redis=redis, queue_name=QUEUE, idle_seconds=30)

    assert forgotten in report.requeued
    assert hostile not in report.requeued
    assert hostile not in report.settled
