"""Structured logs and request ids: from the request's header to the worker's log lines.

The tests that read the processes' output need the stack the tests started (not GATEWAY_URL).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.integration.conftest import LocalStack
from tests.support.jobs_client import job_ids, wait_for_all, wait_for_job
from tests.support.services import ServiceProcess

REQUIRED = ("timestamp", "level", "event", "service", "logger")


@pytest.fixture
def stack(local_stack: LocalStack | None) -> LocalStack:
    """The stack the tests started; skips against a running one."""
    if local_stack is None:
        pytest.skip("reads the processes' output: needs the stack the tests started (GATEWAY_URL is set)")
    return local_stack


def json_lines(process: ServiceProcess) -> list[dict[str, Any]]:
    """Every line the process printed, parsed: one that is not a JSON object fails the test."""
    records = []
    for number, line in enumerate(process.output().splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"{process.label} line {number} is not JSON: {line!r}")
        assert isinstance(record, dict), line
        records.append(record)
    return records


async def lines_until(process: ServiceProcess, found: Any, *, within: float = 10) -> list[dict[str, Any]]:
    """Wait until ``found(records)`` is true of the process's parsed output; return the records."""
    deadline = time.monotonic() + within
    while True:
        records = json_lines(process)
        if found(records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"{process.label}'s output never showed it; last lines: {records[-10:]}")
        await asyncio.sleep(0.05)


async def test_a_request_id_follows_the_jobs_into_the_workers_log_lines(
    client: httpx.AsyncClient, stack: LocalStack
) -> None:
    request_id = f"test-{uuid.uuid4().hex}"
    email = f"log-{uuid.uuid4().hex[:8]}@example.com"

    response = await client.post(
        "/signup", json={"email": email, "name": "Logged"}, headers={"X-Request-ID": request_id}
    )

    assert response.status_code == 202, response.text
    assert response.headers["x-request-id"] == request_id
    ids = job_ids(response.json())
    jobs = await wait_for_all(client, list(ids.values()))
    assert {job["request_id"] for job in jobs} == {request_id}

    gateway = json_lines(stack.gateway)
    (access,) = [r for r in gateway if r.get("request_id") == request_id and r["event"] == "request"]
    assert access["service"] == "gateway"
    assert (access["method"], access["route"], access["path"], access["status"]) == ("POST", "/signup", "/signup", 202)
    assert access["duration_ms"] >= 0

    def finished(records: list[dict[str, Any]]) -> bool:
        done = {r.get("job_id") for r in records if r["event"] == "job finished"}
        return set(ids.values()) <= done

    worker = await lines_until(stack.worker, finished)
    for name, job_id in ids.items():
        own = [r for r in worker if r.get("job_id") == job_id]
        events = [r["event"] for r in own]
        assert "job started" in events, own
        assert "job finished" in events, own
        for record in own:
            assert record["request_id"] == request_id, record
            assert record["job_name"] == name, record
            assert record["service"] == "jobs", record
        (end,) = [r for r in own if r["event"] == "job finished"]
        assert end["outcome"] == "succeeded"


async def test_every_line_has_the_common_fields(client: httpx.AsyncClient, stack: LocalStack) -> None:
    await wait_for_job(client, (await client.post("/process")).json()["jobs"][0]["id"])

    for process, service in ((stack.gateway, "gateway"), (stack.worker, "jobs")):
        records = json_lines(process)
        assert records, f"{process.label} printed nothing"
        for record in records:
            assert all(key in record for key in REQUIRED), record
            assert record["service"] == service
            timestamp = datetime.fromisoformat(record["timestamp"])
            assert timestamp.utcoffset() == timedelta(0), record
        # uvicorn's and ARQ's own records go through the same renderer.
        loggers = {record["logger"] for record in records}
        assert ("uvicorn.error" if service == "gateway" else "arq.worker") in loggers, loggers


async def test_a_generated_request_id_is_returned_and_stored(client: httpx.AsyncClient) -> None:
    response = await client.post("/process")

    assert response.status_code == 202
    request_id = response.headers["x-request-id"]
    assert len(request_id) == 32
    int(request_id, 16)
    job = await wait_for_job(client, response.json()["jobs"][0]["id"])
    assert job["request_id"] == request_id


@pytest.mark.parametrize("sent", ["x" * 201, "tab\there"])
async def test_an_unusable_request_id_is_replaced(client: httpx.AsyncClient, sent: str) -> None:
    response = await client.post("/process", headers={"X-Request-ID": sent})

    assert response.status_code == 202
    request_id = response.headers["x-request-id"]
    assert request_id != sent
    assert len(request_id) == 32
    job = (await client.get(f"/jobs/{response.json()['jobs'][0]['id']}")).json()
    assert job["request_id"] == request_id


async def test_error_responses_carry_the_request_id(client: httpx.AsyncClient) -> None:
    not_found = await client.get("/jobs/nope", headers={"X-Request-ID": "err-404"})
    invalid = await client.post("/jobs", json={"name": "rm_rf"}, headers={"X-Request-ID": "err-422"})
    no_route = await client.get("/no/such/route")

    assert (not_found.status_code, not_found.headers["x-request-id"]) == (404, "err-404")
    assert (invalid.status_code, invalid.headers["x-request-id"]) == (422, "err-422")
    assert no_route.status_code == 404
    assert len(no_route.headers["x-request-id"]) == 32
