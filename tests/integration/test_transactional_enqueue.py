"""Jobs enqueued inside an application's own transaction, against the stack's database and worker.

The application here is the test: it writes rows of its own (``shop_orders``, a table it creates)
and enqueues jobs in the same transaction, with ``afterword_enqueue`` in SQL or with the Python
client's ``enqueue_in_transaction``. The stack's worker relays what commits to Redis and runs it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest
from afterword_client import WriteLog
from afterword_client.transactional import enqueue_in_transaction
from redis.asyncio import Redis

from services.core.settings import Settings
from services.jobs.relay import Relay
from tests.support.jobs_client import wait_for_all, wait_for_job
from tests.support.observers import Observer

SWEEP_IDLE_SECONDS = Settings.model_fields["sweep_idle_seconds"].default
"""The recovery sweep leaves a row alone until it is this old: a job that started sooner was relayed."""


@pytest.fixture
async def shop(observer: Observer) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the stack's database, with the application's own table."""
    pool = await asyncpg.create_pool(observer.db_dsn, min_size=0, max_size=50)
    await pool.execute("CREATE TABLE IF NOT EXISTS shop_orders (id text PRIMARY KEY, item text NOT NULL)")
    try:
        yield pool
    finally:
        await pool.close()


async def order(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, item: str) -> str:
    """The application's own write: an order row; its id."""
    order_id = uuid.uuid4().hex
    await conn.execute("INSERT INTO shop_orders (id, item) VALUES ($1, $2)", order_id, item)
    return order_id


async def enqueue_sql(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, name: str, payload: object) -> str:
    job_id: str = await conn.fetchval("SELECT afterword_enqueue($1, $2::jsonb)", name, json.dumps(payload))
    return job_id


async def ran_once(client: httpx.AsyncClient, observer: Observer, job_id: str, message: str) -> dict[str, Any]:
    """The job ended succeeded after one attempt, and wrote its log line once; its record."""
    job = await wait_for_job(client, job_id)
    assert job["status"] == "succeeded", job
    assert job["tries"] == 1
    assert [a["outcome"] for a in job["attempts"]] == ["succeeded"]
    assert [r["message"] for r in observer.log_records_of(job_id)] == [message]
    return job


async def test_a_committed_job_runs_once_and_shows_like_any_other(
    client: httpx.AsyncClient, observer: Observer, shop: asyncpg.Pool
) -> None:
    message = f"order paid {uuid.uuid4().hex}"
    async with shop.acquire() as conn, conn.transaction():
        order_id = await order(conn, "book")
        job_id = await enqueue_in_transaction(conn, WriteLog(message=message))

    job = await ran_once(client, observer, job_id, message)

    assert await shop.fetchval("SELECT item FROM shop_orders WHERE id = $1", order_id) == "book"
    assert (job["name"], job["payload"]) == ("write_log", {"message": message})
    started = datetime.fromisoformat(job["attempts"][0]["started_at"])
    assert (started - datetime.fromisoformat(job["enqueued_at"])).total_seconds() < SWEEP_IDLE_SECONDS
    listed = await client.get("/jobs", params={"name": "write_log", "limit": 500})
    assert job_id in [j["id"] for j in listed.json()["jobs"]]


async def test_a_rolled_back_job_never_runs_and_is_never_listed(
    client: httpx.AsyncClient, observer: Observer, shop: asyncpg.Pool
) -> None:
    message = f"order abandoned {uuid.uuid4().hex}"
    async with shop.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        order_id = await order(conn, "abandoned")
        rolled_back = await enqueue_in_transaction(conn, WriteLog(message=message))
        await transaction.rollback()
        async with conn.transaction():  # a later job: once it ran, the first had every chance to
            after = await enqueue_in_transaction(conn, WriteLog(message=f"after {message}"))

    await ran_once(client, observer, after, f"after {message}")

    assert (await client.get(f"/jobs/{rolled_back}")).status_code == 404
    listed = await client.get("/jobs", params={"name": "write_log", "limit": 500})
    assert rolled_back not in [j["id"] for j in listed.json()["jobs"]]
    assert observer.log_records_of(rolled_back) == []
    assert message not in [r["message"] for r in observer.log_records()]
    assert await shop.fetchval("SELECT 1 FROM shop_orders WHERE id = $1", order_id) is None


async def test_an_unknown_name_fails_the_transaction_and_nothing_is_committed(
    observer: Observer, shop: asyncpg.Pool
) -> None:
    item = f"unknown job {uuid.uuid4().hex}"

    async def place_order() -> None:
        async with shop.acquire() as conn, conn.transaction():
            await order(conn, item)
            await enqueue_sql(conn, "write_log", {"message": item})
            await enqueue_sql(conn, "send_emial", {"to": "ada@example.com"})

    with pytest.raises(asyncpg.InvalidParameterValueError, match="unknown job name 'send_emial'"):
        await place_order()

    assert await shop.fetchval("SELECT count(*) FROM shop_orders WHERE item = $1", item) == 0
    assert await shop.fetchval("SELECT count(*) FROM jobs WHERE payload->>'message' = $1", item) == 0


async def test_a_payload_the_job_cannot_take_fails_the_job_at_once_naming_the_field(
    client: httpx.AsyncClient, shop: asyncpg.Pool
) -> None:
    async with shop.acquire() as conn, conn.transaction():
        job_id = await enqueue_sql(conn, "send_email", {"to": "not an address", "subject": "Hi", "body": "x"})

    job = await wait_for_job(client, job_id)

    assert job["status"] == "failed", job
    assert job["tries"] == 1  # permanent: not tried again
    assert "invalid payload" in job["error"]
    assert "'loc': ('to',)" in job["error"]
    assert [a["outcome"] for a in job["attempts"]] == ["failed"]


async def test_many_concurrent_transactions_each_run_their_job_once(
    client: httpx.AsyncClient, observer: Observer, shop: asyncpg.Pool
) -> None:
    tag = uuid.uuid4().hex
    started = asyncio.Event()

    async def transaction(n: int) -> tuple[str, str, bool]:
        commit = n % 5 != 0  # one in five rolls back
        message = f"concurrent {tag} {n}"
        async with shop.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            await order(conn, message)
            await started.wait()  # all fifty open at once
            job_id = await enqueue_sql(conn, "write_log", {"message": message})
            await (transaction.commit() if commit else transaction.rollback())
        return job_id, message, commit

    tasks = [asyncio.create_task(transaction(n)) for n in range(50)]
    await asyncio.sleep(0.5)
    started.set()
    outcomes = await asyncio.gather(*tasks)

    committed = [(job_id, message) for job_id, message, commit in outcomes if commit]
    jobs = await wait_for_all(client, [job_id for job_id, _ in committed])
    assert [job["status"] for job in jobs] == ["succeeded"] * 40
    assert [job["tries"] for job in jobs] == [1] * 40
    lines = [r["message"] for r in observer.log_records() if tag in str(r.get("message"))]
    assert sorted(lines) == sorted(message for _, message in committed)
    rolled_back = [job_id for job_id, _, commit in outcomes if not commit]
    assert await shop.fetchval("SELECT count(*) FROM jobs WHERE id = ANY($1::text[])", rolled_back) == 0


async def test_a_second_relay_queues_nothing_twice(
    client: httpx.AsyncClient, observer: Observer, shop: asyncpg.Pool
) -> None:
    redis: Redis = observer.redis
    relay = Relay(observer.db_dsn, redis, queue_name=observer.queue_name or "", catch_up_seconds=15)
    await relay.start()
    try:
        assert await relay.wait_connected(within=10)
        messages = [f"two relays {uuid.uuid4().hex}" for _ in range(20)]
        async with shop.acquire() as conn, conn.transaction():
            ids = [await enqueue_sql(conn, "write_log", {"message": message}) for message in messages]

        for job_id, message in zip(ids, messages, strict=True):
            await ran_once(client, observer, job_id, message)
    finally:
        await relay.stop()
