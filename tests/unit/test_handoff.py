"""Jobs handed by the enqueue to a waiting worker (``services.queue.handoff``), against a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss, in_progress_key_prefix, retry_key_prefix
from arq.jobs import Job
from arq.utils import timestamp_ms

from services.core.serialization import deserialize, serialize
from services.queue import claim as claims
from services.queue import enqueue as queue
from services.queue.handoff import HOLD_MS, parse, registration
from services.queue.leases import LeaseKeeper
from services.queue.worker import QueueWorker
from tests.support.redis_server import RedisServer
from tests.unit.test_job_runner import ended
from tests.unit.test_wakeup import QUEUE, Ran, enqueue, running, soon, until_ran, worker_for

IDLE = queue.idle_workers_key(QUEUE)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[ArqRedis]:
    async with redis_server.fresh_arq_client(QUEUE) as client:
        yield client


async def registrations(redis: ArqRedis) -> list[str]:
    return [member.decode() for member in await redis.zrange(IDLE, 0, -1)]


async def registered(redis: ArqRedis, worker: QueueWorker) -> bool:
    return any(member.endswith(worker._handoffs.channel) for member in await registrations(redis))


async def enqueue_with_id(redis: ArqRedis, job_id: str, message: str) -> bool:
    entry = queue.Entry("record", job_id, args=(message,), kwargs={})
    (queued,) = await queue.enqueue(redis, [entry], queue_name=QUEUE, serializer=serialize)
    return queued


def member(channel: str, *, count: int = 1, worker_id: str = "gone") -> str:
    """A registration on ``channel``, as a worker with a long poll delay makes it."""
    return registration(
        lease_ms=60000, aborts=False, count=count, max_age_ms=240_000, worker_id=worker_id, channel=channel
    )


def a_while_ago() -> int:
    """A registration's score: earlier than the test worker's, well within its age."""
    return timestamp_ms() - 100_000


def test_a_hand_over_message_carries_the_fetched_job() -> None:
    given = parse(b"1000|1|7|q:handoff:abc\njob-1\n1700000000000\n3\n1\n\x80binary\ndata\n")

    assert (given.registration, given.job_id, given.score) == ("1000|1|7|q:handoff:abc", "job-1", 1700000000000)
    assert (given.fetched.job_try, given.fetched.abort) == (3, True)
    assert given.fetched.data == b"\x80binary\ndata\n"  # the job's bytes, newlines and all


async def test_a_job_queued_while_the_worker_waits_is_handed_over(redis_server: RedisServer, redis: ArqRedis) -> None:
    ran = Ran()
    async with running(worker_for(redis_server, ran, max_jobs=5), redis) as worker:
        await soon(lambda: registered(redis, worker))
        job_id = await enqueue(redis, "handed")
        await until_ran(ran, 1)
        await soon(lambda: registered(redis, worker))  # waiting again: registered again
        job = Job(job_id, redis, _queue_name=QUEUE, _deserializer=deserialize)
        info = await job.result(timeout=5)

    assert info == "handed"
    assert worker.jobs_handed_over == 1
    assert not await redis.exists(in_progress_key_prefix + job_id, retry_key_prefix + job_id)
    assert await registrations(redis) == []  # a stopped worker withdraws its registration


async def test_a_worker_without_room_is_not_registered(redis_server: RedisServer, redis: ArqRedis) -> None:
    ran = Ran()
    async with running(worker_for(redis_server, ran, max_jobs=1), redis) as worker:
        await soon(lambda: registered(redis, worker))
        await enqueue(redis, "first", seconds=0.5)
        await asyncio.sleep(0.1)
        assert await registrations(redis) == []  # its one slot is taken
        await enqueue(redis, "second")  # not handed over: woken workers claim it when a slot frees
        await until_ran(ran, 2)

    assert ran.messages == ["first", "second"]
    assert worker.jobs_handed_over == 1


async def test_a_registration_nobody_listens_to_is_dropped_and_the_next_taken(
    redis_server: RedisServer, redis: ArqRedis
) -> None:
    gone = member(f"{QUEUE}:handoff:{uuid.uuid4().hex}")
    ran = Ran()
    async with running(worker_for(redis_server, ran), redis) as worker:
        await soon(lambda: registered(redis, worker))
        await redis.zadd(IDLE, {gone: a_while_ago()})  # the longest waiting: a worker gone without a word
        await enqueue(redis, "to the living")
        await until_ran(ran, 1)

    assert gone not in await registrations(redis)
    assert worker.jobs_handed_over == 1


async def test_with_no_worker_listening_the_job_just_waits_in_the_queue(redis: ArqRedis) -> None:
    gone = member(f"{QUEUE}:handoff:{uuid.uuid4().hex}")
    await redis.zadd(IDLE, {gone: a_while_ago()})
    job_id = uuid.uuid4().hex

    assert await enqueue_with_id(redis, job_id, "later")

    assert await registrations(redis) == []
    assert await redis.zscore(QUEUE, job_id) is not None
    assert not await redis.exists(in_progress_key_prefix + job_id, retry_key_prefix + job_id)  # not claimed


async def test_a_deferred_job_is_not_handed_over(redis_server: RedisServer, redis: ArqRedis) -> None:
    ran = Ran()
    async with running(worker_for(redis_server, ran), redis) as worker:
        await soon(lambda: registered(redis, worker))
        await enqueue(redis, "deferred", defer_by=0.3)
        await until_ran(ran, 1)

    assert worker.jobs_handed_over == 0


async def test_a_job_handed_to_a_registration_the_worker_no_longer_holds_is_given_back(
    redis_server: RedisServer, redis: ArqRedis
) -> None:
    ran = Ran()
    async with running(worker_for(redis_server, ran), redis) as worker:
        await soon(lambda: registered(redis, worker))
        stale = member(worker._handoffs.channel, count=999, worker_id=worker.worker_id)  # not one it holds
        await redis.zadd(IDLE, {stale: a_while_ago()})
        job_id = uuid.uuid4().hex
        await enqueue_with_id(redis, job_id, "given back, then claimed")
        info = await ended(redis, job_id)

    assert ran.messages == ["given back, then claimed"]
    assert info.job_try == 1  # the try counted by the hand-over was given back too
    assert worker.jobs_handed_over == 0


async def test_a_stopping_worker_gives_a_handed_over_job_back(redis_server: RedisServer, redis: ArqRedis) -> None:
    ran = Ran()
    async with running(worker_for(redis_server, ran), redis) as worker:
        await soon(lambda: registered(redis, worker))
        worker.allow_pick_jobs = False  # what a SIGTERM with a grace period does
        job_id = uuid.uuid4().hex
        await enqueue_with_id(redis, job_id, "not here")

        async def given_back() -> bool:
            return not await redis.exists(in_progress_key_prefix + job_id)

        await asyncio.sleep(0.2)
        await soon(given_back)

    assert ran.messages == []
    assert await redis.zscore(QUEUE, job_id) is not None  # still queued, for another worker
    assert not await redis.exists(retry_key_prefix + job_id)


async def test_a_job_marked_for_abort_is_handed_over_as_aborted(redis_server: RedisServer, redis: ArqRedis) -> None:
    ran = Ran()
    async with running(worker_for(redis_server, ran, allow_abort_jobs=True), redis) as worker:
        await soon(lambda: registered(redis, worker))
        job_id = uuid.uuid4().hex
        await redis.zadd(abort_jobs_ss, {job_id: timestamp_ms()})
        await enqueue_with_id(redis, job_id, "never")
        info = await ended(redis, job_id)

    assert not info.success
    assert ran.messages == []
    assert worker.jobs_handed_over == 1
    assert await redis.zscore(abort_jobs_ss, job_id) is None


async def test_slots_are_all_free_again_after_a_burst_of_hand_overs_and_claims(
    redis_server: RedisServer, redis: ArqRedis
) -> None:
    # Hand-overs, claims and job ends interleave: whatever the order, no slot may stay taken,
    # and the idle worker is registered again (a job's end registers it, not the next poll).
    ran = Ran()
    async with running(worker_for(redis_server, ran, max_jobs=3), redis) as worker:
        await soon(lambda: registered(redis, worker))
        for i in range(60):
            await enqueue(redis, f"job {i}", seconds=0.02)
            await asyncio.sleep(0.001 * (i % 4))
        await until_ran(ran, 60)

        async def settled() -> bool:  # every run over and counted, and the worker registered again
            held = worker.job_counter == len(worker._handoffs.holding) == 1  # only the registration's slot
            return held and await registered(redis, worker)

        await soon(settled)
        assert worker.jobs_handed_over > 0


async def test_a_job_handed_over_before_the_registering_claim_answers_takes_its_slot(
    redis_server: RedisServer, redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    claim = claims.SCRIPT
    registering = asyncio.Event()

    class SlowToAnswer:
        """The claim script, whose answer the worker reads only after the next hand-over arrived."""

        async def __call__(self, redis: ArqRedis, keys: list[str], args: list[Any]) -> Any:
            answer = await claim(redis, keys, args)
            if answer[4]:  # it registered the worker
                registering.set()
                await asyncio.sleep(0.3)
            return answer

    monkeypatch.setattr(claims, "SCRIPT", SlowToAnswer())
    ran = Ran()
    async with running(worker_for(redis_server, ran, max_jobs=2), redis) as worker:
        await registering.wait()
        registering.clear()
        await enqueue(redis, "handed before the answer")  # to the registration just made
        await until_ran(ran, 1)
        await registering.wait()  # registered again after the job

        async def idle_again() -> bool:
            return not any(not task.done() for task in worker.tasks.values())

        await soon(idle_again)
        await asyncio.sleep(0.35)  # the last answer is read

        assert worker.jobs_handed_over == 1
        assert worker.job_counter == len(worker._handoffs.holding) == 1  # no slot lost to the race


async def test_of_several_jobs_queued_at_once_one_goes_to_each_registration_the_rest_wake(
    redis_server: RedisServer, redis: ArqRedis
) -> None:
    ran = Ran()
    async with running(worker_for(redis_server, ran, max_jobs=5), redis) as worker:
        await soon(lambda: registered(redis, worker))
        entries = [queue.Entry("record", uuid.uuid4().hex, args=(f"job {i}",)) for i in range(3)]
        queued = await queue.enqueue(redis, entries, queue_name=QUEUE, serializer=serialize)
        await until_ran(ran, 3)

    assert queued == [True, True, True]
    assert worker.jobs_handed_over == 1  # the one registration took the first; a wake-up, the others
    assert sorted(ran.messages) == ["job 0", "job 1", "job 2"]


async def test_after_the_subscription_is_lost_the_worker_registers_anew_with_no_slot_lost(
    redis_server: RedisServer, redis: ArqRedis
) -> None:
    ran = Ran()
    async with running(worker_for(redis_server, ran, max_jobs=2, poll_delay=0.2), redis) as worker:
        await soon(lambda: registered(redis, worker))
        (before,) = await registrations(redis)
        await redis.client_kill_filter(_type="pubsub")  # the worker's subscription drops
        # Queued before the worker listens again: offered to its registration, whose channel
        # nobody hears any more, so the registration is dropped and the job waits for a look.
        await enqueue(redis, "while nobody listened")
        await until_ran(ran, 1)

        async def registered_elsewhere() -> bool:
            now = await registrations(redis)
            return len(now) == 1 and now[0] != before and await registered(redis, worker)

        await soon(registered_elsewhere)
        assert worker._handoffs.channel not in before  # a new channel: nothing sent to the old one is taken

        async def one_slot_held() -> bool:  # once the first job's end is counted
            return worker.job_counter == len(worker._handoffs.holding) == 1  # the dropped one's slot is free

        await soon(one_slot_held)
        await enqueue(redis, "on the new channel")
        await until_ran(ran, 2)

    assert worker.jobs_handed_over == 1


async def test_a_registration_not_made_anew_in_time_is_never_chosen(redis: ArqRedis) -> None:
    """A worker that stopped looking (paused, cut off) while Redis still counts its subscription."""
    channel = f"{QUEUE}:handoff:{uuid.uuid4().hex}"
    stale = member(channel)  # may be 240 s old
    async with redis.pubsub() as listener:  # its subscription, which Redis still counts
        await listener.subscribe(channel)
        await redis.zadd(IDLE, {stale: timestamp_ms() - 300_000})
        job_id = uuid.uuid4().hex

        assert await enqueue_with_id(redis, job_id, "not to the stale one")

        assert not await redis.exists(in_progress_key_prefix + job_id)  # not claimed for it: it waits
        assert await redis.zscore(QUEUE, job_id) is not None
        assert await registrations(redis) == []
        told = [await listener.get_message(ignore_subscribe_messages=True, timeout=1) for _ in range(2)]
        assert [m["data"] for m in told if m is not None] == [stale.encode()]  # dropped, and told so


async def test_a_slow_worker_told_its_registration_was_dropped_gets_its_slot_back(
    redis_server: RedisServer, redis: ArqRedis
) -> None:
    ran = Ran()
    async with running(worker_for(redis_server, ran, max_jobs=2), redis) as worker:
        await soon(lambda: registered(redis, worker))
        (made,) = await registrations(redis)
        await redis.zadd(IDLE, {made: timestamp_ms() - 300_000}, xx=True)  # as if it had not looked for long
        await enqueue(redis, "woken instead")  # drops the registration, tells the worker, wakes the workers
        await until_ran(ran, 1)

        async def one_slot_held() -> bool:  # registered anew, and only that registration holds a slot
            return worker.job_counter == len(worker._handoffs.holding) == 1 and await registered(redis, worker)

        await soon(one_slot_held)
        assert made not in await registrations(redis)
    assert worker.jobs_handed_over == 0


async def test_a_hand_over_the_worker_never_takes_is_claimed_by_another_within_moments(
    redis_server: RedisServer, redis: ArqRedis
) -> None:
    ran = Ran()
    deaf = worker_for(redis_server, ran)
    deaf.ctx["leases"] = LeaseKeeper(redis, lease_seconds=60)  # a long lease: only the hand-over's hold is short
    deaf._take_handoff = lambda given: None  # type: ignore[method-assign]  # paused: the job is never taken
    async with running(deaf, redis):
        await soon(lambda: registered(redis, deaf))
        job_id = await enqueue(redis, "taken elsewhere")
        assert 0 < await redis.pttl(in_progress_key_prefix + job_id) <= HOLD_MS  # handed to the deaf worker
        async with running(worker_for(redis_server, ran, poll_delay=0.2), redis):
            await until_ran(ran, 1)  # long before the deaf worker's lease would have run out

    assert ran.messages == ["taken elsewhere"]
