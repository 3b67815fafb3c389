"""A worker that lost its lease while alive changes nothing: paused, stalled on Postgres, cut off from Redis.

Each test runs its job on a worker of its own (the stack's two are stopped first), breaks that
worker past its lease (LEASE_SECONDS, 9 s) while a second worker could take the job over, and
then checks that the job ended once, with the outcome of the attempt that held the lease; that
nothing the broken worker wrote after it lost the lease shows in the ledger or in Redis (the
attempt rows, the job's status, its keys), that it logged and counted its writes as fenced; that
no job ran a third time and no email went out twice beyond the inherent window (a 250 the worker
received but could not record). The stack's books are checked after each test, as for every
fault test: no log line written twice.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix

from services.core.serialization import deserialize
from services.queue.heartbeat import live_workers
from tests.faults.conftest import QUEUE, FaultStack, until
from tests.support.jobs_client import wait_for_job
from tests.support.ports import free_port
from tests.support.relay import Relay
from tests.support.services import ServiceProcess

LEASE = 9.0
"""The stack's LEASE_SECONDS (the default)."""
INTERRUPTED_BY_THE_NEXT_START = "the worker stopped before the attempt ended"
"""The error the next attempt's start gives an attempt it closes (migration 0011)."""


def unique(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


async def only_worker(stack: FaultStack, env: dict[str, str] | None = None) -> tuple[ServiceProcess, int]:
    """Stop the stack's workers and start one with a metrics endpoint: every job goes to it."""
    for worker in list(stack.workers):
        await asyncio.to_thread(worker.stop)  # one just started by the last heal may not handle SIGTERM yet
        stack.drop_worker(worker)
    port = free_port()
    worker = stack.add_worker({"WORKER_METRICS_PORT": str(port), **(env or {})})
    await stack.ready()
    return worker, port


async def retire(stack: FaultStack, worker: ServiceProcess) -> None:
    """Stop a worker that reaches Redis through a relay, before the relay closes: the stack's next
    heal waits for every worker it keeps to beat, and this one could not once the relay is gone."""
    await asyncio.to_thread(worker.stop)
    stack.drop_worker(worker)


async def send_email(stack: FaultStack, address: str) -> str:
    accepted = await stack.post(
        "/jobs", {"name": "send_email", "payload": {"to": address, "subject": "s", "body": "b"}}
    )
    return str(accepted["id"])


def fenced_lines(worker: ServiceProcess, job_id: str) -> list[str]:
    return [line for line in worker.output().splitlines() if "fenced: " in line and job_id in line]


async def fenced_writes(port: int) -> dict[str, float]:
    """The worker's afterword_fenced_writes_total, by write."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
    found = re.findall(r'^afterword_fenced_writes_total\{write="(\w+)"\} (\S+)$', text, re.MULTILINE)
    return {write: float(value) for write, value in found}


async def redis_state(stack: FaultStack, job_id: str) -> dict[str, Any]:
    """What Redis holds of the job: its lease, queue entry, job key, try count and result."""
    redis = stack.redis_client
    result = await redis.get(result_key_prefix + job_id)
    return {
        "in_progress": await redis.get(in_progress_key_prefix + job_id),
        "queued": await redis.zscore(QUEUE, job_id) is not None,
        "job_key": bool(await redis.exists(job_key_prefix + job_id)),
        "try_count": await redis.get(retry_key_prefix + job_id),
        "result": None if result is None else deserialize(result),
    }


def attempts(job: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(attempt["worker"], attempt["outcome"]) for attempt in job["attempts"]]


async def assert_ended_by(stack: FaultStack, job_id: str, *, stale: str, live: str) -> dict[str, Any]:
    """The job succeeded once, in its second attempt (``live``'s); the first (``stale``'s) was closed by that start."""
    job = await wait_for_job(stack.http, job_id, within=60)
    assert job["status"] == "succeeded", job
    assert attempts(job) == [(stale, "interrupted"), (live, "succeeded")], job["attempts"]
    assert job["attempts"][0]["error"] == INTERRUPTED_BY_THE_NEXT_START, "the stale attempt was written after it closed"
    state = await redis_state(stack, job_id)
    assert (state["in_progress"], state["queued"], state["job_key"]) == (None, False, False), state
    assert state["result"]["t"] == 2, state  # ARQ's result is the live run's (its second try), not overwritten
    return job


async def test_a_worker_paused_past_its_lease_after_another_ran_its_job_changes_nothing(stack: FaultStack) -> None:
    """SIGSTOP as the worker starts the job; another takes it over and finishes; SIGCONT."""
    paused, port = await only_worker(stack)
    address = unique("paused-start")
    async with stack.db.acquire() as lock, lock.transaction():
        await lock.execute("LOCK TABLE job_attempts IN EXCLUSIVE MODE")  # holds the worker's start
        job_id = await send_email(stack, address)

        async def start_waiting() -> bool:
            waiting = await stack.db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'WITH started%'"
            )
            return bool(waiting)

        await until(start_waiting, within=15, what="the worker's start waits on the lock")
        paused.signal(signal.SIGSTOP)
    # The lock is gone: the paused worker's start commits, an answer it cannot read yet.
    await until(lambda: _attempt_count(stack, job_id, 1), within=10, what="the paused worker's start committed")
    other = stack.add_worker()
    try:
        job = await wait_for_job(stack.http, job_id, within=LEASE + 30)  # taken over once the lease ran out
        assert job["status"] == "succeeded", job
    finally:
        paused.signal(signal.SIGCONT)
    stale, live = job["attempts"][0]["worker"], job["attempts"][1]["worker"]
    assert stack.worker_by_id(stale) is paused
    assert stack.worker_by_id(live) is other

    await until(lambda: _settled(stack, paused, job_id, address, sent=1), within=20, what="the woken worker acted")
    await asyncio.sleep(1)  # whatever else the woken worker would still do
    assert len(stack.sink.messages_to(address)) == 1, "the woken worker sent the email again"
    await assert_ended_by(stack, job_id, stale=stale, live=live)
    assert fenced_lines(paused, job_id)
    assert sum((await fenced_writes(port)).values()) >= 1


async def test_a_worker_paused_in_an_email_while_another_runs_the_job_changes_nothing(stack: FaultStack) -> None:
    """SIGSTOP while the worker's email is in DATA; another takes the job over; SIGCONT while it runs."""
    paused, port = await only_worker(stack)
    address = unique("paused-data")
    accepted, _ = await stack.email_in_flight(address, delay=2)  # the 250 comes while the worker is stopped
    job_id = accepted["id"]
    paused.signal(signal.SIGSTOP)
    waiting = stack.sink.waiting
    stack.sink.slow_down(12)  # the other worker's DATA: long enough to wake the paused one meanwhile
    other = stack.add_worker()
    try:

        async def in_data_again() -> bool:
            return stack.sink.waiting > waiting

        await until(in_data_again, within=LEASE + 30, what="the other worker took the job over and sends")
    finally:
        paused.signal(signal.SIGCONT)
    await until(lambda: _settled(stack, paused, job_id, address, sent=2), within=10, what="the woken worker acted")
    await asyncio.sleep(1)

    # The other worker still runs the job: its lease and the job's place in the queue are whole.
    running = await stack.job(job_id)
    stale, live = running["attempts"][0]["worker"], running["attempts"][1]["worker"]
    assert stack.worker_by_id(stale) is paused
    assert stack.worker_by_id(live) is other
    assert running["status"] == "in_progress", running
    assert attempts(running) == [(stale, "interrupted"), (live, None)]
    state = await redis_state(stack, job_id)
    assert state["in_progress"] is not None, state
    assert state["in_progress"].startswith(live.encode() + b":"), state
    assert (state["queued"], state["job_key"], state["result"]) == (True, True, None), state

    stack.sink.slow_down(0)
    await assert_ended_by(stack, job_id, stale=stale, live=live)
    # The paused worker's email was accepted while it was stopped: the inherent window.
    assert len(stack.sink.messages_to(address)) == 2
    stack.window_duplicates.add(job_id)
    assert fenced_lines(paused, job_id)
    assert sum((await fenced_writes(port)).values()) >= 1


async def test_a_worker_whose_postgres_stalls_keeps_its_lease_and_ends_its_job_once(stack: FaultStack) -> None:
    """Postgres stalls for one worker (a relay holding its traffic) past the lease while Redis answers."""
    async with Relay("127.0.0.1", stack.postgres.port) as relay:
        stalled, _ = await only_worker(
            stack, {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{relay.port}/afterword"}
        )
        address = unique("pg-stall")
        accepted, _ = await stack.email_in_flight(address, delay=4)
        job_id = accepted["id"]
        relay.stall()  # the 250 comes in a few seconds; the attempt's end cannot reach Postgres
        stalled_at = time.monotonic()
        stack.sink.slow_down(0)
        other = stack.add_worker()  # could take the job over, were the lease let go
        await stack.ready()
        try:
            while time.monotonic() - stalled_at < LEASE + 4:  # past a lease: another worker would have taken it
                job = await stack.job(job_id)
                assert len(job["attempts"]) == 1, job["attempts"]
                await asyncio.sleep(0.5)
        finally:
            relay.release()

        job = await wait_for_job(stack.http, job_id, within=60)
    assert job["status"] == "succeeded", job
    assert [(stack.worker_by_id(w), outcome) for w, outcome in attempts(job)] == [(stalled, "succeeded")]
    assert len(stack.sink.messages_to(address)) == 1
    assert other.process is not None
    assert other.process.poll() is None


async def test_a_worker_cut_off_from_postgres_gives_its_job_up_in_time_and_rejoins(stack: FaultStack) -> None:
    """Postgres cut off for one worker (a relay dropping its traffic) for longer than it tries to write its end.

    Its statements time out (a third of the lease) instead of waiting for the network: it tries its
    end again while it holds the lease, then hands the job back, and the other worker runs it while
    the first is still cut off. The first worker got the 250 and could not record it: the email goes
    out twice, the inherent window.
    """
    async with Relay("127.0.0.1", stack.postgres.port) as relay:
        dsn = f"postgresql://postgres@127.0.0.1:{relay.port}/afterword"
        cut_off, _ = await only_worker(stack, {"DATABASE_URL": dsn})
        address = unique("pg-cut")
        accepted, _ = await stack.email_in_flight(address, delay=3)
        job_id = accepted["id"]
        relay.cut()  # the 250 comes in a moment; the attempt's end cannot reach Postgres
        stack.sink.slow_down(0)
        other = stack.add_worker()
        job = await wait_for_job(stack.http, job_id, within=3 * LEASE + 60)  # while still cut off
        assert job["status"] == "succeeded", job
        assert [(stack.worker_by_id(w), outcome) for w, outcome in attempts(job)] == [
            (cut_off, "interrupted"),
            (other, "succeeded"),
        ]
        assert len(stack.sink.messages_to(address)) == 2
        stack.window_duplicates.add(job_id)
        relay.heal()

        # The network is back: the worker's statements reach Postgres again.
        other.signal(signal.SIGTERM)
        assert await asyncio.to_thread(other.wait, 30) == 0
        stack.drop_worker(other)
        answer = await stack.post("/process")
        (later,) = (j["id"] for j in answer["jobs"])
        done = await wait_for_job(stack.http, later, within=30)
        assert done["status"] == "succeeded", done
        assert [stack.worker_by_id(w) for w, _ in attempts(done)] == [cut_off]


async def test_a_worker_cut_off_from_redis_stands_down_and_rejoins(stack: FaultStack) -> None:
    """The worker's Redis traffic is cut mid-job (a relay that drops it) past the lease, then healed."""
    async with Relay("127.0.0.1", stack.redis.port) as relay:
        cut_off, _ = await only_worker(stack, {"REDIS_URL": f"redis://127.0.0.1:{relay.port}/0"})
        address = unique("redis-cut")
        accepted, _ = await stack.email_in_flight(address, delay=LEASE + 8)  # its DATA outlasts its lease
        job_id = accepted["id"]
        stack.sink.slow_down(0)
        relay.cut()
        other = stack.add_worker()
        job = await wait_for_job(stack.http, job_id, within=LEASE + 40)
        stale, live = job["attempts"][0]["worker"], job["attempts"][1]["worker"]
        assert stack.worker_by_id(stale) is cut_off
        assert stack.worker_by_id(live) is other
        await asyncio.sleep(10)  # the cut-off worker's DATA would have ended by now
        relay.heal()
        await assert_ended_by(stack, job_id, stale=stale, live=live)
        # It gave up the job when its lease ran out: it dropped the SMTP session before the 250.
        assert len(stack.sink.messages_to(address)) == 1
        assert fenced_lines(cut_off, job_id)  # its renewal and its finish, refused

        async def rejoined() -> bool:  # beating again, through the healed relay
            workers = await live_workers(stack.redis_client, stale_after_seconds=3)
            return any(worker.get("pid") == cut_off.pid for worker in workers)

        await until(rejoined, within=30, what="the cut-off worker rejoined")
        # The same process (its ARQ worker started again once Redis answered, with fresh metrics).
        assert cut_off.process is not None
        assert cut_off.process.poll() is None
        await retire(stack, cut_off)


async def heartbeat_of(stack: FaultStack, worker: ServiceProcess) -> dict[str, Any]:
    """The worker's heartbeat (its id among them), once it beats."""
    found: list[dict[str, Any]] = []

    async def beating() -> bool:
        found[:] = [w for w in await live_workers(stack.redis_client, stale_after_seconds=3) if w["pid"] == worker.pid]
        return bool(found)

    await until(beating, within=15, what=f"{worker.label} beats")
    return found[0]


async def _attempt_count(stack: FaultStack, job_id: str, count: int) -> bool:
    return bool(await stack.db.fetchval("SELECT count(*) FROM job_attempts WHERE job_id = $1", job_id) == count)


async def _settled(stack: FaultStack, worker: ServiceProcess, job_id: str, address: str, *, sent: int) -> bool:
    """The woken worker did something about the job: logged its writes fenced, sent an email, or wrote its end."""
    if fenced_lines(worker, job_id) or len(stack.sink.messages_to(address)) > sent:
        return True
    first = await stack.db.fetchval("SELECT error FROM job_attempts WHERE job_id = $1 AND try = 1", job_id)
    return bool(first != INTERRUPTED_BY_THE_NEXT_START)


async def test_jobs_handed_to_a_cut_off_worker_run_elsewhere_within_moments(stack: FaultStack) -> None:
    """Cut off while it waits: Redis still counts its subscription, and a job may be handed to it.

    That job is held for the cut-off worker only briefly, not a lease; and once its registration is
    older than a waiting worker's looks, it is never chosen again.
    """
    async with Relay("127.0.0.1", stack.redis.port) as relay:
        cut_off, _ = await only_worker(stack, {"REDIS_URL": f"redis://127.0.0.1:{relay.port}/0"})
        info = await heartbeat_of(stack, cut_off)
        other = stack.add_worker()
        await stack.ready()

        async def fresh() -> list[str]:  # registrations made in the last second, oldest first (not leftovers)
            since = time.time() * 1000 - 1000
            return [m.decode() for m in await stack.redis_client.zrangebyscore(QUEUE + ":idle", since, "+inf")]

        async def both_waiting() -> bool:
            members = await fresh()
            return len(members) == 2 and any(f"|{info['id']}|" in m for m in members)

        await until(both_waiting, within=15, what="both workers registered for hand-overs")
        relay.cut()

        async def cut_off_waits_longest() -> bool:  # the other registers anew at each look; this one cannot
            members = await fresh()
            return len(members) == 2 and f"|{info['id']}|" in members[0]

        await until(cut_off_waits_longest, within=2, what="the cut-off worker's registration is the oldest")
        handed = (await stack.post("/process"))["jobs"][0]["id"]
        holder = await stack.redis_client.get(in_progress_key_prefix + handed)
        assert holder is not None
        assert holder.startswith(info["id"].encode() + b":"), holder  # handed to the cut-off worker
        await asyncio.sleep(3)  # its registration is now older than a waiting worker's looks
        later = (await stack.post("/process"))["jobs"][0]["id"]

        for job_id in (handed, later):
            job = await wait_for_job(stack.http, job_id, within=30)
            assert job["status"] == "succeeded", job
            assert [stack.worker_by_id(w) for w, _ in attempts(job)] == [other]
            started = datetime.fromisoformat(job["attempts"][0]["started_at"])
            waited = (started - datetime.fromisoformat(job["enqueued_at"])).total_seconds()
            assert waited < LEASE, f"job {job_id} waited {waited:.1f}s"  # not a whole lease
        members = [m.decode() for m in await stack.redis_client.zrange(QUEUE + ":idle", 0, -1)]
        assert not any(f"|{info['id']}|" in m for m in members), members
        relay.heal()
        await stack.ready()
        assert cut_off.process is not None
        await retire(stack, cut_off)
