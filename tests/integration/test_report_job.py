"""The walkthrough's job (docs/jobs.md), over HTTP with the real worker: a report, a refusal, a 422."""

from __future__ import annotations

import json
import uuid

import httpx

from tests.support.jobs_client import wait_for_job
from tests.support.observers import Observer


async def test_a_report_queued_over_http_is_written_once(client: httpx.AsyncClient, observer: Observer) -> None:
    title = f"Signups {uuid.uuid4().hex[:6]}"
    payload = {
        "title": title,
        "columns": ["day", "signups", "note"],
        "rows": [["2024-05-01", 12, None], ["2024-05-02", 9.5, "a, b"]],
    }

    response = await client.post("/jobs", json={"name": "write_report", "payload": payload})

    assert response.status_code == 202, response.text
    job = await wait_for_job(client, response.json()["id"])
    name = f"{job['id']}-{title.lower().replace(' ', '-')}.csv"
    assert job["status"] == "succeeded", job
    assert job["tries"] == 1
    assert job["payload"] == payload
    assert job["result"]["rows"] == 2
    assert job["result"]["file"].endswith(f"/{name}")
    assert observer.reports_of(job["id"]) == {name: 'day,signups,note\r\n2024-05-01,12,\r\n2024-05-02,9.5,"a, b"\r\n'}
    detail = await observer.db.fetchval(
        "SELECT detail FROM job_effects WHERE job_id = $1 AND effect = 'report'", job["id"]
    )
    assert json.loads(detail) == job["result"]


async def test_a_report_too_large_fails_at_once_as_permanent(client: httpx.AsyncClient, observer: Observer) -> None:
    columns = [f"c{i}" for i in range(50)]
    rows = [[0] * 50 for _ in range(201)]  # 10050 values: more than a report may hold

    response = await client.post(
        "/jobs", json={"name": "write_report", "payload": {"title": "big", "columns": columns, "rows": rows}}
    )

    assert response.status_code == 202, response.text
    job = await wait_for_job(client, response.json()["id"])
    assert job["status"] == "failed", job
    assert job["tries"] == 1, "a permanent error is not retried"
    assert [attempt["outcome"] for attempt in job["attempts"]] == ["failed"]
    assert job["error"].startswith("ReportTooLarge: 10050 values"), job["error"]
    assert observer.reports_of(job["id"]) == {}


async def test_rows_of_the_wrong_length_are_a_422_naming_the_field(
    client: httpx.AsyncClient, observer: Observer
) -> None:
    rows_before, _ = await observer.queued_snapshot()
    payload = {"title": "t", "columns": ["a", "b"], "rows": [["1", "2"], ["3"]]}

    response = await client.post("/jobs", json={"name": "write_report", "payload": payload})

    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "payload", "rows"]
    assert "row 1 has 1 values, not one per column (2)" in error["msg"]
    rows_after, _ = await observer.queued_snapshot()
    assert rows_after == rows_before, "a refused request wrote a ledger row"
