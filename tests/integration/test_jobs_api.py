"""POST /jobs for any contract job: success, permanent failure, transient retry, deferral."""

from __future__ import annotations

import re
import uuid
from datetime import datetime

import httpx

from tests.integration.conftest import LocalStack
from tests.support.jobs_client import wait_for_job
from tests.support.observers import Observer


async def test_a_job_that_fails_for_good_reports_failed_with_its_error(
    client: httpx.AsyncClient, observer: Observer
) -> None:
    sink = observer.require_sink()
    address = f"nobody-{uuid.uuid4().hex[:10]}@example.com"
    sink.refuse(address, 550, "5.1.1 No such user here")
    try:
        response = await client.post(
            "/jobs", json={"name": "send_email", "payload": {"to": address, "subject": "Hi", "body": "Hello"}}
        )
        assert response.status_code == 202, response.text
        job = await wait_for_job(client, response.json()["id"])
    finally:
        sink.accept(address)

    assert job["status"] == "failed"
    assert job["tries"] == 1, "a permanent SMTP error is not retried"
    assert "550" in job["error"]
    assert "PermanentError" in job["error"]
    assert job["finished_at"] is not None
    assert await observer.emails_to(address) == []


async def test_a_temporary_smtp_failure_is_retried_and_delivered_once(
    client: httpx.AsyncClient, observer: Observer
) -> None:
    sink = observer.require_sink()
    address = f"later-{uuid.uuid4().hex[:10]}@example.com"
    sink.fail_next(1)
    response = await client.post(
        "/jobs", json={"name": "send_email", "payload": {"to": address, "subject": "Retry", "body": "Hello"}}
    )
    job = await wait_for_job(client, response.json()["id"])

    assert job["status"] == "succeeded", job
    assert job["tries"] == 2
    assert [a["outcome"] for a in job["attempts"]] == ["retrying", "succeeded"]
    assert "451" in job["attempts"][0]["error"]
    assert len(await observer.emails_to(address)) == 1
    # The retry's due time became the job's run_at: after the failed try, not after the retry.
    first, second = (datetime.fromisoformat(a["started_at"]) for a in job["attempts"])
    assert first < datetime.fromisoformat(job["run_at"]) <= second


def seconds_of(duration: str) -> float:
    """``2.5s``, ``41m 3s`` or ``2h 5m`` in seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(float(part[:-1]) * units[part[-1]] for part in duration.split())


async def test_a_job_failing_transiently_on_every_try_fails_on_its_last(
    client: httpx.AsyncClient, observer: Observer, local_stack: LocalStack | None
) -> None:
    sink = observer.require_sink()  # only with the stack the tests started, whose settings are known
    assert local_stack is not None
    max_tries = int(local_stack.env["JOB_MAX_TRIES"])
    address = f"busy-{uuid.uuid4().hex[:10]}@example.com"
    sink.refuse(address, 451, "4.2.1 Mailbox busy, try again later")
    try:
        response = await client.post(
            "/jobs", json={"name": "send_email", "payload": {"to": address, "subject": "Hi", "body": "Hello"}}
        )
        assert response.status_code == 202, response.text
        job = await wait_for_job(client, response.json()["id"])
    finally:
        sink.accept(address)

    assert job["status"] == "failed", job
    assert job["tries"] == max_tries
    assert job["finished_at"] is not None
    assert [a["outcome"] for a in job["attempts"]] == ["retrying"] * (max_tries - 1) + ["failed"]
    assert all("451" in a["error"] for a in job["attempts"])
    first_start = datetime.fromisoformat(job["attempts"][0]["started_at"])
    last_end = datetime.fromisoformat(job["attempts"][-1]["finished_at"])
    gave_up = re.fullmatch(rf"gave up after {max_tries} tries over ((?:\d+(?:\.\d)?[hms] ?)+): (.*)", job["error"])
    assert gave_up is not None, job["error"]
    assert 0 < seconds_of(gave_up[1]) <= (last_end - first_start).total_seconds() + 0.5  # shown rounded
    assert "451" in gave_up[2]
    assert await observer.emails_to(address) == []


async def test_update_user_creates_the_row(client: httpx.AsyncClient, observer: Observer) -> None:
    email = f"grace-{uuid.uuid4().hex[:10]}@example.com"
    response = await client.post("/jobs", json={"name": "update_user", "payload": {"email": email, "name": "Grace"}})

    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued"
    assert accepted["status_url"].endswith(f"/jobs/{accepted['id']}")
    job = await wait_for_job(client, accepted["id"])
    assert job["status"] == "succeeded"
    assert await observer.db.fetchval("SELECT name FROM users WHERE email = $1", email) == "Grace"


async def test_a_deferred_job_waits_its_turn(client: httpx.AsyncClient, observer: Observer) -> None:
    message = f"later {uuid.uuid4().hex}"
    response = await client.post("/jobs", json={"name": "write_log", "payload": {"message": message}, "defer_by": 1})

    assert response.status_code == 202, response.text
    assert response.json()["status"] == "deferred"
    assert (await client.get(f"/jobs/{response.json()['id']}")).json()["status"] == "deferred"
    job = await wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded"
    assert datetime.fromisoformat(job["started_at"]) >= datetime.fromisoformat(job["run_at"])
    assert [line["message"] for line in observer.log_records_of(job["id"])] == [message]


async def test_cleanup_job_removes_old_temp_files(client: httpx.AsyncClient) -> None:
    response = await client.post("/jobs", json={"name": "cleanup_temp_files", "payload": {}})

    assert response.status_code == 202, response.text
    job = await wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded"
    assert job["result"]["removed"] >= 0
