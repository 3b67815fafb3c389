"""The Python client (``clients/python``) against the real gateway and worker, sync and async.

Each test that talks to a gateway runs twice, through :class:`~afterword_client.Client` (in a
thread, as blocking code runs) and through :class:`~afterword_client.AsyncClient`, behind one
awaitable face (:class:`Face`), and watches the jobs' effects: the email in the SMTP sink, the
log line, the user's row, the ledger. The shared stack runs without API keys; the tests of keys
and of a 503 start a gateway of their own. A lost answer is made by a relay that drops it
(``tests/support/relay.py``), a key in use by holding its advisory lock as a running request does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg
import httpx
import pytest
from afterword_client import (
    Accepted,
    AsyncClient,
    CleanupTempFiles,
    Client,
    Conflict,
    Forbidden,
    Job,
    JobName,
    JobPage,
    JobStatus,
    JobSummary,
    NotFound,
    Payload,
    SendEmail,
    StatusEvent,
    TransportError,
    Unauthorized,
    UpdateUser,
    ValidationFailed,
    WaitTimeout,
    WriteLog,
)
from pydantic import ValidationError

from services.gateway.middleware.idempotency import NO_API_KEY_SCOPE
from services.gateway.middleware.idempotency_locks import lock_id
from tests.support.database import create_database, database_dsn, drop_database
from tests.support.lone_gateway import lone_gateway
from tests.support.observers import Observer
from tests.support.relay import Relay
from tests.support.sse import collapse

FULL_KEY = "client-full-" + uuid.uuid4().hex
READ_KEY = "client-read-" + uuid.uuid4().hex


class Face(Protocol):
    """The client's operations, awaitable whichever client is behind (iterators come as lists)."""

    async def enqueue(self, job: Payload | str, payload: dict[str, Any] | None = None, **options: Any) -> Accepted: ...
    async def get(self, job_id: str) -> Job: ...
    async def wait(self, job_id: str, within: float | None = None) -> Job: ...
    async def events(self, job_id: str) -> list[StatusEvent]: ...
    async def retry(self, job_id: str) -> Accepted: ...
    async def cancel(self, job_id: str) -> Job: ...
    async def list(self, **filters: Any) -> list[JobSummary]: ...
    async def list_page(self, **filters: Any) -> JobPage: ...


class Blocking:
    """The sync :class:`Client`, each call run in a thread so the test's event loop (and relay) go on."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def enqueue(self, job: Payload | str, payload: dict[str, Any] | None = None, **options: Any) -> Accepted:
        if isinstance(job, Payload):
            return await asyncio.to_thread(lambda: self.client.enqueue(job, **options))
        return await asyncio.to_thread(lambda: self.client.enqueue(job, payload, **options))

    async def get(self, job_id: str) -> Job:
        return await asyncio.to_thread(self.client.get, job_id)

    async def wait(self, job_id: str, within: float | None = None) -> Job:
        return await asyncio.to_thread(self.client.wait, job_id, within)

    async def events(self, job_id: str) -> list[StatusEvent]:
        return await asyncio.to_thread(lambda: list(self.client.events(job_id)))

    async def retry(self, job_id: str) -> Accepted:
        return await asyncio.to_thread(self.client.retry, job_id)

    async def cancel(self, job_id: str) -> Job:
        return await asyncio.to_thread(self.client.cancel, job_id)

    async def list(self, **filters: Any) -> list[JobSummary]:
        return await asyncio.to_thread(lambda: list(self.client.list(**filters)))

    async def list_page(self, **filters: Any) -> JobPage:
        return await asyncio.to_thread(lambda: self.client.list_page(**filters))


class Awaiting:
    """The :class:`AsyncClient` as it is."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def enqueue(self, job: Payload | str, payload: dict[str, Any] | None = None, **options: Any) -> Accepted:
        if isinstance(job, Payload):
            return await self.client.enqueue(job, **options)
        return await self.client.enqueue(job, payload, **options)

    async def get(self, job_id: str) -> Job:
        return await self.client.get(job_id)

    async def wait(self, job_id: str, within: float | None = None) -> Job:
        return await self.client.wait(job_id, within)

    async def events(self, job_id: str) -> list[StatusEvent]:
        return [event async for event in self.client.events(job_id)]

    async def retry(self, job_id: str) -> Accepted:
        return await self.client.retry(job_id)

    async def cancel(self, job_id: str) -> Job:
        return await self.client.cancel(job_id)

    async def list(self, **filters: Any) -> list[JobSummary]:
        return [job async for job in self.client.list(**filters)]

    async def list_page(self, **filters: Any) -> JobPage:
        return await self.client.list_page(**filters)


@asynccontextmanager
async def opened(kind: str, base_url: str, **options: Any) -> AsyncIterator[Face]:
    """A client of ``kind`` (``sync`` or ``async``) on ``base_url``, closed after."""
    if kind == "sync":
        with Client(base_url, **options) as client:
            yield Blocking(client)
    else:
        async with AsyncClient(base_url, **options) as aclient:
            yield Awaiting(aclient)


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which client a test drives."""
    value: str = request.param
    return value


@pytest.fixture
async def api(kind: str, base_url: str) -> AsyncIterator[Face]:
    """A client of the shared stack (which runs without API keys)."""
    async with opened(kind, base_url) as face:
        yield face


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def host_and_port(url: str) -> tuple[str, int]:
    parsed = httpx.URL(url)
    assert parsed.port is not None, url
    return parsed.host, parsed.port


async def jobs_with_message(observer: Observer, message: str) -> list[str]:
    rows = await observer.db.fetch("SELECT id FROM jobs WHERE payload->>'message' = $1", message)
    return [row["id"] for row in rows]


@asynccontextmanager
async def recorded(kind: str) -> AsyncIterator[tuple[httpx.Client | httpx.AsyncClient, list[int]]]:
    """An httpx client for a client of ``kind``, and the status of every answer it gets, in order."""
    statuses: list[int] = []
    if kind == "sync":
        with httpx.Client(event_hooks={"response": [lambda response: statuses.append(response.status_code)]}) as http:
            yield http, statuses
    else:

        async def record(response: httpx.Response) -> None:
            statuses.append(response.status_code)

        async with httpx.AsyncClient(event_hooks={"response": [record]}) as ahttp:
            yield ahttp, statuses


async def first_answer(statuses: list[int], call: asyncio.Task[Any]) -> None:
    """Wait until the call got its first answer (or ended)."""
    for _ in range(300):
        if statuses or call.done():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no answer within 15 s")


# Every job of the contract, queued from its payload model.


async def test_each_job_is_queued_from_its_model_and_runs(api: Face, observer: Observer) -> None:
    address = f"{unique('client')}@example.com"
    message = unique("client log")
    email = SendEmail(to=address, subject="From the client", body="Hello from afterword_client")
    models: list[Payload] = [
        email,
        WriteLog(message=message),
        UpdateUser(email=address, name="Ada Client"),
        CleanupTempFiles(),
    ]

    accepted = [await api.enqueue(model) for model in models]
    jobs = [await api.wait(job.id, within=30) for job in accepted]

    assert [job.name for job in accepted] == [
        JobName.send_email,
        JobName.write_log,
        JobName.update_user,
        JobName.cleanup_temp_files,
    ]
    assert all(job.status is JobStatus.queued and job.status_url.endswith(job.id) for job in accepted)
    assert all(job.idempotency_key and not job.replayed for job in accepted), "every enqueue is keyed"
    assert [job.status for job in jobs] == [JobStatus.succeeded] * 4, [job.error for job in jobs]
    assert [job.typed_payload() for job in jobs] == models
    (delivered,) = await observer.emails_to(address)
    assert delivered["Subject"] == "From the client"
    assert [line["message"] for line in observer.log_records_of(accepted[1].id)] == [message]
    assert await observer.db.fetchval("SELECT name FROM users WHERE email = $1", address) == "Ada Client"


async def test_a_job_is_also_queued_by_name_with_a_dict(api: Face, observer: Observer) -> None:
    message = unique("by name")

    accepted = await api.enqueue("write_log", {"message": message})
    job = await api.wait(accepted.id, within=30)

    assert job.status is JobStatus.succeeded
    assert job.payload == {"message": message}
    assert [line["message"] for line in observer.log_records_of(accepted.id)] == [message]


def test_a_payload_model_refuses_what_the_gateway_would() -> None:
    """The client's models are the contract's: the same rules, before anything is sent."""
    with pytest.raises(ValidationError) as refused:
        SendEmail(to="ada@example.com", subject="Hi\r\nBcc: eve@example.com", body="")

    assert [error["loc"] for error in refused.value.errors()] == [("subject",)]


# Later: defer_by and run_at.


async def test_defer_by_and_run_at_set_when_the_job_is_due(api: Face) -> None:
    later = await api.enqueue(WriteLog(message=unique("in an hour")), defer_by=3600)
    wanted = datetime.now(UTC) + timedelta(hours=2)
    at_time = await api.enqueue(WriteLog(message=unique("in two hours")), run_at=wanted)
    by_timedelta = await api.enqueue("write_log", {"message": unique("in a day")}, defer_by=timedelta(days=1))

    try:
        jobs = [await api.get(accepted.id) for accepted in (later, at_time, by_timedelta)]
        assert [accepted.status for accepted in (later, at_time, by_timedelta)] == [JobStatus.deferred] * 3
        assert [job.status for job in jobs] == [JobStatus.deferred] * 3
        delays = [(job.run_at - job.enqueued_at).total_seconds() for job in jobs]
        assert delays[0] == pytest.approx(3600, abs=1)
        assert delays[2] == pytest.approx(86400, abs=1)
        # run_at becomes a defer_by from this machine's clock, the gateway's too here.
        assert abs((jobs[1].run_at - wanted).total_seconds()) < 5
    finally:
        for accepted in (later, at_time, by_timedelta):
            await api.cancel(accepted.id)


async def test_a_job_due_soon_runs_when_due(api: Face) -> None:
    accepted = await api.enqueue(WriteLog(message=unique("soon")), run_at=datetime.now(UTC) + timedelta(seconds=1))

    job = await api.wait(accepted.id, within=30)

    assert accepted.status is JobStatus.deferred
    assert job.status is JobStatus.succeeded
    assert job.started_at is not None
    assert job.started_at >= job.run_at


async def test_run_at_and_defer_by_are_checked_before_sending(api: Face) -> None:
    with pytest.raises(ValueError, match="not both"):
        await api.enqueue(WriteLog(message="x"), defer_by=1, run_at=datetime.now(UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        await api.enqueue(WriteLog(message="x"), run_at=datetime.now())


# Waiting and following.


async def test_wait_gives_up_with_the_last_record(api: Face) -> None:
    accepted = await api.enqueue(WriteLog(message=unique("never now")), defer_by=3600)
    try:
        with pytest.raises(WaitTimeout) as gave_up:
            await api.wait(accepted.id, within=0.5)
    finally:
        await api.cancel(accepted.id)

    assert gave_up.value.job.id == accepted.id
    assert gave_up.value.job.status is JobStatus.deferred


async def test_events_follow_a_job_to_its_end(api: Face) -> None:
    accepted = await api.enqueue(WriteLog(message=unique("followed")), defer_by=1)

    events = await api.events(accepted.id)

    assert all(event.id == accepted.id for event in events)
    statuses = collapse([event.status.value for event in events])
    assert statuses[0] == "deferred"
    assert statuses[-1] == "succeeded"
    assert "in_progress" in statuses
    stamps = [event.at for event in events]
    assert stamps == sorted(stamps), "in order"
    assert len(set(stamps)) == len(stamps), "each event once"


async def test_events_of_an_ended_job_are_its_final_status(api: Face) -> None:
    accepted = await api.enqueue(WriteLog(message=unique("ended")))
    await api.wait(accepted.id, within=30)

    events = await api.events(accepted.id)

    assert [event.status for event in events] == [JobStatus.succeeded]


# Dead letters: retry, cancel, list.


async def test_a_failed_job_is_retried_and_succeeds(api: Face, observer: Observer) -> None:
    sink = observer.require_sink()
    address = f"{unique('refused')}@example.com"
    sink.refuse(address, 550)
    try:
        accepted = await api.enqueue(SendEmail(to=address, subject="Again", body="Second time lucky"))
        failed = await api.wait(accepted.id, within=30)
    finally:
        sink.accept(address)

    retried = await api.retry(accepted.id)
    job = await api.wait(accepted.id, within=30)

    assert failed.status is JobStatus.failed
    assert "550" in (failed.error or "")
    assert (retried.id, retried.status) == (accepted.id, JobStatus.queued)
    assert job.status is JobStatus.succeeded
    assert [attempt.outcome for attempt in job.attempts] == ["failed", "succeeded"]
    assert len(await observer.emails_to(address)) == 1


async def test_a_deferred_job_is_cancelled_once(api: Face, observer: Observer) -> None:
    message = unique("cancelled")
    accepted = await api.enqueue(WriteLog(message=message), defer_by=3600)

    cancelled = await api.cancel(accepted.id)
    with pytest.raises(Conflict) as again:
        await api.cancel(accepted.id)

    assert cancelled.status is JobStatus.cancelled
    assert cancelled.error == "cancelled by request"
    assert again.value.status_code == 409
    assert "already ended" in str(again.value)
    assert (await api.get(accepted.id)).status is JobStatus.cancelled
    assert observer.log_records_of(accepted.id) == []


async def test_list_walks_every_page_once_newest_first(api: Face) -> None:
    accepted = [await api.enqueue(CleanupTempFiles(), defer_by=3600) for _ in range(5)]
    ours = {job.id for job in accepted}
    try:
        listed = await api.list(status="deferred", name=JobName.cleanup_temp_files, page_size=2)
        first_three = await api.list(status=JobStatus.deferred, name="cleanup_temp_files", limit=3, page_size=2)
        page = await api.list_page(status="deferred", name="cleanup_temp_files", limit=2)
        following = await api.list_page(status="deferred", name="cleanup_temp_files", limit=2, cursor=page.next_cursor)
    finally:
        for job in accepted:
            await api.cancel(job.id)

    ids = [job.id for job in listed]
    assert len(ids) == len(set(ids)), "no job twice"
    assert ours <= set(ids)
    assert [job.id for job in listed if job.id in ours] == [job.id for job in reversed(accepted)], "newest first"
    stamps = [job.enqueued_at for job in listed]
    assert stamps == sorted(stamps, reverse=True)
    assert {(job.name, job.status) for job in listed} == {("cleanup_temp_files", JobStatus.deferred)}
    assert [job.id for job in first_three] == ids[:3]
    assert [job.id for job in page.jobs + following.jobs] == ids[:4]
    assert page.next_cursor is not None


# The API's errors, as exceptions.


async def test_an_unknown_job_is_not_found(api: Face) -> None:
    unknown = uuid.uuid4().hex
    for call in (api.get(unknown), api.retry(unknown), api.cancel(unknown), api.wait(unknown, 1)):
        with pytest.raises(NotFound) as missing:
            await call
        assert missing.value.status_code == 404
        assert unknown in str(missing.value)
    with pytest.raises(NotFound):
        await api.get("../healthz")  # quoted into the path: never another route


async def test_invalid_input_is_validation_failed_naming_the_field(api: Face) -> None:
    with pytest.raises(ValidationFailed) as bad_address:
        await api.enqueue("send_email", {"to": "not an address", "subject": "Hi", "body": ""})
    with pytest.raises(ValidationFailed) as bad_name:
        await api.enqueue("rm_rf", {})
    with pytest.raises(ValidationFailed) as bad_delay:
        await api.enqueue(WriteLog(message="x"), defer_by=-1)
    with pytest.raises(ValidationFailed) as bad_filter:
        await api.list(status="lost")

    assert bad_address.value.fields == ["payload.to"]
    assert "payload.to" in str(bad_address.value)
    assert bad_name.value.fields == ["name"]
    assert bad_delay.value.fields == ["defer_by"]
    assert bad_filter.value.fields == ["status"]
    assert bad_address.value.status_code == 422
    assert bad_address.value.request_id


async def test_retrying_a_job_that_succeeded_is_a_conflict(api: Face) -> None:
    accepted = await api.enqueue(WriteLog(message=unique("done")))
    await api.wait(accepted.id, within=30)

    with pytest.raises(Conflict) as refused:
        await api.retry(accepted.id)

    assert "only failed or cancelled jobs can be retried" in str(refused.value)


# API keys: a gateway of its own with a full key and a read key (no worker: its jobs just wait).


@pytest.fixture(scope="module")
async def secured_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """The URL of a gateway started with API_KEYS and API_READ_KEYS."""
    async with lone_gateway(
        tmp_path_factory.mktemp("client-keys"),
        api_keys=FULL_KEY,
        extra_env={"API_READ_KEYS": READ_KEY},
        label="client-keys-gateway",
    ) as (url, _):
        yield url


async def test_a_missing_or_wrong_key_is_unauthorized(kind: str, secured_url: str) -> None:
    for key in (None, "not-" + FULL_KEY):
        async with opened(kind, secured_url, api_key=key) as api:
            with pytest.raises(Unauthorized) as refused:
                await api.enqueue(WriteLog(message="locked out"))
            with pytest.raises(Unauthorized):
                await api.list(limit=1)
        assert refused.value.status_code == 401
        assert "API key" in str(refused.value)
        assert FULL_KEY not in str(refused.value)


async def test_a_read_key_reads_and_a_change_with_it_is_forbidden(kind: str, secured_url: str) -> None:
    async with opened(kind, secured_url, api_key=FULL_KEY) as writer:
        accepted = await writer.enqueue(WriteLog(message=unique("keyed")))
    async with opened(kind, secured_url, api_key=READ_KEY) as reader:
        job = await reader.get(accepted.id)
        listed = await reader.list(limit=10)
        with pytest.raises(Forbidden) as forbidden:
            await reader.enqueue(WriteLog(message="not with a read key"))
        with pytest.raises(Forbidden):
            await reader.cancel(accepted.id)
    async with opened(kind, secured_url, api_key=FULL_KEY) as writer:
        cancelled = await writer.cancel(accepted.id)

    assert job.status is JobStatus.queued, "no worker runs this gateway's jobs"
    assert accepted.id in [summary.id for summary in listed]
    assert forbidden.value.status_code == 403
    assert cancelled.status is JobStatus.cancelled


# Idempotency: every enqueue is keyed, and a retry sends the same key.


async def test_a_lost_answer_is_retried_with_its_key_and_queues_one_job(
    kind: str, base_url: str, observer: Observer
) -> None:
    message = unique("lost answer")
    async with Relay(*host_and_port(base_url)) as relay:
        relay.drop_answers(1)  # the job is accepted; its 202 never arrives
        async with opened(kind, f"http://127.0.0.1:{relay.port}") as api:
            accepted = await api.enqueue(WriteLog(message=message))
            job = await api.wait(accepted.id, within=30)

    assert relay.dropped == 1
    assert accepted.replayed, "the second try got the first one's stored answer"
    assert await jobs_with_message(observer, message) == [accepted.id]
    assert job.status is JobStatus.succeeded
    assert [line["message"] for line in observer.log_records_of(accepted.id)] == [message]


async def test_a_cancel_whose_answer_is_lost_is_not_sent_again(kind: str, base_url: str) -> None:
    """A DELETE takes no key: after a lost answer the client cannot know, and says so."""
    async with opened(kind, base_url) as api:
        accepted = await api.enqueue(WriteLog(message=unique("cancel lost")), defer_by=3600)
        async with Relay(*host_and_port(base_url)) as relay:
            relay.drop_answers(1)
            async with opened(kind, f"http://127.0.0.1:{relay.port}") as relayed:
                with pytest.raises(TransportError):
                    await relayed.cancel(accepted.id)
        job = await api.get(accepted.id)

    assert relay.dropped == 1
    assert job.status is JobStatus.cancelled, "the lost answer's cancel took effect, once"


async def test_a_key_still_in_use_is_tried_again_after_retry_after(
    kind: str, base_url: str, observer: Observer
) -> None:
    message = unique("busy key")
    key = f"client-{uuid.uuid4()}"
    lock = lock_id(NO_API_KEY_SCOPE, key)
    async with recorded(kind) as (http, statuses), opened(kind, base_url, http=http) as api:
        async with observer.db.acquire() as conn:
            # As if a first request with this key were still running on a gateway.
            await conn.execute("SELECT pg_advisory_lock($1)", lock)
            enqueued = asyncio.create_task(api.enqueue(WriteLog(message=message), idempotency_key=key))
            await first_answer(statuses, enqueued)
            await conn.execute("SELECT pg_advisory_unlock($1)", lock)
        accepted = await enqueued

    assert statuses[0] == 409
    assert statuses[-1] == 202
    assert accepted.idempotency_key == key
    assert not accepted.replayed
    assert await jobs_with_message(observer, message) == [accepted.id]


async def test_a_503_is_tried_again_until_the_ledger_is_back(
    kind: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A gateway whose database does not exist yet answers 503; once it exists, the same request is queued."""
    message = unique("ledger back")
    name = f"afterword_client_{uuid.uuid4().hex[:10]}"
    dsn = database_dsn(name)
    workdir = tmp_path_factory.mktemp("client-503")
    try:
        async with (
            lone_gateway(workdir, api_keys="", database_dsn=dsn, label="client-503-gateway") as (url, _),
            recorded(kind) as (http, statuses),
            opened(kind, url, http=http) as api,
        ):
            enqueued = asyncio.create_task(api.enqueue(WriteLog(message=message)))
            await first_answer(statuses, enqueued)
            await create_database(name=name)
            accepted = await enqueued
        db = await asyncpg.connect(dsn)
        try:
            jobs = await db.fetch("SELECT id FROM jobs WHERE payload->>'message' = $1", message)
        finally:
            await db.close()
    finally:
        await drop_database(dsn)

    assert statuses[0] == 503
    assert statuses[-1] == 202
    assert not accepted.replayed
    assert [row["id"] for row in jobs] == [accepted.id], "queued once"


async def test_the_same_key_replays_and_is_refused_for_another_job(api: Face, observer: Observer) -> None:
    message = unique("same key")
    key = f"client-{uuid.uuid4()}"

    first = await api.enqueue(WriteLog(message=message), idempotency_key=key)
    again = await api.enqueue(WriteLog(message=message), idempotency_key=key)
    with pytest.raises(ValidationFailed) as refused:
        await api.enqueue(WriteLog(message=message + " and more"), idempotency_key=key)

    assert (first.replayed, again.replayed) == (False, True)
    assert again.id == first.id
    assert await jobs_with_message(observer, message) == [first.id]
    assert refused.value.fields == []
    assert "Idempotency-Key" in str(refused.value)
