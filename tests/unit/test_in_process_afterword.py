"""``afterword_jobs``: a user's app queues jobs through the client, and the jobs run for real, without Redis.

The tests of this module run with ``REDIS_URL`` on a listening socket that counts connections
(:class:`RedisTrap`), but for a cancel, which the gateway tells Redis about (on a closed port, as
by default); :func:`test_nothing_reaches_redis` drives the other paths a client takes and checks
that no connection was made.
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest
from afterword_client import JobStatus as ClientStatus
from afterword_client import UpdateUser, ValidationFailed, WriteLog
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning

from services.contract import JobName, JobStatus, SendEmail
from services.testing import InProcessAfterword, JobFailed
from services.testing.afterword import run_in_thread
from tests.support.example_app import create_app

with warnings.catch_warnings():
    # Starlette asks for httpx2 under its TestClient; httpx, which the environment has, works the same.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

ADA = "ada@example.com"


class RedisTrap:
    """A socket listening where ``REDIS_URL`` points: any connection to it is counted."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._socket.getsockname()[1]}/0"

    def connections(self) -> int:
        """How many connections were made to it (the kernel completed them; nobody answered)."""
        self._socket.setblocking(False)
        made = 0
        while True:
            try:
                connection, _ = self._socket.accept()
            except BlockingIOError:
                return made
            connection.close()
            made += 1

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def redis_trap() -> Iterator[RedisTrap]:
    trap = RedisTrap()
    try:
        yield trap
    finally:
        trap.close()


@pytest.fixture
def afterword_settings(redis_trap: RedisTrap) -> dict[str, Any]:
    return {"redis_url": redis_trap.url}


def welcome_sent_at(afterword: InProcessAfterword, email: str) -> datetime | None:
    """The user row's ``welcome_email_sent_at`` in the in-process Afterword's database."""

    async def read() -> datetime | None:
        conn = await asyncpg.connect(afterword.settings.database_dsn)
        try:
            sent: datetime | None = await conn.fetchval(
                "SELECT welcome_email_sent_at FROM users WHERE email = $1", email
            )
            return sent
        finally:
            await conn.close()

    return run_in_thread(read)


def signup(afterword: InProcessAfterword, email: str = ADA, name: str = "Ada") -> dict[str, Any]:
    """Sign up through the example app (run by Starlette's TestClient, on a loop of its own)."""
    with TestClient(create_app(afterword.async_client)) as http:
        response = http.post("/signup", json={"email": email, "name": name})
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_a_signup_queues_a_welcome_email_that_runs_when_the_jobs_run(afterword_jobs: InProcessAfterword) -> None:
    answer = signup(afterword_jobs)

    [job] = afterword_jobs.of(JobName.send_email)
    assert job.id == answer["welcome_job"]
    assert job.payload == SendEmail(
        to=ADA, subject="Welcome, Ada", body="Hello Ada, thanks for signing up.", mark_welcome_sent=True
    )
    assert job.idempotency_key == f"welcome:{ADA}"
    assert afterword_jobs.enqueued == [job]
    assert afterword_jobs.mail.messages == []  # queued, not run
    assert afterword_jobs.job(job.id).status is JobStatus.queued

    [run] = afterword_jobs.run_all()

    assert (run.job_id, run.status, run.job_try) == (job.id, JobStatus.succeeded, 1)
    [message] = afterword_jobs.mail.messages_to(ADA)
    assert message["Subject"] == "Welcome, Ada"
    assert message["Message-ID"] == run.result["message_id"]
    assert welcome_sent_at(afterword_jobs, ADA) is not None  # the implementation's second effect
    record = afterword_jobs.job(job.id)
    assert (record.status, record.tries, record.request_id) == (JobStatus.succeeded, 1, job.request_id)
    assert afterword_jobs.run_all() == []  # nothing left


def test_a_refused_recipient_fails_the_job_at_once(afterword_jobs: InProcessAfterword) -> None:
    afterword_jobs.mail.refuse(ADA)
    job_id = signup(afterword_jobs)["welcome_job"]

    with pytest.raises(JobFailed) as failure:
        afterword_jobs.run_all()

    [run] = failure.value.failed
    assert (run.job_id, run.status, run.job_try) == (job_id, JobStatus.failed, 1)  # permanent: one try
    assert run.error is not None
    assert "550" in run.error
    assert afterword_jobs.job(job_id).error == run.error
    assert afterword_jobs.mail.messages == []
    assert welcome_sent_at(afterword_jobs, ADA) is None


def test_a_failure_can_be_returned_instead_of_raised(afterword_jobs: InProcessAfterword) -> None:
    afterword_jobs.mail.refuse(ADA)
    signup(afterword_jobs)

    [run] = afterword_jobs.run_all(check=False)

    assert run.status is JobStatus.failed
    assert afterword_jobs.runs == [run]


def test_a_temporary_failure_is_tried_again_by_the_jobs_policy(afterword_jobs: InProcessAfterword) -> None:
    afterword_jobs.mail.fail_next(1)
    job_id = signup(afterword_jobs)["welcome_job"]

    runs = afterword_jobs.run_all()

    assert [(run.job_id, run.job_try, run.status) for run in runs] == [
        (job_id, 1, JobStatus.retrying),
        (job_id, 2, JobStatus.succeeded),
    ]
    assert runs[0].error is not None
    assert "451" in runs[0].error
    assert len(afterword_jobs.mail.messages_to(ADA)) == 1


@pytest.mark.parametrize("afterword_settings", [{"job_max_tries": 2}])
def test_a_job_failing_every_try_gives_up_after_its_tries(afterword_jobs: InProcessAfterword) -> None:
    afterword_jobs.mail.fail_next(5)
    signup(afterword_jobs)

    runs = afterword_jobs.run_all(check=False)

    assert [(run.job_try, run.status) for run in runs] == [(1, JobStatus.retrying), (2, JobStatus.failed)]
    assert runs[-1].error is not None
    assert runs[-1].error.startswith("gave up after 2 tries")


def test_an_invalid_payload_is_refused_as_the_gateway_refuses_it(afterword_jobs: InProcessAfterword) -> None:
    with afterword_jobs.client() as client, pytest.raises(ValidationFailed) as refused:
        client.enqueue("send_email", {"to": "not an address", "subject": "Hi", "body": ""})

    assert refused.value.status_code == 422
    assert refused.value.fields == ["payload.to"]
    assert afterword_jobs.enqueued == []
    assert afterword_jobs.run_all() == []


def test_the_same_idempotency_key_queues_one_job(afterword_jobs: InProcessAfterword) -> None:
    first = signup(afterword_jobs)
    again = signup(afterword_jobs)

    assert again["welcome_job"] == first["welcome_job"]
    assert len(afterword_jobs.enqueued) == 1


def test_a_deferred_job_runs_when_due_or_when_every_job_is_run(afterword_jobs: InProcessAfterword) -> None:
    with afterword_jobs.client() as client:
        accepted = client.enqueue(WriteLog(message="later"), defer_by=3600)

    [job] = afterword_jobs.of("write_log")
    assert (job.id, job.defer_by) == (accepted.id, 3600)
    assert afterword_jobs.run_all(due_only=True) == []
    [run] = afterword_jobs.run_all()
    assert run.status is JobStatus.succeeded
    assert '"message":"later"' in afterword_jobs.settings.log_file.read_text()


@pytest.mark.parametrize("afterword_settings", [{}])  # REDIS_URL on a closed port, as by default
def test_a_cancelled_job_never_runs(afterword_jobs: InProcessAfterword) -> None:
    with afterword_jobs.client() as client:
        accepted = client.enqueue(WriteLog(message="never"), defer_by=60)
        cancelled = client.cancel(accepted.id)

    assert cancelled.status is ClientStatus.cancelled
    assert afterword_jobs.run_all() == []
    assert not afterword_jobs.settings.log_file.exists()


def test_the_inline_mode_runs_a_job_before_the_request_is_answered(afterword_jobs: InProcessAfterword) -> None:
    afterword_jobs.inline = True

    job_id = signup(afterword_jobs)["welcome_job"]

    assert [run.job_id for run in afterword_jobs.runs] == [job_id]
    assert len(afterword_jobs.mail.messages_to(ADA)) == 1


def test_a_sync_endpoint_queues_through_the_blocking_client(afterword_jobs: InProcessAfterword) -> None:
    app = FastAPI()

    @app.post("/users/{email}")
    def rename(email: str) -> dict[str, str]:  # run in the app's thread pool, as FastAPI runs a def
        with afterword_jobs.client() as client:
            return {"job": client.enqueue(UpdateUser(email=email, name="Ada Lovelace")).id}

    with TestClient(app) as http:
        job_id = http.post(f"/users/{ADA}").json()["job"]

    assert [job.id for job in afterword_jobs.of(JobName.update_user)] == [job_id]
    [run] = afterword_jobs.run_all()
    assert run.result == {"email": ADA, "changed": True}


def test_the_seed_signup_queues_three_jobs_that_each_take_effect(afterword_jobs: InProcessAfterword) -> None:
    with httpx.Client(transport=afterword_jobs.transport, base_url=afterword_jobs.base_url) as http:
        response = http.post("/signup", json={"email": ADA, "name": "Ada Lovelace"})
    assert response.status_code == 202, response.text

    assert [job.name for job in afterword_jobs.enqueued] == ["send_email", "update_user", "write_log"]
    assert {job.request_id for job in afterword_jobs.enqueued} == {response.headers["X-Request-ID"]}
    runs = afterword_jobs.run_all()

    assert [run.status for run in runs] == [JobStatus.succeeded] * 3
    assert afterword_jobs.mail.messages_to(ADA)[0]["Subject"] == "Welcome to Afterword, Ada Lovelace"
    assert welcome_sent_at(afterword_jobs, ADA) is not None
    assert f"signup: {ADA}" in afterword_jobs.settings.log_file.read_text()


async def test_an_async_test_queues_follows_and_runs_jobs(afterword_jobs: InProcessAfterword) -> None:
    async with afterword_jobs.async_client() as client:
        accepted = await client.enqueue(WriteLog(message="from an async test"))
        [run] = await afterword_jobs.arun_all()
        job = await client.wait(accepted.id, timeout=5)
        statuses = [event.status async for event in client.events(accepted.id)]

    assert run.job_id == accepted.id
    assert job.status is ClientStatus.succeeded
    assert [attempt.outcome for attempt in job.attempts] == ["succeeded"]
    assert statuses == [ClientStatus.succeeded]


def test_nothing_reaches_redis(afterword_jobs: InProcessAfterword, redis_trap: RedisTrap) -> None:
    job_id = signup(afterword_jobs)["welcome_job"]
    with afterword_jobs.client() as client:
        logged = client.enqueue(WriteLog(message="hello"))
        afterword_jobs.run_all()
        assert client.wait(job_id, timeout=5).status is ClientStatus.succeeded
        assert client.get(logged.id).status is ClientStatus.succeeded
        assert {job.id for job in client.list()} == {job_id, logged.id}
        assert [event.status for event in client.events(logged.id)] == [ClientStatus.succeeded]

    assert redis_trap.connections() == 0
