"""Hostile values in the Redis keys the services read: logged and skipped, never fatal.

Whoever can write to Redis can put a string where a sorted set belongs, a hash where a job
belongs, a job of the wrong shape, bytes that are not UTF-8, or a heartbeat that is not JSON.
The worker keeps running (and serving the jobs it can), the gateway keeps answering, and once the
value is gone everything works as before.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
import pytest
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, retry_key_prefix
from redis.asyncio import Redis

from services.queue import enqueue as queue
from tests.integration.conftest import QUEUE, LocalStack
from tests.support.jobs_client import wait_for_job
from tests.support.planting import PlantingRedis, plant


async def until(condition: Callable[[], Awaitable[bool]], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, f"not reached within {within}s: {what}"
        await asyncio.sleep(0.05)


def worker_alive(stack: LocalStack) -> None:
    """The worker process has not exited."""
    assert stack.worker.process is not None
    assert stack.worker.process.poll() is None, f"the worker exited:\n{stack.worker.output()[-3000:]}"


async def a_job_still_runs(client: httpx.AsyncClient, stack: LocalStack) -> None:
    """The worker process is alive and runs a new job to its end."""
    worker_alive(stack)
    response = await client.post("/jobs", json={"name": "write_log", "payload": {"message": "still here"}})
    assert response.status_code == 202, response.text
    job = await wait_for_job(client, response.json()["id"], within=20)
    assert job["status"] == "succeeded", job
    worker_alive(stack)


async def logged(stack: LocalStack, text: str, *, since: int = 0, within: float = 15) -> None:
    """Wait until the worker's output after its first ``since`` characters holds ``text``."""

    async def found() -> bool:
        return text in stack.worker.output()[since:]

    await until(found, within=within, what=f"the worker logs {text!r}")


# --- Keys every worker reads: the queue, the abort set, the idle set -----------------------------


async def test_a_queue_key_of_the_wrong_type_is_survived_and_recovered_from(
    client: httpx.AsyncClient, local_only_stack: LocalStack, planting_redis: PlantingRedis
) -> None:
    plant(planting_redis, QUEUE)
    mark = len(local_only_stack.worker.output())
    await planting_redis.delete(QUEUE)
    await planting_redis.set(QUEUE, "not a sorted set")

    await logged(local_only_stack, "WRONGTYPE", since=mark)
    await asyncio.sleep(1.5)  # a few more looks at the broken key
    worker_alive(local_only_stack)

    await planting_redis.delete(QUEUE)  # the operator fixes it
    await a_job_still_runs(client, local_only_stack)


@pytest.mark.parametrize("key", [abort_jobs_ss, queue.idle_workers_key(QUEUE)])
async def test_a_side_key_of_the_wrong_type_does_not_stop_the_work(
    client: httpx.AsyncClient, local_only_stack: LocalStack, planting_redis: PlantingRedis, key: str
) -> None:
    plant(planting_redis, key)
    await planting_redis.delete(key)
    await planting_redis.set(key, "not a sorted set")
    await asyncio.sleep(1.5)  # the worker looks at least twice

    await a_job_still_runs(client, local_only_stack)


async def test_ids_that_are_not_utf8_are_dropped(
    client: httpx.AsyncClient, local_only_stack: LocalStack, planting_redis: PlantingRedis
) -> None:
    bad = b"\xff\xfe-" + uuid.uuid4().hex.encode()
    plant(planting_redis, job_key_prefix.encode() + bad)
    await planting_redis.zadd(abort_jobs_ss, {bad: time.time() * 1000})
    await planting_redis.set(
        job_key_prefix.encode() + bad, b'{"f":"write_log","a":[{"message":"x"}],"k":{},"t":1,"et":1}'
    )
    await planting_redis.zadd(QUEUE, {bad: time.time() * 1000})

    async def dropped() -> bool:
        return (
            await planting_redis.zscore(QUEUE, bad) is None and await planting_redis.zscore(abort_jobs_ss, bad) is None
        )

    await until(dropped, within=15, what="the unreadable ids left the queue and the abort set")
    await a_job_still_runs(client, local_only_stack)


# --- Keys of one job: its try counter, its job key -------------------------------------------------

SHAPES: dict[str, bytes] = {
    "try count not a number": b'{"f":"write_log","a":[{"message":"x"}],"k":{},"t":"x","et":1}',
    "function a list": b'{"f":["write_log"],"a":[{"message":"x"}],"k":{},"t":1,"et":1}',
    "args a string": b'{"f":"write_log","a":"x","k":{},"t":1,"et":1}',
    "kwargs a list": b'{"f":"write_log","a":[],"k":[1],"t":1,"et":1}',
    "enqueue time a string": b'{"f":"write_log","a":[{"message":"x"}],"k":{},"t":1,"et":"x"}',
    "enqueue time past year 9999": b'{"f":"write_log","a":[{"message":"x"}],"k":{},"t":1,"et":1e30}',
    "not JSON": b"\x80\x04not json",
    "a JSON list": b"[1, 2]",
}


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_a_job_of_the_wrong_shape_is_failed_and_removed(
    client: httpx.AsyncClient, local_only_stack: LocalStack, planting_redis: PlantingRedis, shape: str
) -> None:
    job_id = uuid.uuid4().hex
    plant(planting_redis, job_key_prefix + job_id, retry_key_prefix + job_id, in_progress_key_prefix + job_id)
    await planting_redis.set(job_key_prefix + job_id, SHAPES[shape])
    await planting_redis.zadd(QUEUE, {job_id: time.time() * 1000})

    await _left_the_queue(planting_redis, job_id)
    await a_job_still_runs(client, local_only_stack)


@pytest.mark.parametrize("key", ["retry key", "job key"])
async def test_a_job_key_of_the_wrong_type_is_removed_and_the_others_run(
    client: httpx.AsyncClient, local_only_stack: LocalStack, planting_redis: PlantingRedis, key: str
) -> None:
    job_id = uuid.uuid4().hex
    plant(planting_redis, job_key_prefix + job_id, retry_key_prefix + job_id, in_progress_key_prefix + job_id)
    job = {"f": "write_log", "a": [{"message": "x"}], "k": {}, "t": 1, "et": int(time.time() * 1000)}
    if key == "retry key":
        await planting_redis.set(job_key_prefix + job_id, json.dumps(job))
        await hash_at(planting_redis, retry_key_prefix + job_id)  # a hash where a counter belongs
    else:
        await hash_at(planting_redis, job_key_prefix + job_id)  # a hash where the job belongs
    await planting_redis.zadd(QUEUE, {job_id: time.time() * 1000})

    await _left_the_queue(planting_redis, job_id)
    await a_job_still_runs(client, local_only_stack)


async def hash_at(redis: Redis, key: str) -> None:
    """Put a hash at ``key``."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(key, "f", "write_log")
        await pipe.execute()


async def _left_the_queue(redis: Redis, job_id: str) -> None:
    async def gone() -> bool:
        return await redis.zscore(QUEUE, job_id) is None and not await redis.exists(job_key_prefix + job_id)

    await until(gone, within=15, what=f"the hostile job {job_id} left the queue")


async def test_an_unreadable_hand_over_message_is_ignored(
    client: httpx.AsyncClient, local_only_stack: LocalStack, planting_redis: PlantingRedis
) -> None:
    async def registered() -> bool:
        return bool(await planting_redis.zcard(queue.idle_workers_key(QUEUE)))

    await until(registered, within=15, what="the worker waits for hand-overs")
    mark = len(local_only_stack.worker.output())
    (member,) = await planting_redis.zrange(queue.idle_workers_key(QUEUE), 0, 0)
    channel = member.decode().split("|", 5)[5]  # lease|aborts|count|max age|worker|channel
    await planting_redis.publish(channel, b"not\na hand-over")

    await logged(local_only_stack, "unreadable hand-over", since=mark)
    await a_job_still_runs(client, local_only_stack)
    assert "wake-up channel lost" not in local_only_stack.worker.output()[mark:]
