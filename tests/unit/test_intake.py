"""The gateway's intake commits a job's ledger row before the job reaches Redis.

A worker may start a job the moment it is on the queue, and its first step is to find the job's
row; a row not yet committed (or not written) then is a job run without a record. The intake
talks to Redis through a relay that holds Redis's answers back: the intake is stopped right after
its enqueue took effect, and the test looks, from a connection of its own, at what the ledger
holds at that moment. Nothing is timed: the intake cannot commit later than the moment looked at
if it committed before the enqueue, and cannot have committed by then if it commits after.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool

from services import ledger
from services.contract import JobName, JobStatus
from services.core.serialization import deserialize, serialize
from services.gateway.intake import Intake
from services.gateway.metrics import GatewayMetrics
from services.queue import enqueue as queue
from tests.support.redis_server import RedisServer
from tests.support.relay import Relay

QUEUE = "intake-test:queue"


def new_job(message: str) -> ledger.NewJob:
    return ledger.NewJob(
        id=uuid.uuid4().hex,
        name=JobName.write_log,
        payload={"message": message},
        status=JobStatus.queued,
        run_at=datetime.now(UTC),
    )


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[ArqRedis]:
    """A client straight to Redis, for the test's own looks."""
    async with redis_server.fresh_arq_client(QUEUE) as client:
        yield client


@pytest.fixture
async def relay(redis_server: RedisServer) -> AsyncIterator[Relay]:
    async with Relay("127.0.0.1", redis_server.port) as opened:
        yield opened


@pytest.fixture
async def relayed_redis(relay: Relay) -> AsyncIterator[ArqRedis]:
    """The intake's client, through the relay, as the gateway's ARQ pool is made."""
    client = ArqRedis(
        ConnectionPool.from_url(f"redis://127.0.0.1:{relay.port}/0"),
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=QUEUE,
    )
    try:
        yield client
    finally:
        await client.aclose(close_connection_pool=True)


async def test_the_row_is_committed_when_the_job_reaches_redis(
    db_pool: asyncpg.Pool, database_dsn: str, redis: ArqRedis, relay: Relay, relayed_redis: ArqRedis
) -> None:
    intake = Intake(db=db_pool, redis=relayed_redis, metrics=GatewayMetrics())
    await intake.submit([new_job("warm-up")])  # connections made and the enqueue script loaded
    job = new_job("looked at as it reaches Redis")
    async with redis.pubsub(ignore_subscribe_messages=True) as wake:
        await wake.subscribe(queue.wake_channel(QUEUE))  # the enqueue announces its jobs there
        relay.hold()
        accepting = asyncio.create_task(intake.submit([job]))
        try:
            async with asyncio.timeout(10):
                message = None
                while message is None:
                    message = await wake.get_message(timeout=1)
            on_the_queue = await redis.zscore(QUEUE, job.id)
            elsewhere = await asyncpg.connect(database_dsn)
            try:
                status = await elsewhere.fetchval("SELECT status FROM jobs WHERE id = $1", job.id)
            finally:
                await elsewhere.close()
        finally:
            relay.release()
            await accepting

    assert on_the_queue is not None, "the job was announced before it was queued"
    assert status == JobStatus.queued, "the job reached Redis before its ledger row was committed"
