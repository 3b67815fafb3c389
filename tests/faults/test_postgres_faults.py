"""Postgres stopped while a job runs, or down when a job is posted."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx

from services.gateway.identifiers import new_id
from tests.faults.conftest import QUEUE, FaultStack, until
from tests.support.jobs_client import wait_for_job
from tests.support.sse import read_events


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
    # The attempt cut off by the outage held its lease and wrote its end once Postgres was back.
    assert [attempt["outcome"] for attempt in job["attempts"]] == ["succeeded"], job["attempts"]
    assert [line["message"] for line in stack.log_lines() if line["job_id"] == job_id] == ["Process started"]


async def test_postgres_down_during_the_post_is_503_and_queues_nothing(stack: FaultStack) -> None:
    before = [m for m in await stack.redis_client.zrange(QUEUE, 0, -1) if not m.startswith(b"cron:")]
    stack.postgres.stop("fast")
    try:
        response = await stack.http.post("/process")
        assert response.status_code == 503
        assert "Postgres" in response.json()["detail"]
        assert (await stack.http.get(f"/jobs/{new_id()}")).status_code == 503
        metrics = await stack.http.get("/metrics")  # without the figures read from Postgres
        assert metrics.status_code == 200
        assert "afterword_http_requests_total" in metrics.text
        ready = await stack.http.get("/readyz")
        assert ready.status_code == 503
        assert "postgres" in ready.json()["down"]
        after = [m for m in await stack.redis_client.zrange(QUEUE, 0, -1) if not m.startswith(b"cron:")]
        assert set(after) <= set(before), "nothing may be queued without its ledger row"
    finally:
        stack.postgres.start()


async def test_a_stream_and_a_long_poll_open_across_a_postgres_crash_see_the_job_end(stack: FaultStack) -> None:
    """Postgres crashes (no clean shutdown: the unlogged watch table is emptied) and comes back
    while a client follows a deferred job and another long-polls it; both see it succeed."""
    accepted = await stack.post("/jobs", {"name": "write_log", "payload": {"message": "across"}, "defer_by": 6})
    job_id = accepted["id"]
    seen: list[str] = []
    first = asyncio.Event()

    async def follow() -> None:
        async with stack.http.stream("GET", f"/jobs/{job_id}/events", timeout=httpx.Timeout(60)) as response:
            assert response.status_code == 200
            async for event in read_events(response):
                seen.append(event.json()["status"])
                first.set()

    async def long_poll() -> dict[str, Any]:
        response = await stack.http.get(f"/jobs/{job_id}", params={"wait": 40}, timeout=60)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    stream = asyncio.create_task(follow())
    poll = asyncio.create_task(long_poll())
    await asyncio.wait_for(first.wait(), 10)
    await asyncio.sleep(0.5)  # the long poll has read the job and waits too
    stack.postgres.stop("immediate")
    await asyncio.sleep(2)
    stack.postgres.start()

    await asyncio.wait_for(stream, 60)
    assert seen[0] == "deferred"
    assert seen[-1] == "succeeded", seen
    assert "in_progress" in seen, seen
    assert (await asyncio.wait_for(poll, 60))["status"] == "succeeded"
