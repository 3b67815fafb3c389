"""Idempotency-Key on POST: a repeat is answered from the first response and starts nothing.

Most tests drive the stack's gateway over HTTP and count the ledger's rows. Some start a gateway
of their own with API keys, to see keys scoped per API key. The last ones wrap the middleware
around a tiny ASGI app in this process (on the stack's database and Redis), to make it see a 5xx
or a Postgres that is down.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from arq.connections import ArqRedis
from asyncpg.pool import PoolConnectionProxy
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Receive, Scope, Send

from services.contract import JobName, WriteLog
from services.core.settings import Settings
from services.gateway.intake import Intake, Order, accept
from services.gateway.metrics import GatewayMetrics
from services.gateway.middleware.idempotency import IdempotencyMiddleware
from services.gateway.middleware.idempotency_locks import KeyLocks, lock_id
from tests.integration.conftest import QUEUE
from tests.support.database import create_database, drop_database
from tests.support.lone_gateway import lone_gateway
from tests.support.observers import Observer
from tests.support.ports import free_port

API_KEY_ONE = "idem-one-" + uuid.uuid4().hex
API_KEY_TWO = "idem-two-" + uuid.uuid4().hex


def new_key() -> dict[str, str]:
    return {"Idempotency-Key": f"test-{uuid.uuid4()}"}


async def jobs_in_ledger(observer: Observer) -> int:
    return int(await observer.db.fetchval("SELECT count(*) FROM jobs"))


async def jobs_with_message(db: asyncpg.Pool, message: str) -> list[str]:
    rows = await db.fetch("SELECT id FROM jobs WHERE payload->>'message' = $1 ORDER BY id", message)
    return [row["id"] for row in rows]


async def until_gone(db: asyncpg.Pool, pid: int) -> None:
    """Wait until the Postgres backend ``pid`` has ended (and so dropped its locks)."""
    for _ in range(100):
        if not await db.fetchval("SELECT 1 FROM pg_stat_activity WHERE pid = $1", pid):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"backend {pid} still there")


@asynccontextmanager
async def held_elsewhere(db: asyncpg.Pool, key: str, scope: str = "") -> AsyncIterator[PoolConnectionProxy]:
    """Hold ``key``'s lock on a session of the test's own, as a gateway running its request would."""
    async with db.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", lock_id(scope, key))
        yield conn


async def test_a_repeat_gets_the_same_answer_and_queues_nothing(client: httpx.AsyncClient, observer: Observer) -> None:
    headers = new_key()
    body = {"email": f"idem-{uuid.uuid4().hex[:10]}@example.com", "name": "Ada"}
    before = await jobs_in_ledger(observer)

    first = await client.post("/signup", json=body, headers=headers)
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    assert await jobs_in_ledger(observer) == before + 3

    for _ in range(2):
        again = await client.post("/signup", json=body, headers=headers)
        assert again.status_code == 202
        assert again.json() == first.json()
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
    assert await jobs_in_ledger(observer) == before + 3


async def test_the_same_key_with_another_body_is_422(client: httpx.AsyncClient, observer: Observer) -> None:
    headers = new_key()
    first = await client.post("/send", json={"message": "first"}, headers=headers)
    assert first.status_code == 202, first.text
    before = await jobs_in_ledger(observer)

    other = await client.post("/send", json={"message": "second"}, headers=headers)

    assert other.status_code == 422
    assert "Idempotency-Key" in other.json()["detail"]
    assert "different request" in other.json()["detail"]
    assert await jobs_in_ledger(observer) == before


async def test_the_same_key_on_another_path_is_422(client: httpx.AsyncClient, observer: Observer) -> None:
    headers = new_key()
    assert (await client.post("/process", headers=headers)).status_code == 202
    before = await jobs_in_ledger(observer)

    elsewhere = await client.post("/send", headers=headers)

    assert elsewhere.status_code == 422
    assert "Idempotency-Key" in elsewhere.json()["detail"]
    assert await jobs_in_ledger(observer) == before


async def test_keys_are_independent_of_each_other(client: httpx.AsyncClient) -> None:
    first = await client.post("/process", headers=new_key())
    second = await client.post("/process", headers=new_key())

    assert first.status_code == second.status_code == 202
    assert first.json()["jobs"][0]["id"] != second.json()["jobs"][0]["id"]


async def test_a_key_still_being_processed_is_409(client: httpx.AsyncClient, observer: Observer) -> None:
    headers = new_key()
    async with held_elsewhere(observer.db, headers["Idempotency-Key"]):
        before = await jobs_in_ledger(observer)

        busy = await client.post("/process", headers=headers)

        assert busy.status_code == 409
        assert "Idempotency-Key" in busy.json()["detail"]
        assert busy.headers["retry-after"] == "1"
        assert await jobs_in_ledger(observer) == before


async def test_two_requests_at_once_start_the_work_once(client: httpx.AsyncClient, observer: Observer) -> None:
    headers = new_key()
    before = await jobs_in_ledger(observer)

    responses = await asyncio.gather(*(client.post("/process", headers=headers) for _ in range(2)))

    first, second = sorted(responses, key=lambda r: (r.status_code != 202, "idempotent-replayed" in r.headers))
    assert first.status_code == 202, first.text
    assert second.status_code == 409 or (second.status_code == 202 and second.json() == first.json())
    assert await jobs_in_ledger(observer) == before + 1


async def test_many_keyed_requests_at_once_each_record_one_set_of_jobs(
    client: httpx.AsyncClient, observer: Observer
) -> None:
    """Requests with keys share the intake's batches (their keys go into the same statements as
    their jobs); each key sent twice at once still starts its work once."""
    keys = [f"batch-{uuid.uuid4()}" for _ in range(40)]
    messages = {key: f"batched {key}" for key in keys}

    async def send(key: str) -> httpx.Response:
        return await client.post("/send", json={"message": messages[key]}, headers={"Idempotency-Key": key})

    responses = await asyncio.gather(*(send(key) for key in keys for _ in range(2)))

    for key, pair in zip(keys, (responses[i : i + 2] for i in range(0, len(responses), 2)), strict=True):
        assert all(r.status_code in (202, 409) for r in pair), [r.text for r in pair]
        accepted = [r for r in pair if r.status_code == 202]
        assert accepted, [r.text for r in pair]
        ids = {job["id"] for r in accepted for job in r.json()["jobs"]}
        assert [*ids] == await jobs_with_message(observer.db, messages[key])
        replayed = await send(key)
        assert replayed.headers["idempotent-replayed"] == "true"
        assert replayed.json() == accepted[0].json()


async def test_a_key_whose_holder_died_is_free_at_once(client: httpx.AsyncClient, observer: Observer) -> None:
    """The session holding the key ends without a word (as a killed gateway's does): no 409 after that."""
    headers = new_key()
    async with held_elsewhere(observer.db, headers["Idempotency-Key"]) as holder:
        assert (await client.post("/process", headers=headers)).status_code == 409
        pid = holder.get_server_pid()
        holder.terminate()
    await until_gone(observer.db, pid)

    response = await client.post("/process", headers=headers)

    assert response.status_code == 202, response.text
    assert (await client.post("/process", headers=headers)).json() == response.json()


async def test_a_key_is_kept_for_24_hours(client: httpx.AsyncClient, observer: Observer) -> None:
    headers, message = new_key(), f"kept {uuid.uuid4()}"
    first = await client.post("/send", json={"message": message}, headers=headers)
    await observer.db.execute(
        "UPDATE idempotency_keys SET created_at = created_at - interval '23 hours 59 minutes' WHERE key = $1",
        headers["Idempotency-Key"],
    )

    again = await client.post("/send", json={"message": message}, headers=headers)

    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(await jobs_with_message(observer.db, message)) == 1


async def test_an_expired_key_is_used_again(client: httpx.AsyncClient, observer: Observer) -> None:
    headers = new_key()
    old = await client.post("/send", json={"message": "yesterday"}, headers=headers)
    await observer.db.execute(
        "UPDATE idempotency_keys SET created_at = created_at - interval '25 hours' WHERE key = $1",
        headers["Idempotency-Key"],
    )

    today = await client.post("/send", json={"message": "today"}, headers=headers)

    assert today.status_code == 202, today.text
    assert "idempotent-replayed" not in today.headers
    assert today.json()["jobs"][0]["id"] != old.json()["jobs"][0]["id"]


async def test_a_4xx_answer_is_kept_and_replayed(client: httpx.AsyncClient, observer: Observer) -> None:
    headers = new_key()
    body = {"email": "not-an-email", "name": "Ada"}

    first = await client.post("/signup", json=body, headers=headers)
    again = await client.post("/signup", json=body, headers=headers)

    assert first.status_code == again.status_code == 422
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"


async def test_requests_without_a_key_are_not_deduplicated(client: httpx.AsyncClient) -> None:
    first = await client.post("/process")
    second = await client.post("/process")

    assert first.status_code == second.status_code == 202
    assert "idempotent-replayed" not in second.headers
    assert first.json()["jobs"][0]["id"] != second.json()["jobs"][0]["id"]


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there"])
async def test_a_malformed_key_is_400(client: httpx.AsyncClient, key: str) -> None:
    response = await client.post("/process", headers={"Idempotency-Key": key})

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["detail"]


async def test_an_oversized_body_is_413_and_claims_nothing(client: httpx.AsyncClient, observer: Observer) -> None:
    headers = new_key()

    response = await client.post("/send", json={"message": "x" * 200_000}, headers=headers)

    assert response.status_code == 413
    claimed = await observer.db.fetchval(
        "SELECT count(*) FROM idempotency_keys WHERE key = $1", headers["Idempotency-Key"]
    )
    assert claimed == 0


class FlakyApp:
    """An ASGI app that accepts a write_log job as a route does, and answers 500 ``failures`` times, then 202."""

    def __init__(self, message: str, *, failures: int = 1) -> None:
        self.message = message
        self.failures = failures
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        while (await receive()).get("more_body"):
            pass
        orders = [Order(JobName.write_log, WriteLog(message=self.message))]
        (job,) = await accept(intake=scope["state"]["intake"], orders=orders)
        status = 500 if self.calls <= self.failures else 202
        body = b'{"calls": %d, "job": "%s"}' % (self.calls, job.id.encode())
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
        )
        await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def in_process(
    app: IdempotencyMiddleware, *, db: asyncpg.Pool, dsn: str, redis: ArqRedis, ledger: asyncpg.Pool | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client on ``app`` with the lifespan state the gateway would give it (its lock session on ``dsn``).

    The intake writes to ``ledger`` when given, else to ``db``.
    """
    locks = KeyLocks(dsn, connect_timeout=2)
    state: dict[str, Any] = {
        "settings": Settings(_env_file=None, environment="test", api_keys=[]),
        "db": db,
        "intake": Intake(db=ledger or db, redis=redis, metrics=GatewayMetrics()),
        "idempotency_locks": locks,
    }

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "state": dict(state)}, receive, send)

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=with_state), base_url="http://gateway") as http:
            yield http
    finally:
        await locks.close()


def arq_redis(observer: Observer) -> ArqRedis:
    return ArqRedis(connection_pool=observer.redis.connection_pool, default_queue_name=observer.queue_name or QUEUE)


async def test_a_5xx_answer_frees_the_key_and_drops_its_jobs(observer: Observer, database_dsn: str) -> None:
    message = f"flaky {uuid.uuid4()}"
    flaky = FlakyApp(message)
    headers = new_key()
    async with in_process(
        IdempotencyMiddleware(flaky), db=observer.db, dsn=database_dsn, redis=arq_redis(observer)
    ) as http:
        failed = await http.post("/process", headers=headers)
        assert await jobs_with_message(observer.db, message) == [], "a 5xx answer's jobs are not recorded"
        retried = await http.post("/process", headers=headers)
        replayed = await http.post("/process", headers=headers)

    assert failed.status_code == 500
    assert retried.status_code == 202
    assert retried.json()["calls"] == 2
    assert replayed.json() == retried.json()
    assert replayed.headers["idempotent-replayed"] == "true"
    assert flaky.calls == 2
    assert await jobs_with_message(observer.db, message) == [retried.json()["job"]]


async def test_a_commit_that_fails_is_503_and_keeps_nothing(observer: Observer, database_dsn: str) -> None:
    """Postgres goes away after the route answered: the 202 is not sent, nothing is kept, the retry runs."""
    message = f"lost commit {uuid.uuid4()}"
    app = IdempotencyMiddleware(FlakyApp(message, failures=0))
    headers = new_key()
    nowhere = await asyncpg.create_pool(unreachable(database_dsn), min_size=0, timeout=2)
    try:
        async with in_process(app, db=observer.db, dsn=database_dsn, redis=arq_redis(observer), ledger=nowhere) as http:
            lost = await http.post("/process", headers=headers)
    finally:
        await nowhere.close()
    assert lost.status_code == 503, lost.text
    assert lost.headers["retry-after"] == "5"
    assert "nothing was done" in lost.json()["detail"]
    assert await jobs_with_message(observer.db, message) == []

    async with in_process(app, db=observer.db, dsn=database_dsn, redis=arq_redis(observer)) as http:
        retried = await http.post("/process", headers=headers)

    assert retried.status_code == 202, retried.text
    assert "idempotent-replayed" not in retried.headers
    assert await jobs_with_message(observer.db, message) == [retried.json()["job"]]


def unreachable(dsn: str) -> str:
    """``dsn`` with a port nothing listens on."""
    return dsn.replace(dsn.split("@")[1].split("/")[0], f"127.0.0.1:{free_port()}")


async def test_postgres_down_is_503_and_runs_nothing(database_dsn: str, observer: Observer) -> None:
    flaky = FlakyApp("never")
    nowhere = unreachable(database_dsn)
    db = await asyncpg.create_pool(nowhere, min_size=0, timeout=2)
    try:
        async with in_process(IdempotencyMiddleware(flaky), db=db, dsn=nowhere, redis=arq_redis(observer)) as http:
            response = await http.post("/process", headers=new_key())
    finally:
        await db.close()

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "unavailable" in response.json()["detail"]
    assert flaky.calls == 0


# Keys are scoped per API key: a gateway of its own, with two API keys.


@pytest.fixture(scope="module")
async def scoped(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """The URL of a gateway with two API keys (no worker: its jobs just wait), and a pool on its database."""
    dsn = await create_database()
    workdir: Path = tmp_path_factory.mktemp("idempotency-scoped")
    try:
        async with lone_gateway(
            workdir, api_keys=f"{API_KEY_ONE},{API_KEY_TWO}", label="scoped-gateway", database_dsn=dsn
        ) as (url, _):
            db = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
            try:
                yield url, db
            finally:
                await db.close()
    finally:
        await drop_database(dsn)


async def test_the_same_key_under_two_api_keys_is_two_keys(scoped: tuple[str, asyncpg.Pool]) -> None:
    url, db = scoped
    key, message = f"scoped-{uuid.uuid4()}", f"scoped {uuid.uuid4()}"
    async with httpx.AsyncClient(base_url=url, timeout=15) as http:

        async def send(api_key: str) -> httpx.Response:
            headers = {"Idempotency-Key": key, "Authorization": f"Bearer {api_key}"}
            return await http.post("/send", json={"message": message}, headers=headers)

        one, two = await send(API_KEY_ONE), await send(API_KEY_TWO)
        one_again, two_again = await send(API_KEY_ONE), await send(API_KEY_TWO)

    assert one.status_code == two.status_code == 202, (one.text, two.text)
    assert "idempotent-replayed" not in one.headers
    assert "idempotent-replayed" not in two.headers, "another API key's answer was replayed"
    (job_one,), (job_two,) = one.json()["jobs"], two.json()["jobs"]
    assert job_one["id"] != job_two["id"]
    assert await jobs_with_message(db, message) == sorted([job_one["id"], job_two["id"]])
    assert one_again.json() == one.json()
    assert two_again.json() == two.json()
    assert one_again.headers["idempotent-replayed"] == two_again.headers["idempotent-replayed"] == "true"
    # The table holds a hash of each API key, never the key.
    rows = await db.fetch("SELECT scope, key FROM idempotency_keys WHERE key = $1 ORDER BY scope", key)
    expected = sorted(hashlib.sha256(api_key.encode()).hexdigest() for api_key in (API_KEY_ONE, API_KEY_TWO))
    assert [row["scope"] for row in rows] == expected
    stored = await db.fetchval("SELECT string_agg(t::text, ' ') FROM idempotency_keys t")
    assert API_KEY_ONE not in stored
    assert API_KEY_TWO not in stored


# The table's size is a metric.


def gauge(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} is not in /metrics")


async def test_the_key_table_size_is_in_the_metrics(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        assert (await client.post("/process", headers=new_key())).status_code == 202

    # Postgres' statistics reach the estimate within seconds of the commit.
    for _ in range(300):
        text = (await client.get("/metrics")).text
        if gauge(text, "afterword_idempotency_keys") >= 3:
            break
        await asyncio.sleep(0.1)
    assert gauge(text, "afterword_idempotency_keys") >= 3
    text = (await client.get("/metrics")).text
    assert gauge(text, "afterword_idempotency_keys_bytes") > 0
