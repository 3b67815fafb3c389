"""Bad input gets a clear error naming the field, and queues nothing."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.observers import Observer


@pytest.fixture
async def nothing_queued(observer: Observer) -> AsyncIterator[None]:
    """Fail the test if the ledger or the ARQ queue grew while it ran."""
    rows_before, queue_before = await observer.queued_snapshot()
    yield
    rows_after, queue_after = await observer.queued_snapshot()
    assert rows_after == rows_before, "a refused request wrote a ledger row"
    assert not queue_after - queue_before, "a refused request put a job on the queue"


def locations(response: httpx.Response) -> list[list[Any]]:
    assert response.status_code == 422, response.text
    return [error["loc"] for error in response.json()["detail"]]


@pytest.mark.usefixtures("nothing_queued")
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "name": "Ada"}, ["body", "email"]),
        ({"email": "ada@example.com\r\nBcc: eve@example.com", "name": "Ada"}, ["body", "email"]),
        ({"email": "ada@example.com", "name": "Ada\r\nBcc: eve@example.com"}, ["body", "name"]),
        ({"email": "ada@example.com", "name": "Ada\u2028Bcc"}, ["body", "name"]),
        ({"email": "ada@example.com", "name": ""}, ["body", "name"]),
        ({"email": "ada@example.com"}, ["body", "name"]),
        ({"email": "ada@example.com", "name": "Ada", "admin": True}, ["body", "admin"]),
        ({"email": 42, "name": "Ada"}, ["body", "email"]),
    ],
)
async def test_signup_refuses_bad_fields(client: httpx.AsyncClient, body: dict[str, Any], field: list[Any]) -> None:
    assert field in locations(await client.post("/signup", json=body))


@pytest.mark.usefixtures("nothing_queued")
async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/signup", content=b'{"email": "ada@example.com", "name": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.usefixtures("nothing_queued")
async def test_unknown_job_name_is_422_on_name(client: httpx.AsyncClient) -> None:
    assert ["body", "name"] in locations(await client.post("/jobs", json={"name": "rm_rf", "payload": {}}))


@pytest.mark.usefixtures("nothing_queued")
@pytest.mark.parametrize(
    ("job", "field"),
    [
        ({"name": "write_log", "payload": {"message": 12}}, ["body", "payload", "message"]),
        ({"name": "write_log", "payload": {}}, ["body", "payload", "message"]),
        ({"name": "write_log", "payload": {"message": "a\x00b"}}, ["body", "payload", "message"]),
        ({"name": "send_email", "payload": {"to": "x@example.com", "subject": "a\nBcc: e@x.io", "body": ""}},
         ["body", "payload", "subject"]),
        ({"name": "send_email", "payload": {"to": ["x@example.com"], "subject": "s", "body": "b"}},
         ["body", "payload", "to"]),
        ({"name": "update_user", "payload": {"email": "x@example.com", "name": "n", "role": "admin"}},
         ["body", "payload", "role"]),
        ({"name": "write_log", "payload": {"message": "m"}, "defer_by": -1}, ["body", "defer_by"]),
        ({"name": "write_log", "payload": "message"}, ["body", "payload"]),
    ],
)  # fmt: skip
async def test_jobs_refuses_bad_payloads(client: httpx.AsyncClient, job: dict[str, Any], field: list[Any]) -> None:
    assert field in locations(await client.post("/jobs", json=job))


@pytest.mark.usefixtures("nothing_queued")
async def test_send_refuses_a_non_string_message(client: httpx.AsyncClient) -> None:
    assert ["body", "message"] in locations(await client.post("/send", json={"message": ["x"]}))


@pytest.mark.usefixtures("nothing_queued")
async def test_an_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/send", json={"message": "x" * 200_000})
    assert response.status_code == 413


@pytest.mark.usefixtures("nothing_queued")
async def test_an_oversized_chunked_body_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"message": "'
        for _ in range(100):
            yield b"x" * 4096
        yield b'"}'

    response = await client.post("/send", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


# Values Postgres cannot store (NUL), JSON cannot carry as UTF-8 (a lone surrogate) or that do not
# fit the type they claim: each is refused with the error the README lists, never a 500.

NUL_IDS = ["/jobs/%00", "/jobs/%00/events", "/jobs/%00?wait=1", "/jobs/a%00b", "/jobs/%00%00?wait=0"]


@pytest.mark.parametrize("path", NUL_IDS)
async def test_a_job_id_that_cannot_exist_is_404_on_reads(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)

    assert response.status_code == 404, response.text
    assert response.json()["detail"].startswith("no job with id ")


@pytest.mark.usefixtures("nothing_queued")
@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/jobs/%00"), ("POST", "/jobs/%00/retry"), ("DELETE", "/jobs/nope"), ("POST", "/jobs/nope/retry")],
)
async def test_a_job_id_that_cannot_exist_is_404_on_changes(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await client.request(method, path)

    assert response.status_code == 404, response.text
    assert response.json()["detail"].startswith("no job with id ")


def cursor_of(value: Any) -> str:
    """A cursor as the gateway encodes one (base64url of JSON, unpadded), holding ``value``."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


NOW = "2026-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    "cursor",
    [
        cursor_of([NOW, "a\x00b"]),
        cursor_of([NOW, "a\ud800b"]),
        cursor_of([NOW, "x" * 32]),
        cursor_of([NOW, 7]),
        cursor_of(["0001-01-01T00:00:00+14:00", uuid.uuid4().hex]),
        cursor_of(["9999-12-31T23:59:59-14:00", uuid.uuid4().hex]),
        cursor_of(["2026-01-01T00:00:00", uuid.uuid4().hex]),
        base64.urlsafe_b64encode(b"[" * 3000).decode(),
        "\x00",
        "%",
    ],
)
async def test_a_cursor_not_from_a_previous_page_is_422_on_cursor(client: httpx.AsyncClient, cursor: str) -> None:
    assert ["query", "cursor"] in locations(await client.get("/jobs", params={"cursor": cursor}))


@pytest.mark.usefixtures("nothing_queued")
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/send", rb'{"message": "a\ud800b"}', ["body", "message"]),
        ("/send", b'{"message": "a\xed\xa0\x80b"}', ["body", "message"]),  # the surrogate as raw bytes
        ("/signup", rb'{"email": "ada@example.com", "name": "Ada\udfff"}', ["body", "name"]),
        ("/signup", rb'{"email": "ada\ud800@example.com", "name": "Ada"}', ["body", "email"]),
        ("/jobs", rb'{"name": "write_log", "payload": {"message": "\udc00"}}', ["body", "payload", "message"]),
        ("/jobs", rb'{"name": "write_log\ud800", "payload": {}}', ["body", "name"]),
        ("/jobs", rb'{"name": "cleanup_temp_files", "payload": {"\ud800": 1}}', ["body", "payload"]),
        ("/send", rb'{"message": "m", "a\ud800": 1}', ["body"]),  # a key: its object is named
        ("/jobs", rb'{"name": "write_log", "payload": {"message": NaN}}', ["body", "payload", "message"]),
        ("/jobs", rb'{"name": "write_log", "payload": {"message": "m"}, "defer_by": Infinity}', ["body", "defer_by"]),
        ("/jobs", rb'{"name": "write_log", "payload": {"message": "m"}, "defer_by": -Infinity}', ["body", "defer_by"]),
    ],
)
async def test_a_string_or_number_json_cannot_carry_is_422_on_its_field(
    client: httpx.AsyncClient, path: str, body: bytes, field: list[Any]
) -> None:
    response = await client.post(path, content=body, headers={"content-type": "application/json"})

    assert field in locations(response)
    assert "\\ud" not in response.text.lower(), "the answer itself carries no lone surrogate"


@pytest.mark.usefixtures("nothing_queued")
@pytest.mark.parametrize("path", ["/send", "/signup", "/jobs"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", "application/xml"])
async def test_a_body_that_is_not_json_is_422_on_body(client: httpx.AsyncClient, path: str, content_type: str) -> None:
    response = await client.post(path, content=b"\xff\xfe\x00 not json", headers={"content-type": content_type})

    assert ["body"] in locations(response)
