"""Postgres stopped while a job runs, or down when a job is posted."""

from __future__ import annotations

import asyncio

import asyncpg

from tests.faults.conftest import QUEUE, FaultStack, until
from tests.support.jobs_client import wait_for_job


async def test_postgres_stopped_while_a_job_runs_is_retried_and_completes_once(stack: FaultStack) -> None:
    lock = await asyncpg.connect(stack.postgres.dsn("afterword"))
    try:
        transaction = lock.transaction()
        await transaction.start()
        # The job writes its line, then waits to record it: that is when Postgres goes away.
        await lock.execute("LOCK TABLE job_effects IN EXCLUSIVE MODE")
        answer = await stack.post("/process")
        (job_id,) = (job["id"] for job in answer["jobs"])

        async def line_written() -> bool:
            return any(line["job_id"] == job_id for line in stack.log_lines())

        await until(line_written, within=15, what="the log line was written")
        stack.postgres.stop("fast")
    finally:
        lock.terminate()
    await asyncio.sleep(2)
    stack.postgres.start()

    job = await wait_for_job(stack.http, job_id, within=60)
    assert job["status"] == "succeeded", __import__("json").dumps(job)
    assert len(job["attempts"]) >= 2, "the attempt cut off by the outage was followed by another"
    assert [line["message"] for line in stack.log_lines() if line["job_id"] == job_id] == ["Process started"]


async def test_postgres_down_during_the_post_is_503_and_queues_nothing(stack: FaultStack) -> None:
    before = [m for m in await stack.redis_client.zrange(QUEUE, 0, -1) if not m.startswith(b"cron:")]
    stack.postgres.stop("fast")
    try:
        response = await stack.http.post("/process")
        assert response.status_code == 503
        assert "Postgres" in response.json()["detail"]
        assert (await stack.http.get("/jobs/anything")).status_code == 503
        ready = await stack.http.get("/readyz")
        assert ready.status_code == 503
        assert "postgres" in ready.json()["down"]
        after = [m for m in await stack.redis_client.zrange(QUEUE, 0, -1) if not m.startswith(b"cron:")]
        assert set(after) <= set(before), "nothing may be queued without its ledger row"
    finally:
        stack.postgres.start()
