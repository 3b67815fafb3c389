"""The worker's writes to Redis fenced by its claim's token, against a real Redis.

A claim marks the job's ``arq:in-progress:<id>`` key with its token (``<worker id>:<ARQ try>``).
Renewing the lease, giving a hand-over back and ARQ's end of the job (its result, the removal of
its keys and queue entry, a retry's new score) are scripts that act only while the key holds the
worker's token: a worker whose lease ran out, and whose job another claim took, changes nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq import Retry
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from arq.worker import func
from redis.asyncio import Redis

from services.core.serialization import serialize
from services.queue import enqueue as queue
from services.queue.fencing import Fenced
from services.queue.handoff import Handoff
from services.queue.leases import LeaseKeeper
from services.queue.runner import Fetched
from services.queue.worker import QueueWorker
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.unit.test_wakeup import QUEUE, Ran, enqueue, running, soon, until_ran, worker_for, worker_with

OTHER = b"other-worker:2"
"""The token of another worker's claim, which took the job over after this worker's lease ran out."""


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[ArqRedis]:
    async with redis_server.fresh_arq_client(QUEUE) as client:
        yield client


def in_progress(job_id: str) -> str:
    return in_progress_key_prefix + job_id


async def claimed(redis: ArqRedis, job_id: str) -> bool:
    return bool(await redis.exists(in_progress(job_id)))


def idle(worker: QueueWorker) -> Any:
    async def check() -> bool:
        return all(task.done() for task in worker.tasks.values())

    return check


async def test_a_claim_marks_its_lease_with_the_worker_and_the_try(redis_server: RedisServer, redis: ArqRedis) -> None:
    ran = Ran()
    async with running(worker_for(redis_server, ran), redis) as worker:
        handed = await enqueue(redis, "handed over", seconds=0.5)  # the waiting worker's registration takes it
        claimed_after = await enqueue(redis, "claimed", seconds=0.5)  # woken, it claims this one
        await soon(lambda: claimed(redis, handed))
        await soon(lambda: claimed(redis, claimed_after))

        assert await redis.get(in_progress(handed)) == f"{worker.worker_id}:1".encode()
        assert await redis.get(in_progress(claimed_after)) == f"{worker.worker_id}:1".encode()
        await until_ran(ran, 2)


async def test_the_end_of_a_job_another_claim_took_over_changes_nothing(
    redis_server: RedisServer, redis: ArqRedis
) -> None:
    ran = Ran()
    async with running(worker_for(redis_server, ran), redis) as worker:
        job_id = await enqueue(redis, "stale", seconds=0.5)
        await soon(lambda: claimed(redis, job_id))
        await redis.set(in_progress(job_id), OTHER, px=60_000)  # its lease ran out; another claim took it
        await until_ran(ran, 1)
        await soon(idle(worker))

        assert await redis.get(in_progress(job_id)) == OTHER  # the other claim's lease is left alone
        assert await redis.zscore(QUEUE, job_id) is not None  # still queued: the other run ends it
        assert await redis.exists(job_key_prefix + job_id, retry_key_prefix + job_id) == 2
        assert not await redis.exists(result_key_prefix + job_id)


async def test_a_late_retry_does_not_put_back_a_job_another_worker_finished(
    redis_server: RedisServer, redis: ArqRedis
) -> None:
    go = asyncio.Event()

    async def record(ctx: dict[str, Any], message: str, seconds: float = 0) -> str:
        await go.wait()
        raise Retry(defer=0.01)

    async with running(worker_with(redis_server, [func(record, name="record")]), redis) as worker:
        job_id = await enqueue(redis, "retried late")
        await soon(lambda: claimed(redis, job_id))
        # Its lease ran out; another worker claimed the job and finished it, as ARQ's end does.
        async with redis.pipeline(transaction=True) as pipe:
            pipe.delete(in_progress(job_id), job_key_prefix + job_id, retry_key_prefix + job_id)
            pipe.zrem(QUEUE, job_id)
            pipe.set(result_key_prefix + job_id, b"theirs")
            await pipe.execute()
        go.set()
        await soon(idle(worker))

        assert await redis.zscore(QUEUE, job_id) is None  # not queued again by the late retry
        assert await redis.get(result_key_prefix + job_id) == b"theirs"


async def test_a_lease_another_claim_holds_is_not_renewed_and_its_run_is_cancelled(
    redis_server: RedisServer, redis: ArqRedis
) -> None:
    ran = Ran()
    worker = worker_for(redis_server, ran)
    worker.ctx["leases"] = leases = LeaseKeeper(redis, lease_seconds=1.0)
    await leases.start()
    try:
        async with running(worker, redis):
            job_id = await enqueue(redis, "taken over", seconds=3)
            await soon(lambda: claimed(redis, job_id))
            await redis.set(in_progress(job_id), OTHER, px=1000)

            async def gone() -> bool:
                return not await claimed(redis, job_id)

            await soon(gone)  # not renewed: the other claim's lease runs out as it was set
            await soon(idle(worker))  # the run was cancelled, long before its 3 s
            assert ran.messages == []
    finally:
        await leases.stop()


async def test_renewing_with_a_stale_token_does_not_extend_the_lease(redis: ArqRedis) -> None:
    keeper = LeaseKeeper(redis, lease_seconds=3)
    lost: list[str] = []
    keeper.on_lost = lambda fenced: lost.append(fenced.job_id)
    job_id = uuid.uuid4().hex
    await redis.psetex(in_progress(job_id), 500, OTHER)
    keeper.claimed(job_id, "this-worker:1")

    await keeper.renew()

    assert 0 < await redis.pttl(in_progress(job_id)) <= 500
    assert await redis.get(in_progress(job_id)) == OTHER
    assert lost == [job_id]
    assert keeper.lost(job_id)
    assert job_id not in keeper.held


async def test_a_lease_that_cannot_be_renewed_is_lost_when_it_runs_out() -> None:
    """Redis unreachable: the worker counts its lease as lost once a lease has passed since it last held it."""
    unreachable = Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    keeper = LeaseKeeper(unreachable, lease_seconds=1.0)
    lost: list[str] = []
    gone = asyncio.Event()

    def lose(fenced: Fenced) -> None:
        lost.append(fenced.job_id)
        gone.set()

    keeper.on_lost = lose
    job_id = uuid.uuid4().hex
    keeper.claimed(job_id, "this-worker:1")
    assert keeper.holds(job_id)
    await keeper.start()
    try:
        await asyncio.wait_for(gone.wait(), 5)
    finally:
        await keeper.stop()
        await unreachable.aclose()

    assert lost == [job_id]
    assert not keeper.holds(job_id)


async def test_giving_back_a_hand_over_another_claim_took_changes_nothing(
    redis_server: RedisServer, redis: ArqRedis
) -> None:
    ran = Ran()
    async with running(worker_for(redis_server, ran), redis) as worker:
        job_id = uuid.uuid4().hex
        entry = queue.Entry("record", job_id, args=("given back late",))
        await queue.enqueue(redis, [entry], queue_name=QUEUE, serializer=serialize, wake=False)
        # Handed to this worker as try 1, whose short hold ran out; another claim took it as try 2.
        await redis.set(in_progress(job_id), OTHER, px=60_000)
        await redis.set(retry_key_prefix + job_id, 2)
        given = Handoff(registration="gone", job_id=job_id, score=0, fetched=Fetched(data=None, job_try=1, abort=False))

        worker._give_back(given, why="a test")
        await asyncio.sleep(0.5)  # the give-back runs in the background

        assert await redis.get(in_progress(job_id)) == OTHER
        assert await redis.get(retry_key_prefix + job_id) == b"2"


async def test_a_claim_the_ledger_refused_sets_the_try_count_past_the_ledgers(redis: ArqRedis) -> None:
    """Redis lost the job and its count: the refused claim, still holding the key, counts on from the ledger's try."""
    keeper = LeaseKeeper(redis, lease_seconds=3)
    job_id = uuid.uuid4().hex
    await redis.psetex(in_progress(job_id), 3000, b"this-worker:1")
    await redis.set(retry_key_prefix + job_id, 1)
    keeper.claimed(job_id, "this-worker:1")

    assert await keeper.count_from(job_id, 5)
    assert await redis.get(retry_key_prefix + job_id) == b"5"  # the next claim is try 6
    assert await keeper.count_from(job_id, 3)
    assert await redis.get(retry_key_prefix + job_id) == b"5"  # never counted back


async def test_a_stale_claim_does_not_touch_the_try_count(redis: ArqRedis) -> None:
    keeper = LeaseKeeper(redis, lease_seconds=3)
    job_id = uuid.uuid4().hex
    await redis.psetex(in_progress(job_id), 3000, OTHER)
    await redis.set(retry_key_prefix + job_id, 2)
    keeper.claimed(job_id, "this-worker:1")

    assert not await keeper.count_from(job_id, 5)
    assert await redis.get(retry_key_prefix + job_id) == b"2"


async def test_a_lease_key_of_the_wrong_type_loses_that_lease_only(redis: ArqRedis) -> None:
    """Anyone who can write to Redis can leave a hash where a job's in-progress key belongs: that job's
    lease is lost (the key is not its claim's), and the other leases renewed in the same script hold."""
    leases = LeaseKeeper(redis, lease_seconds=3)
    planted, kept = f"planted-{uuid.uuid4().hex}", f"kept-{uuid.uuid4().hex}"
    for job_id in (planted, kept):
        await redis.set(in_progress(job_id), "me:1", px=3000)
        leases.claimed(job_id, "me:1")
    async with redis.pipeline(transaction=True) as pipe:  # a hash where the claim's token was
        pipe.delete(in_progress(planted))
        pipe.hset(in_progress(planted), "field", "value")
        await pipe.execute()

    await leases.renew()

    assert leases.lost(planted)
    assert leases.holds(kept)
    assert 2000 < await redis.pttl(in_progress(kept)) <= 3000


async def test_counting_on_past_a_try_counter_that_is_not_a_number_sets_it(redis: ArqRedis) -> None:
    leases = LeaseKeeper(redis, lease_seconds=3)
    job_id = f"recount-{uuid.uuid4().hex}"
    await redis.set(in_progress(job_id), "me:1", px=3000)
    leases.claimed(job_id, "me:1")
    await redis.set(retry_key_prefix + job_id, "not a number")

    assert await leases.count_from(job_id, 4)

    assert await redis.get(retry_key_prefix + job_id) == b"4"
