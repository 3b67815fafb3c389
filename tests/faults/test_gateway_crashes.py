"""The gateway killed (SIGKILL) in the middle of a request that carries an ``Idempotency-Key``.

The client never got an answer, so it sends the same request again once a gateway is back. That
retry gets either the stored 202 (the jobs and the key's response were committed before the
kill) or a fresh 202 (nothing was), at once: never a 409 for a key nobody holds any more. In
every case the ledger holds exactly one set of jobs for the key.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from tests.faults.conftest import FaultStack, until


def keyed() -> dict[str, str]:
    return {"Idempotency-Key": f"crash-{uuid.uuid4()}"}


async def ledger_ids(stack: FaultStack, message: str) -> list[str]:
    """The ids of the ledger's write_log jobs with ``message`` (every test uses a message of its own)."""
    rows = await stack.db.fetch("SELECT id FROM jobs WHERE payload->>'message' = $1 ORDER BY id", message)
    return [row["id"] for row in rows]


async def waiting_on_jobs_lock(stack: FaultStack) -> bool:
    """True while some session waits for a lock on the jobs table."""
    waiting = await stack.db.fetchval(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "WHERE c.relname = 'jobs' AND NOT l.granted"
    )
    return bool(waiting)


async def answered_once(stack: FaultStack, response: httpx.Response, message: str) -> list[str]:
    """Check a retry's answer: a 202 naming exactly the ledger's one set of jobs; return their ids."""
    assert response.status_code == 202, f"{response.status_code}: {response.text}"
    answered = sorted(job["id"] for job in response.json()["jobs"])
    assert answered == await ledger_ids(stack, message), "the ledger holds exactly the jobs the 202 names"
    assert len(answered) == 1
    for job in response.json()["jobs"]:
        stack.accepted[job["id"]] = job["name"]
    return answered


async def killed_in_flight(stack: FaultStack, request: asyncio.Task[Any]) -> None:
    """SIGKILL the gateway while ``request`` waits for its answer, which never comes."""
    assert stack.gateway is not None
    stack.gateway.kill()
    with pytest.raises(httpx.HTTPError):
        await request


async def test_killed_after_the_commit_the_retry_gets_the_stored_202(stack: FaultStack) -> None:
    """Redis stalls after the ledger commit, the gateway dies before it answers: the retry is replayed."""
    headers, message = keyed(), f"after the commit {uuid.uuid4()}"
    await stack.redis_client.client_pause(20000, all=False)  # the enqueue waits
    try:
        request = asyncio.create_task(stack.http.post("/send", json={"message": message}, headers=headers))

        async def committed() -> bool:
            return bool(await ledger_ids(stack, message))

        await until(committed, within=10, what="the job's ledger row was committed")
        await killed_in_flight(stack, request)
    finally:
        await stack.redis_client.client_unpause()
    await stack.restart_gateway()

    retry = await stack.http.post("/send", json={"message": message}, headers=headers)

    ids = await answered_once(stack, retry, message)
    assert retry.headers.get("idempotent-replayed") == "true", "the jobs were committed: their 202 is replayed"
    # However long the client waits before it retries again (a claim used to be taken over after
    # a minute), it gets the same answer and no second set of jobs.
    await stack.db.execute(
        "UPDATE idempotency_keys SET created_at = created_at - interval '61 seconds' WHERE key = $1",
        headers["Idempotency-Key"],
    )
    later = await stack.http.post("/send", json={"message": message}, headers=headers)
    assert await answered_once(stack, later, message) == ids
    assert later.content == retry.content


async def test_killed_while_its_insert_waits_the_retry_starts_afresh_at_once(stack: FaultStack) -> None:
    """The gateway dies while its INSERT waits on a lock (nothing committed): the key is free at once."""
    headers, message = keyed(), f"insert waiting {uuid.uuid4()}"
    locker = await asyncpg.connect(stack.postgres.dsn("afterword"))
    try:
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute("LOCK TABLE jobs IN EXCLUSIVE MODE")  # reads go on, inserts wait
        request = asyncio.create_task(stack.http.post("/send", json={"message": message}, headers=headers))
        await until(lambda: waiting_on_jobs_lock(stack), within=10, what="the gateway's INSERT waits on the lock")
        await killed_in_flight(stack, request)
        await stack.restart_gateway()

        retry = asyncio.create_task(stack.http.post("/send", json={"message": message}, headers=headers))

        async def answered_or_waiting() -> bool:
            return retry.done() or await waiting_on_jobs_lock(stack)

        await until(answered_or_waiting, within=10, what="the retry was answered or waits on the lock")
        await transaction.rollback()
    finally:
        await locker.close()

    await answered_once(stack, await retry, message)
