"""The worker's Redis calls give up when the network is cut, instead of waiting for it to return.

A relay between the worker and a real Redis cuts the network without telling either side: the
connections stay open and nothing passes. The bounds the tests wait for are generous; they only
say that the call or the subscription did not wait for the network to come back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis, RedisSettings
from arq.worker import func
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.core.serialization import deserialize, serialize
from services.queue.timeouts import call_timeout, create_redis
from services.queue.worker import QueueWorker
from tests.support.redis_server import RedisServer
from tests.support.relay import Relay
from tests.unit.test_handoff import registered
from tests.unit.test_wakeup import QUEUE, running, soon

CALL = 0.5
"""Seconds a call may take here (a third of a 1.5 s lease)."""
NOT_FOREVER = 10.0


async def record(ctx: dict[str, object], message: str, seconds: float = 0) -> str:
    return message


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[ArqRedis]:
    async with redis_server.fresh_arq_client(QUEUE) as client:
        yield client


def test_a_call_may_take_a_third_of_the_lease() -> None:
    assert call_timeout(9.0) == pytest.approx(3.0)


async def test_a_call_through_a_cut_network_gives_up(redis_server: RedisServer) -> None:
    async with Relay("127.0.0.1", redis_server.port) as relay:
        pool = await create_redis(RedisSettings(port=relay.port), call_seconds=CALL)
        try:
            assert await pool.ping()
            relay.cut()
            async with asyncio.timeout(NOT_FOREVER):
                with pytest.raises(RedisTimeoutError):
                    await pool.get("anything")
                with pytest.raises(RedisTimeoutError):  # again, on a new connection
                    await pool.get("anything")
            relay.heal()
            assert await pool.ping()  # the network is back: so is the pool
        finally:
            await pool.aclose(close_connection_pool=True)


async def waiting_worker(port: int) -> QueueWorker:
    """A worker with call timeouts on the Redis at ``port``, waiting for work (it polls once a minute)."""
    pool = await create_redis(
        RedisSettings(port=port),
        call_seconds=CALL,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=QUEUE,
    )
    return QueueWorker(
        [func(record, name="record")],
        redis_pool=pool,
        queue_name=QUEUE,
        job_serializer=serialize,
        job_deserializer=deserialize,
        handle_signals=False,
        poll_delay=60.0,
        call_timeout=CALL,
    )


async def test_a_subscription_cut_off_is_noticed_and_made_anew_when_the_network_returns(
    redis_server: RedisServer, redis: ArqRedis
) -> None:
    async with Relay("127.0.0.1", redis_server.port) as relay:
        worker = await waiting_worker(relay.port)
        async with running(worker, redis):
            await soon(lambda: registered(redis, worker))
            before = worker._handoffs.channel
            relay.cut()  # Redis still counts the subscriber; the worker hears nothing

            async def deaf() -> bool:
                return not worker._listening

            async with asyncio.timeout(NOT_FOREVER):
                await soon(deaf)
            relay.heal()

            async def listening_anew() -> bool:
                return worker._listening and worker._handoffs.channel != before and await registered(redis, worker)

            await soon(listening_anew)


async def test_a_quiet_subscription_is_kept(redis_server: RedisServer, redis: ArqRedis) -> None:
    """Nothing to hear for many call timeouts: the subscription is pinged, not taken for dead."""
    worker = await waiting_worker(redis_server.port)
    async with running(worker, redis):
        await soon(lambda: registered(redis, worker))
        before = worker._handoffs.channel
        await asyncio.sleep(8 * CALL)

        assert worker._handoffs.channel == before
        assert worker._listening
