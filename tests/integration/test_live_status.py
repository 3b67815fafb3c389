"""Live status over HTTP: the long poll of GET /jobs/{id}?wait=N, the event stream, GET /stats."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest

from services.contract import JobStatus
from services.core.settings import Settings
from tests.integration.conftest import LocalStack
from tests.support.jobs_client import wait_for_all, wait_for_job
from tests.support.observers import Observer
from tests.support.sse import collapse, read_events

STREAM_TIMEOUT = httpx.Timeout(30)


async def _post(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def _write_log(defer_by: float | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "write_log", "payload": {"message": f"live {uuid.uuid4().hex}"}}
    if defer_by is not None:
        body["defer_by"] = defer_by
    return body


def _email(address: str) -> dict[str, Any]:
    return {"name": "send_email", "payload": {"to": address, "subject": "Live", "body": "Hello"}}


async def _follow(client: httpx.AsyncClient, job_id: str, *, within: float = 30) -> list[dict[str, Any]]:
    """Every status event of the job's stream, until the server ends it."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(within), client.stream("GET", f"/jobs/{job_id}/events", timeout=STREAM_TIMEOUT) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        async for event in read_events(r):
            assert event.event == "status"
            seen.append(event.json())
    return seen


# GET /jobs/{id}?wait=N


async def test_wait_answers_once_a_deferred_job_has_succeeded(client: httpx.AsyncClient) -> None:
    body = _write_log(defer_by=1)
    accepted = await _post(client, body)
    assert accepted["status"] == "deferred"

    response = await client.get(f"/jobs/{accepted['id']}", params={"wait": 10})

    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded", "one call was enough"
    assert job["payload"] == body["payload"]
    assert [a["outcome"] for a in job["attempts"]] == ["succeeded"]


async def test_wait_gives_up_after_its_time_with_the_current_status(client: httpx.AsyncClient) -> None:
    accepted = await _post(client, _write_log(defer_by=30))

    response = await client.get(f"/jobs/{accepted['id']}", params={"wait": 1})

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "deferred"
    cancelled = await client.delete(f"/jobs/{accepted['id']}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"


async def test_wait_on_an_ended_job_answers_at_once(client: httpx.AsyncClient) -> None:
    accepted = await _post(client, _write_log())
    await wait_for_job(client, accepted["id"])
    began = time.monotonic()

    response = await client.get(f"/jobs/{accepted['id']}", params={"wait": 30})

    assert response.json()["status"] == "succeeded"
    assert time.monotonic() - began < 5


@pytest.mark.parametrize("wait", ["-1", "60.5", "61", "soon", "nan", "inf"])
async def test_an_invalid_wait_is_refused(client: httpx.AsyncClient, wait: str) -> None:
    response = await client.get(f"/jobs/{uuid.uuid4().hex}", params={"wait": wait})

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "wait"]


async def test_wait_on_an_unknown_job_is_404_at_once(client: httpx.AsyncClient) -> None:
    response = await client.get("/jobs/nope", params={"wait": 30})

    assert response.status_code == 404


# GET /jobs/{id}/events


async def test_the_stream_shows_each_status_of_a_deferred_job_then_ends(client: httpx.AsyncClient) -> None:
    """Deferred by 2 s, the job cannot have started when the stream opens: its first event is
    ``deferred``, then the worker's ``in_progress`` and ``succeeded`` follow, and the stream ends."""
    accepted = await _post(client, _write_log(defer_by=2))

    events = await _follow(client, accepted["id"])

    assert collapse([e["status"] for e in events]) == ["deferred", "in_progress", "succeeded"]
    assert {e["id"] for e in events} == {accepted["id"]}
    assert events[-1]["tries"] == 1
    assert events[-1]["error"] is None
    times = [datetime.fromisoformat(e["at"]) for e in events]
    assert times == sorted(times)


async def test_the_stream_shows_queued_in_progress_succeeded_while_every_worker_slot_is_busy(
    client: httpx.AsyncClient, observer: Observer, local_stack: LocalStack | None
) -> None:
    """``queued`` is observable only while no worker can take the job. So the SMTP sink is slowed
    down and the worker's every slot (WORKER_MAX_JOBS) is filled with emails stuck in DATA; a job
    posted then stays ``queued`` until the first of them is delivered, seconds later, which leaves
    ample time to open its stream. The sink is sped up again once the stream has said ``queued``."""
    sink = observer.require_sink()
    if local_stack is None:
        pytest.skip("needs the stack started by the tests")
    slots = int(local_stack.env.get("WORKER_MAX_JOBS", Settings.model_fields["worker_max_jobs"].default))
    tag = uuid.uuid4().hex[:8]
    sink.slow_down(4)
    try:
        waiting = sink.waiting
        fillers = [await _post(client, _email(f"filler-{i}-{tag}@example.com")) for i in range(slots)]
        deadline = time.monotonic() + 20
        while sink.waiting < waiting + slots:
            assert time.monotonic() < deadline, "the worker did not fill its slots"
            await asyncio.sleep(0.02)
        accepted = await _post(client, _email(f"target-{tag}@example.com"))
        statuses: list[str] = []
        async with (
            asyncio.timeout(30),
            client.stream("GET", f"/jobs/{accepted['id']}/events", timeout=STREAM_TIMEOUT) as response,
        ):
            assert response.status_code == 200
            async for event in read_events(response):
                statuses.append(event.json()["status"])
                sink.slow_down(0)
    finally:
        sink.slow_down(0)
    await wait_for_all(client, [job["id"] for job in fillers])

    assert collapse(statuses) == ["queued", "in_progress", "succeeded"]
    assert len(await observer.emails_to(f"target-{tag}@example.com")) == 1


async def test_the_stream_of_an_ended_job_is_its_final_status(client: httpx.AsyncClient) -> None:
    accepted = await _post(client, _write_log())
    job = await wait_for_job(client, accepted["id"])

    events = await _follow(client, accepted["id"], within=5)

    assert [e["status"] for e in events] == [job["status"]] == ["succeeded"]


async def test_the_stream_shows_a_failure_with_its_error(client: httpx.AsyncClient, observer: Observer) -> None:
    sink = observer.require_sink()
    address = f"refused-{uuid.uuid4().hex[:10]}@example.com"
    sink.refuse(address, 550)
    try:
        accepted = await _post(client, _email(address) | {"defer_by": 1})
        events = await _follow(client, accepted["id"])
    finally:
        sink.accept(address)

    assert collapse([e["status"] for e in events]) == ["deferred", "in_progress", "failed"]
    assert "550" in events[-1]["error"]


async def test_the_stream_of_an_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/jobs/nope/events")

    assert response.status_code == 404
    assert response.json() == {"detail": "no job with id 'nope'"}


# GET /stats


async def _stats(client: httpx.AsyncClient, minutes: int) -> dict[str, Any]:
    response = await client.get("/stats", params={"minutes": minutes})
    assert response.status_code == 200, response.text
    stats: dict[str, Any] = response.json()
    return stats


async def test_stats_has_its_shape_and_moves_when_jobs_run(client: httpx.AsyncClient) -> None:
    before = await _stats(client, 1440)
    accepted = [await _post(client, _write_log()) for _ in range(3)]
    await wait_for_all(client, [job["id"] for job in accepted])
    after = await _stats(client, 1440)

    assert set(after) >= {"queue_depth", "jobs_by_status", "throughput", "pickup_latency_ms", "workers"}
    assert isinstance(after["queue_depth"], int)
    assert set(after["jobs_by_status"]) == {status.value for status in JobStatus}
    assert after["jobs_by_status_estimated"] == []  # a test ledger is far below STATS_EXACT_COUNT_LIMIT
    assert after["jobs_by_status"]["succeeded"] >= before["jobs_by_status"]["succeeded"] + 3
    assert len(after["throughput"]) == 1440
    minutes = [datetime.fromisoformat(m["minute"]) for m in after["throughput"]]
    assert minutes == sorted(minutes)
    assert {(m["minute"][-6:], m["minute"][17:19]) for m in after["throughput"]} == {("+00:00", "00")}
    succeeded = sum(m["succeeded"] for m in after["throughput"])
    assert succeeded >= sum(m["succeeded"] for m in before["throughput"]) + 3
    latency = after["pickup_latency_ms"]
    assert set(latency) == {"p50", "p95", "p99"}
    assert latency["p50"] is not None
    assert 0 <= latency["p50"] <= latency["p95"] <= latency["p99"]
    assert after["pickup_latency_by_minute"], "the jobs just run started in the window"
    assert after["workers"], "the stack's worker is alive"
    for worker in after["workers"]:
        assert set(worker) == {"id", "host", "pid", "last_beat"}
        assert isinstance(worker["pid"], int)
        datetime.fromisoformat(worker["last_beat"])


async def test_stats_defaults_to_15_minutes(client: httpx.AsyncClient) -> None:
    response = await client.get("/stats")

    assert response.status_code == 200
    assert response.json()["minutes"] == 15
    assert len(response.json()["throughput"]) == 15


async def test_stats_counts_a_queued_job_in_the_queue_depth(client: httpx.AsyncClient) -> None:
    accepted = await _post(client, _write_log(defer_by=60))  # a deferred job waits on the queue
    try:
        stats = await _stats(client, 1)
        assert stats["queue_depth"] >= 1
        assert stats["jobs_by_status"]["deferred"] >= 1
    finally:
        await client.delete(f"/jobs/{accepted['id']}")


@pytest.mark.parametrize("minutes", ["0", "1441", "-5", "many"])
async def test_stats_refuses_a_window_out_of_range(client: httpx.AsyncClient, minutes: str) -> None:
    response = await client.get("/stats", params={"minutes": minutes})

    assert response.status_code == 422
