"""The seed tutorial's endpoints, driven over HTTP, checked by their effects."""

from __future__ import annotations

import re
import uuid

import httpx

from tests.support.jobs_client import job_ids, wait_for_all, wait_for_job
from tests.support.observers import Observer

ISO_MICROSECONDS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(\+00:00|Z)$")


def unique_email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


async def test_signup_sends_one_welcome_email_writes_the_log_line_and_stamps_the_user(
    client: httpx.AsyncClient, observer: Observer
) -> None:
    email = unique_email("ada")
    response = await client.post("/signup", json={"email": email, "name": "Ada Lovelace"})

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["message"] == "Signup complete"
    ids = job_ids(body)
    assert set(ids) == {"send_email", "update_user", "write_log"}
    for job in body["jobs"]:
        assert job["status_url"].endswith(f"/jobs/{job['id']}")

    finished = await wait_for_all(client, list(ids.values()))
    assert [job["status"] for job in finished] == ["succeeded"] * 3, finished

    emails = await observer.emails_to(email)
    assert len(emails) == 1
    assert emails[0]["To"] == email
    assert "Ada Lovelace" in emails[0]["Subject"]
    assert emails[0]["Message-ID"].startswith(f"<{ids['send_email']}@")

    lines = observer.log_records_of(ids["write_log"])
    assert [line["message"] for line in lines] == [f"signup: {email}"]

    row = await observer.db.fetchrow("SELECT name, welcome_email_sent_at FROM users WHERE email = $1", email)
    assert row is not None
    assert row["name"] == "Ada Lovelace"
    assert row["welcome_email_sent_at"] is not None


async def test_send_logs_the_given_message(client: httpx.AsyncClient, observer: Observer) -> None:
    message = f"hello {uuid.uuid4().hex}"
    response = await client.post("/send", json={"message": message})

    assert response.status_code == 202, response.text
    assert response.json()["status"] == "Log task added"
    (job_id,) = job_ids(response.json()).values()
    assert (await wait_for_job(client, job_id))["status"] == "succeeded"
    assert [line["message"] for line in observer.log_records_of(job_id)] == [message]


async def test_send_without_a_body_logs_the_default_message(client: httpx.AsyncClient, observer: Observer) -> None:
    response = await client.post("/send")

    assert response.status_code == 202, response.text
    (job_id,) = job_ids(response.json()).values()
    assert (await wait_for_job(client, job_id))["status"] == "succeeded"
    assert [line["message"] for line in observer.log_records_of(job_id)] == ["User sent data"]


async def test_process_logs_process_started(client: httpx.AsyncClient, observer: Observer) -> None:
    response = await client.post("/process")

    assert response.status_code == 202, response.text
    assert response.json()["message"] == "Processing started"
    (job_id,) = job_ids(response.json()).values()
    assert (await wait_for_job(client, job_id))["status"] == "succeeded"
    assert [line["message"] for line in observer.log_records_of(job_id)] == ["Process started"]


async def test_job_status_reports_timings_tries_and_result(client: httpx.AsyncClient) -> None:
    response = await client.post("/process")
    (job_id,) = job_ids(response.json()).values()

    job = await wait_for_job(client, job_id)

    assert set(job) >= {"id", "name", "status", "tries", "result", "error", "enqueued_at", "started_at", "finished_at"}
    assert job["id"] == job_id
    assert job["name"] == "write_log"
    assert job["tries"] == 1
    assert job["error"] is None
    assert job["result"]["written_now"] is True
    for key in ("enqueued_at", "started_at", "finished_at"):
        assert ISO_MICROSECONDS.match(job[key]), (key, job[key])
    assert job["enqueued_at"] <= job["started_at"] <= job["finished_at"]
    assert [attempt["outcome"] for attempt in job["attempts"]] == ["succeeded"]


async def test_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/jobs/{uuid.uuid4().hex}")

    assert response.status_code == 404
    assert "no job" in response.json()["detail"]
