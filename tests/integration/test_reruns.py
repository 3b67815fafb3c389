"""A job run again after its effect was recorded does not do it again.

A worker killed after a job's effect was recorded but before the job's end leaves the ledger row
``in_progress`` with its attempt open, and the job in Redis as the claim left it (its job key, its
queue entry, its try counted), with no result. The tests put a finished job back in exactly that
state and let the stack's worker run it again.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from arq.constants import result_key_prefix, retry_key_prefix

from services.core.serialization import serialize
from services.queue import enqueue as queue
from tests.support.jobs_client import wait_for_job
from tests.support.observers import Observer


async def as_a_killed_worker_left_it(observer: Observer, job: dict[str, Any], *, tries_counted: int = 1) -> None:
    """Put an ended job back as a worker killed during its first attempt would have left it.

    ``tries_counted`` is ARQ's try count left in Redis (0: Redis lost it, with the job).
    """
    db, redis = observer.db, observer.redis
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE jobs SET status = 'in_progress', result = NULL, finished_at = NULL WHERE id = $1", job["id"]
        )
        await conn.execute(
            "UPDATE job_attempts SET outcome = NULL, finished_at = NULL WHERE job_id = $1 AND try = 1", job["id"]
        )
    # ARQ's end removed the job from Redis and stored its result; the killed worker's claim had
    # counted the try and left the job key and the queue entry. Its in-progress key (its lease)
    # has run out.
    await redis.delete(result_key_prefix + job["id"])
    if tries_counted:
        await redis.set(retry_key_prefix + job["id"], tries_counted)
    else:
        await redis.delete(retry_key_prefix + job["id"])
    entry = queue.Entry(function=job["name"], job_id=job["id"], args=(job["payload"],))
    assert await queue.enqueue(
        redis, [entry], queue_name=observer.queue_name or "afterword:queue", serializer=serialize
    ) == [True]


async def test_an_email_run_again_after_it_was_recorded_is_not_sent_again(
    client: httpx.AsyncClient, observer: Observer
) -> None:
    sink = observer.require_sink()
    address = f"once-{uuid.uuid4().hex[:10]}@example.com"
    response = await client.post(
        "/jobs", json={"name": "send_email", "payload": {"to": address, "subject": "Once", "body": "Only once"}}
    )
    assert response.status_code == 202, response.text
    first = await wait_for_job(client, response.json()["id"])
    assert first["status"] == "succeeded", first
    assert first["result"]["sent_now"] is True
    assert len(sink.messages_to(address)) == 1
    assert (
        await observer.db.fetchval(
            "SELECT count(*) FROM job_effects WHERE job_id = $1 AND effect = 'email'", first["id"]
        )
        == 1
    )

    await as_a_killed_worker_left_it(observer, first)
    again = await wait_for_job(client, first["id"])

    assert again["status"] == "succeeded", again
    assert [a["outcome"] for a in again["attempts"]] == ["interrupted", "succeeded"], "it did run again"
    assert again["result"]["sent_now"] is False
    assert again["result"]["message_id"] == first["result"]["message_id"]
    assert len(sink.messages_to(address)) == 1


async def test_a_job_redis_lost_while_its_attempt_was_open_runs_again_once(
    client: httpx.AsyncClient, observer: Observer
) -> None:
    """Redis lost the job and its try count while the ledger held its attempt open (a killed worker's).

    The next claim counts from try 1 again, behind the open attempt's: the ledger refuses its start,
    the worker sets the count past the ledger's and lets the job go, and the claim after starts it.
    """
    response = await client.post("/process")
    assert response.status_code == 202, response.text
    (job_id,) = (job["id"] for job in response.json()["jobs"])
    first = await wait_for_job(client, job_id)
    assert first["status"] == "succeeded", first

    await as_a_killed_worker_left_it(observer, first, tries_counted=0)
    again = await wait_for_job(client, job_id)

    assert again["status"] == "succeeded", again
    assert [a["outcome"] for a in again["attempts"]] == ["interrupted", "succeeded"], again["attempts"]
    assert again["result"]["written_now"] is False  # its line was written by the first run
