"""A signup name made of encoded words, end to end: the welcome email has exactly the headers the
mailer builds, the name as its literal text in the subject and the body, and one text body."""

from __future__ import annotations

import uuid

import httpx
from hypothesis import HealthCheck, example, given, settings

from tests.support.encoded_words import ISSUE_NAME, has_control_character, hostile_values
from tests.support.jobs_client import job_ids, wait_for_job
from tests.support.observers import Observer

HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "Content-Type", "Content-Transfer-Encoding", "MIME-Version"]
"""What the mailer builds for every email, in order."""


async def _assert_welcome_email_as_built(client: httpx.AsyncClient, observer: Observer, name: str) -> None:
    address = f"ew-{uuid.uuid4().hex[:12]}@example.com"
    response = await client.post("/signup", json={"email": address, "name": name})

    if has_control_character(name):
        assert response.status_code == 422, response.text
        return
    assert response.status_code == 202, response.text
    job = await wait_for_job(client, job_ids(response.json())["send_email"])
    assert job["status"] == "succeeded", job
    (message,) = await observer.emails_to(address)
    assert message.keys() == HEADERS
    assert message.defects == []
    assert message["Subject"] == f"Welcome to Afterword, {name}"
    assert message["To"] == address
    assert not message.is_multipart()
    assert message.get_content_type() == "text/plain"
    content = message.get_content()
    assert isinstance(content, str)
    assert content.replace("\r\n", "\n").startswith(f"Hello {name},\n\nthanks for signing up.")
    sink = observer.require_sink()
    [received] = sink.received_by(address)
    assert received.recipients == [address]
    assert received.sender == "noreply@afterword.localhost"


async def test_the_issue_name_arrives_as_text_in_a_plain_welcome_email(
    client: httpx.AsyncClient, observer: Observer
) -> None:
    await _assert_welcome_email_as_built(client, observer, ISSUE_NAME)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=hostile_values().filter(lambda name: len(name) <= 100))  # the signup's limit
@example(name="=?utf-8?b?QWRhDQpCY2M6IGV2ZUBldmlsLmV4YW1wbGU=?=")
@example(name="=?ISO-8859-1?Q?Zo=EB=0D=0AReply-To:_eve@evil.example?=")
async def test_a_name_of_encoded_words_never_adds_a_header(
    client: httpx.AsyncClient, observer: Observer, name: str
) -> None:
    await _assert_welcome_email_as_built(client, observer, name)


async def test_an_address_mail_software_would_decode_fails_the_job_at_once_saying_why(
    client: httpx.AsyncClient, observer: Observer
) -> None:
    # The address is valid as RFC 5322 has it ("=" and "?" are atext), so the gateway takes it; but
    # mail software decodes the encoded word in it (the standard library's parser reads it as
    # eve-...@example.com, another mailbox), so it is never sent, and trying again cannot help.
    decoded = f"eve-{uuid.uuid4().hex[:8]}@example.com"
    address = "=?utf-8?q?" + decoded.replace("@", "?=@")
    response = await client.post(
        "/jobs", json={"name": "send_email", "payload": {"to": address, "subject": "s", "body": "b"}}
    )

    assert response.status_code == 202, response.text
    job = await wait_for_job(client, response.json()["id"])
    assert (job["status"], job["tries"], [a["outcome"] for a in job["attempts"]]) == ("failed", 1, ["failed"])
    assert "recipient: an address holding '=?'" in job["error"]
    sink = observer.require_sink()
    assert (sink.received_by(address), sink.received_by(decoded)) == ([], [])
