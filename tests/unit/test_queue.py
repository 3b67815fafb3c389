"""One-round-trip enqueue: ARQ's data layout and dedupe, exactly, plus the wake-up message."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from arq.connections import ArqRedis
from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix
from arq.worker import Worker, func

from services.core.serialization import deserialize, serialize
from services.queue import enqueue as queue
from tests.support.redis_server import RedisServer

QUEUE = "queue-test:queue"


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[ArqRedis]:
    async with redis_server.fresh_arq_client(QUEUE) as client:
        yield client


async def ours(redis: ArqRedis, *entries: queue.Entry) -> list[bool]:
    return await queue.enqueue(redis, entries, queue_name=QUEUE, serializer=serialize)


async def test_the_job_key_and_queue_entry_are_the_ones_arq_writes(redis: ArqRedis) -> None:
    mine, theirs = uuid.uuid4().hex, uuid.uuid4().hex

    assert await ours(redis, queue.Entry("write_log", mine, args=({"message": "hi"},))) == [True]
    assert await redis.enqueue_job("write_log", {"message": "hi"}, _job_id=theirs) is not None

    ours_job = deserialize(await redis.get(job_key_prefix + mine))
    arq_job = deserialize(await redis.get(job_key_prefix + theirs))
    assert ours_job.keys() == arq_job.keys() == {"t", "f", "a", "k", "et"}
    assert {k: v for k, v in ours_job.items() if k != "et"} == {k: v for k, v in arq_job.items() if k != "et"}
    assert abs(ours_job["et"] - arq_job["et"]) < 5_000
    # Scored by the enqueue time, expiring a day after it, as ARQ does.
    assert await redis.zscore(QUEUE, mine) == ours_job["et"]
    for job_id in (mine, theirs):
        assert expires_extra_ms - 5_000 < await redis.pttl(job_key_prefix + job_id) <= expires_extra_ms


async def test_a_deferred_job_is_scored_at_its_run_time_and_lives_a_day_past_it(redis: ArqRedis) -> None:
    job_id = uuid.uuid4().hex
    run_at = datetime.now(UTC) + timedelta(minutes=10)

    await ours(redis, queue.Entry("write_log", job_id, defer_until=run_at))

    assert await redis.zscore(QUEUE, job_id) == round(run_at.timestamp() * 1000)
    ttl = await redis.pttl(job_key_prefix + job_id)
    assert 600_000 + expires_extra_ms - 5_000 < ttl <= 600_000 + expires_extra_ms


async def test_an_id_arq_knows_is_not_queued_again(redis: ArqRedis) -> None:
    queued, finished, new = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
    await ours(redis, queue.Entry("write_log", queued, args=({"message": "first"},)))
    await redis.set(result_key_prefix + finished, b"{}")  # ARQ's dedupe lasts as long as the result

    flags = await ours(
        redis,
        queue.Entry("write_log", queued, args=({"message": "second"},)),
        queue.Entry("write_log", finished),
        queue.Entry("write_log", new),
    )

    assert flags == [False, False, True]
    assert deserialize(await redis.get(job_key_prefix + queued))["a"] == [{"message": "first"}]
    assert await redis.zscore(QUEUE, finished) is None
    # ARQ's own enqueue agrees about the ids it knows.
    assert await redis.enqueue_job("write_log", _job_id=queued) is None
    assert await redis.enqueue_job("write_log", _job_id=finished) is None


async def test_queuing_publishes_on_the_wake_channel_and_a_no_op_does_not(redis: ArqRedis) -> None:
    job_id = uuid.uuid4().hex
    async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
        await pubsub.subscribe(queue.wake_channel(QUEUE))
        await pubsub.get_message(timeout=1)  # the subscription's confirmation

        await ours(redis, queue.Entry("write_log", job_id))
        message = await pubsub.get_message(timeout=5)
        assert message is not None
        assert message["channel"] == queue.wake_channel(QUEUE).encode()

        await ours(redis, queue.Entry("write_log", job_id))  # known already: nothing queued
        assert await pubsub.get_message(timeout=0.2) is None


async def test_the_script_is_loaded_again_into_a_redis_that_forgot_it(redis: ArqRedis) -> None:
    await ours(redis, queue.Entry("write_log", uuid.uuid4().hex))
    await redis.script_flush()

    assert await ours(redis, queue.Entry("write_log", uuid.uuid4().hex)) == [True]


async def test_plain_arq_runs_what_we_queue(redis: ArqRedis) -> None:
    seen: list[dict[str, str]] = []

    async def write_log(ctx: dict[str, object], payload: dict[str, str]) -> None:
        seen.append(payload)

    await ours(redis, queue.Entry("write_log", uuid.uuid4().hex, args=({"message": "from us"},)))
    worker = Worker(
        [func(write_log, name="write_log")],
        redis_pool=redis,
        queue_name=QUEUE,
        burst=True,
        poll_delay=0,
        job_serializer=serialize,
        job_deserializer=deserialize,
        handle_signals=False,
    )
    await asyncio.wait_for(worker.async_run(), 10)

    assert seen == [{"message": "from us"}]
    assert worker.jobs_complete == 1


@pytest.mark.parametrize("member", ["not a registration", "0|0|1|{channel}"])
async def test_a_registration_that_is_not_one_is_skipped(redis: ArqRedis, member: str) -> None:
    # Someone listens on the channel: a registration with a TTL PSETEX refuses would be taken.
    job_id, channel = uuid.uuid4().hex, f"{QUEUE}:handoff:{uuid.uuid4().hex}"
    async with redis.pubsub() as listener:
        await listener.subscribe(channel)
        await redis.zadd(queue.idle_workers_key(QUEUE), {member.format(channel=channel): 0})

        assert await ours(redis, queue.Entry("write_log", job_id)) == [True]

    assert await redis.zscore(QUEUE, job_id) is not None
    assert await redis.zcard(queue.idle_workers_key(QUEUE)) == 0  # taken off the set, never used


async def test_an_idle_set_of_the_wrong_type_does_not_stop_the_enqueue(redis: ArqRedis) -> None:
    job_id = uuid.uuid4().hex
    await redis.set(queue.idle_workers_key(QUEUE), "not a sorted set")

    assert await ours(redis, queue.Entry("write_log", job_id)) == [True]

    assert await redis.zscore(QUEUE, job_id) is not None
