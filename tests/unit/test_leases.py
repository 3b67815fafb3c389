"""Leases on running jobs (``services.queue.leases``), against a real Redis.

A lease is the TTL of ARQ's ``arq:in-progress:<id>`` key: short, so that a killed worker's job is
taken over soon, and renewed while the job runs, so that a job running longer than the lease is
not taken over while its worker is alive.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix

from services.queue.leases import LeaseKeeper
from tests.support.redis_server import RedisServer
from tests.unit.test_wakeup import QUEUE, Ran, enqueue, running, soon, until_ran, worker_for

LEASE = 1.0
"""Seconds: short, so that a lease not renewed runs out within the test (renewed every third of it)."""


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[ArqRedis]:
    async with redis_server.fresh_arq_client(QUEUE) as client:
        yield client


@pytest.fixture
async def leases(redis: ArqRedis) -> AsyncIterator[LeaseKeeper]:
    keeper = LeaseKeeper(redis, lease_seconds=LEASE)
    await keeper.start()
    try:
        yield keeper
    finally:
        await keeper.stop()


def in_progress(job_id: str) -> str:
    return in_progress_key_prefix + job_id


async def test_renew_pushes_the_expiry_back_to_a_whole_lease(redis: ArqRedis) -> None:
    keeper = LeaseKeeper(redis, lease_seconds=3)  # not started: only the renewal called here
    job_id = uuid.uuid4().hex
    await redis.psetex(in_progress(job_id), keeper.lease_ms, b"1")  # as the claim leaves it
    keeper.claimed(job_id)
    await asyncio.sleep(0.5)
    before = await redis.pttl(in_progress(job_id))

    await keeper.renew()

    after = await redis.pttl(in_progress(job_id))
    assert 0 < before <= keeper.lease_ms - 500
    assert before < after <= keeper.lease_ms


async def test_hold_cuts_arqs_long_ttl_to_the_lease(redis: ArqRedis) -> None:
    keeper = LeaseKeeper(redis, lease_seconds=LEASE)
    job_id = uuid.uuid4().hex
    await redis.setex(in_progress(job_id), 310, b"1")  # ARQ's own poll: its job timeout + 10 s

    await keeper.hold(job_id)

    assert 0 < await redis.pttl(in_progress(job_id)) <= keeper.lease_ms
    assert job_id in keeper.held


async def test_renew_does_not_bring_back_a_key_arq_deleted(redis: ArqRedis) -> None:
    keeper = LeaseKeeper(redis, lease_seconds=LEASE)
    job_id = uuid.uuid4().hex
    keeper.claimed(job_id)  # the job ended and ARQ deleted the key before the lease was released

    await keeper.renew()

    assert not await redis.exists(in_progress(job_id))


async def test_a_held_lease_outlives_its_ttl_and_a_released_one_runs_out(redis: ArqRedis, leases: LeaseKeeper) -> None:
    job_id = uuid.uuid4().hex
    await redis.psetex(in_progress(job_id), leases.lease_ms, b"1")
    leases.claimed(job_id)

    deadline = time.monotonic() + 3 * LEASE
    while time.monotonic() < deadline:  # three leases long, the key never lapses
        assert 0 < await redis.pttl(in_progress(job_id)) <= leases.lease_ms
        await asyncio.sleep(0.02)

    leases.release(job_id)
    await soon(lambda: _gone(redis, job_id))  # no longer renewed: it runs out


async def test_a_job_running_several_leases_long_is_not_taken_over(
    redis_server: RedisServer, redis: ArqRedis, leases: LeaseKeeper
) -> None:
    """Two workers polling often: a lapsed lease would let the other one run the job again."""
    ran = Ran()
    first = worker_for(redis_server, ran, poll_delay=0.05)
    second = worker_for(redis_server, ran, poll_delay=0.05)
    first.ctx["leases"] = second.ctx["leases"] = leases
    async with running(first, redis), running(second, redis):
        job_id = await enqueue(redis, "long", seconds=3 * LEASE)
        await soon(lambda: redis.exists(in_progress(job_id)))
        await until_ran(ran, 1)
        await asyncio.sleep(1.5 * LEASE)  # time for a second run to end, had the key lapsed

    assert ran.messages == ["long"], "the job ran again while its first run held the lease"


async def _gone(redis: ArqRedis, job_id: str) -> bool:
    return not await redis.exists(in_progress(job_id))
