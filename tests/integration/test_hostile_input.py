"""Hostile text in every field: no extra recipient, no forged log line, never a 5xx."""

from __future__ import annotations

import uuid

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.jobs_client import wait_for_job
from tests.support.observers import Observer

HOSTILE = [
    "\r\n", "\n", "\r", "\u2028", "\u2029", "\x00", "\x1b[31m", "\x85", "Bcc: eve@example.com", '"}\n{"job_id":"x"',
]  # fmt: skip
hostile_text = st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=8)), min_size=1, max_size=6).map("".join)
RUNS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@RUNS
@given(name=hostile_text)
async def test_signup_name_cannot_add_recipients_or_headers(
    client: httpx.AsyncClient, observer: Observer, name: str
) -> None:
    address = f"prop-{uuid.uuid4().hex[:12]}@example.com"
    response = await client.post("/signup", json={"email": address, "name": name})

    assert response.status_code in (202, 422), response.text
    if response.status_code == 422:
        return
    jobs = {job["name"]: job["id"] for job in response.json()["jobs"]}
    assert (await wait_for_job(client, jobs["send_email"]))["status"] == "succeeded"
    (message,) = await observer.emails_to(address)
    assert message.get_all("To") == [address]
    assert message.get("Bcc") is None
    assert message.get("Cc") is None
    sink = observer.require_sink()
    assert [r.recipients for r in sink.received if r.message["Message-ID"] == message["Message-ID"]] == [[address]]


@RUNS
@given(message=hostile_text)
async def test_a_log_message_is_always_exactly_one_line(
    client: httpx.AsyncClient, observer: Observer, message: str
) -> None:
    response = await client.post("/send", json={"message": message})

    assert response.status_code in (202, 422), response.text
    if response.status_code == 422:
        assert message == "" or "\x00" in message, "only an empty message or a NUL is refused"
        return
    (job,) = response.json()["jobs"]
    assert (await wait_for_job(client, job["id"]))["status"] == "succeeded"
    records = observer.log_records()  # every line parses as one JSON object
    assert [record["message"] for record in records if record["job_id"] == job["id"]] == [message]


@RUNS
@given(subject=hostile_text, body=hostile_text, to=hostile_text)
async def test_any_job_payload_is_accepted_or_refused_never_a_server_error(
    client: httpx.AsyncClient, subject: str, body: str, to: str
) -> None:
    payload = {"to": f"{to}@example.com", "subject": subject, "body": body}
    response = await client.post("/jobs", json={"name": "send_email", "payload": payload})

    assert response.status_code in (202, 422), response.text
