"""Dead letters you can act on: list failed jobs, retry them, cancel queued ones."""

from __future__ import annotations

import uuid

import httpx

from tests.support.jobs_client import wait_for_job
from tests.support.observers import Observer


async def test_cancel_a_deferred_job_then_retry_it(client: httpx.AsyncClient, observer: Observer) -> None:
    message = f"cancel me {uuid.uuid4().hex}"
    accepted = (
        await client.post("/jobs", json={"name": "write_log", "payload": {"message": message}, "defer_by": 3600})
    ).json()

    cancelled = await client.delete(f"/jobs/{accepted['id']}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["error"] == "cancelled by request"
    again = await client.delete(f"/jobs/{accepted['id']}")
    assert again.status_code == 409

    retried = await client.post(f"/jobs/{accepted['id']}/retry")
    assert retried.status_code == 202, retried.text
    assert retried.json()["id"] == accepted["id"]
    job = await wait_for_job(client, accepted["id"])
    assert job["status"] == "succeeded"
    assert [line["message"] for line in observer.log_records_of(accepted["id"])] == [message]


async def test_retry_and_cancel_refuse_what_they_cannot_do(client: httpx.AsyncClient) -> None:
    accepted = (await client.post("/process")).json()["jobs"][0]
    await wait_for_job(client, accepted["id"])

    assert (await client.post(f"/jobs/{accepted['id']}/retry")).status_code == 409
    assert (await client.delete(f"/jobs/{accepted['id']}")).status_code == 409
    unknown = uuid.uuid4().hex
    assert (await client.post(f"/jobs/{unknown}/retry")).status_code == 404
    assert (await client.delete(f"/jobs/{unknown}")).status_code == 404


async def test_failed_jobs_are_listed_with_filters(client: httpx.AsyncClient, observer: Observer) -> None:
    sink = observer.require_sink()
    address = f"dead-{uuid.uuid4().hex[:10]}@example.com"
    sink.refuse(address, 550)
    try:
        payload = {"to": address, "subject": "s", "body": ""}
        accepted = (await client.post("/jobs", json={"name": "send_email", "payload": payload})).json()
        assert (await wait_for_job(client, accepted["id"]))["status"] == "failed"
    finally:
        sink.accept(address)

    failed = (await client.get("/jobs", params={"status": "failed", "limit": 500})).json()
    assert accepted["id"] in [job["id"] for job in failed["jobs"]]
    assert {job["status"] for job in failed["jobs"]} == {"failed"}
    by_name = (await client.get("/jobs", params={"status": "failed", "name": "write_log"})).json()
    assert accepted["id"] not in [job["id"] for job in by_name["jobs"]]


async def test_pagination_walks_every_job_once_newest_first(client: httpx.AsyncClient, observer: Observer) -> None:
    for _ in range(5):
        await client.post("/process")
    expected = {row["id"] for row in await observer.db.fetch("SELECT id FROM jobs WHERE name = 'write_log'")}
    seen: list[str] = []
    stamps: list[str] = []
    url: str | None = "/jobs?limit=2&name=write_log"
    while url is not None and len(seen) <= len(expected):
        page = (await client.get(url)).json()
        assert len(page["jobs"]) <= 2
        seen += [job["id"] for job in page["jobs"]]
        stamps += [job["enqueued_at"] for job in page["jobs"]]
        url = page["next"]
    assert url is None, "the last page has no next link"
    assert len(seen) == len(set(seen)), "no job on two pages"
    assert set(seen) == expected
    assert stamps == sorted(stamps, reverse=True)


async def test_bad_listing_parameters_are_422(client: httpx.AsyncClient) -> None:
    cases: list[tuple[dict[str, str | int], str]] = [
        ({"status": "lost"}, "status"),
        ({"name": "rm_rf"}, "name"),
        ({"limit": 0}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ]
    for params, field in cases:
        response = await client.get("/jobs", params=params)
        assert response.status_code == 422, (params, response.text)
        assert ["query", field] in [error["loc"] for error in response.json()["detail"]]
