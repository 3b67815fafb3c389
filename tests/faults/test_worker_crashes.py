"""SIGKILL a worker in the middle of each job kind, SIGTERM one in the middle of a job."""

from __future__ import annotations

import signal
import time
import uuid
from datetime import datetime

from tests.faults.conftest import FaultStack, kill, until
from tests.support.jobs_client import wait_for_job

RECOVERY_BOUND = 15.0
"""Promise: a killed worker's job runs again on another worker within this many seconds."""


def unique(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


async def assert_taken_over(stack: FaultStack, job_id: str, killed_at: float) -> dict[str, object]:
    job = await wait_for_job(stack.http, job_id, within=60)
    assert job["status"] == "succeeded", job
    first, second = job["attempts"]
    assert first["outcome"] == "interrupted"
    assert second["outcome"] == "succeeded"
    assert first["worker"] != second["worker"], "the job must run again on another worker"
    restarted = datetime.fromisoformat(second["started_at"]).timestamp()
    assert restarted - killed_at < RECOVERY_BOUND, f"taken over after {restarted - killed_at:.1f}s"
    return job


async def test_sigkill_while_sending_an_email_delivers_it_once(stack: FaultStack) -> None:
    address = unique("kill-mail")
    accepted, victim = await stack.email_in_flight(address, delay=5)
    kill(victim)
    killed_at = time.time()
    stack.drop_worker(victim)
    stack.sink.slow_down(0)

    await assert_taken_over(stack, accepted["id"], killed_at)
    messages = stack.sink.messages_to(address)
    assert len(messages) == 1
    assert messages[0]["Message-ID"].startswith(f"<{accepted['id']}@")


async def test_sigkill_after_the_log_line_was_written_does_not_write_it_again(stack: FaultStack) -> None:
    async with stack.db.acquire() as conn, conn.transaction():
        # Lets the job read job_effects and write its line, then holds it at recording the effect.
        await conn.execute("LOCK TABLE job_effects IN EXCLUSIVE MODE")
        accepted = await stack.post("/process")
        (job_id,) = (job["id"] for job in accepted["jobs"])
        running = await stack.wait_in_progress(job_id)

        async def line_written() -> bool:
            return any(line["job_id"] == job_id for line in stack.log_lines())

        await until(line_written, within=10, what="the log line was written")
        victim = stack.worker_by_id(running["attempts"][0]["worker"])
        kill(victim)
        killed_at = time.time()
        stack.drop_worker(victim)

        async def recording_abandoned() -> bool:
            # The dead worker's write, waiting on the lock, is cancelled by Postgres' check that
            # its client is still there, instead of committing once the lock is released.
            waiting = await stack.db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'WITH %'"
            )
            return not waiting

        await until(recording_abandoned, within=10, what="the killed worker's statement was cancelled")

    await assert_taken_over(stack, job_id, killed_at)
    assert [line["message"] for line in stack.log_lines() if line["job_id"] == job_id] == ["Process started"]


async def test_sigkill_during_the_user_update_applies_it_once(stack: FaultStack) -> None:
    email = unique("kill-user")
    async with stack.db.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE users IN EXCLUSIVE MODE")  # holds the upsert
        accepted = await stack.post("/jobs", {"name": "update_user", "payload": {"email": email, "name": "Kim"}})
        running = await stack.wait_in_progress(accepted["id"])

        async def upsert_waiting() -> bool:
            waiting = await stack.db.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO users%'"
            )
            return bool(waiting)

        await until(upsert_waiting, within=10, what="the upsert waits on the lock")
        victim = stack.worker_by_id(running["attempts"][0]["worker"])
        kill(victim)
        killed_at = time.time()
        stack.drop_worker(victim)

    await assert_taken_over(stack, accepted["id"], killed_at)
    rows = await stack.db.fetch("SELECT name FROM users WHERE email = $1", email)
    assert [row["name"] for row in rows] == ["Kim"]


async def test_sigterm_lets_the_running_job_finish_and_hands_back_nothing_twice(stack: FaultStack) -> None:
    address = unique("term-mail")
    accepted, worker = await stack.email_in_flight(address, delay=2)
    worker.signal(signal.SIGTERM)
    # Jobs accepted while it stops go to the other worker.
    later = await stack.post("/process")

    assert worker.wait(timeout=30) == 0
    stack.drop_worker(worker)
    job = await wait_for_job(stack.http, accepted["id"], within=30)
    assert job["status"] == "succeeded"
    assert [a["outcome"] for a in job["attempts"]] == ["succeeded"], "finished within the grace period"
    assert len(stack.sink.messages_to(address)) == 1
    (later_id,) = (j["id"] for j in later["jobs"])
    assert (await wait_for_job(stack.http, later_id, within=30))["status"] == "succeeded"


async def test_sigterm_past_the_grace_period_hands_the_job_back(stack: FaultStack) -> None:
    address = unique("term-late")
    accepted, worker = await stack.email_in_flight(address, delay=25)  # longer than SHUTDOWN_GRACE_SECONDS=15
    stack.sink.slow_down(0)  # this DATA keeps its 25 s; the hand-back's delivery will be quick
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=40) == 0
    stack.drop_worker(worker)

    job = await wait_for_job(stack.http, accepted["id"], within=60)
    assert job["status"] == "succeeded"
    assert [a["outcome"] for a in job["attempts"]] == ["interrupted", "succeeded"]
    assert len(stack.sink.messages_to(address)) == 1
