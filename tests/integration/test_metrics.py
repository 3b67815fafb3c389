"""Prometheus metrics: the gateway's ``/metrics`` and the worker's endpoint count what the tests do.

Against a running stack (GATEWAY_URL) the worker's endpoint is read from WORKER_METRICS_URL, and
its tests are skipped without it.
"""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.queue.heartbeat import live_workers
from tests.integration.conftest import LocalStack
from tests.support.jobs_client import wait_for_all
from tests.support.observers import Observer

REQUESTS = 4


def sample(text: str, metric: str, /, **labels: str) -> float | None:
    """The value of the sample ``metric`` with exactly ``labels``, or None when the exposition has none."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == metric and found.labels == labels:
                return float(found.value)
    return None


def value(text: str, metric: str, /, **labels: str) -> float:
    """Like :func:`sample`, with a series not exposed yet counting as 0."""
    return sample(text, metric, **labels) or 0.0


@pytest.fixture(scope="session")
def worker_metrics_url(local_stack: LocalStack | None) -> str:
    """The worker's metrics endpoint; skips against a running stack without WORKER_METRICS_URL."""
    if local_stack is not None:
        return local_stack.worker_metrics_url
    url = os.environ.get("WORKER_METRICS_URL")
    if not url:
        pytest.skip("the worker's metrics endpoint is not observable (set WORKER_METRICS_URL)")
    return url


async def scrape(client: httpx.AsyncClient, url: str) -> str:
    response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_gateway_counts_requests_by_route_template_and_accepted_jobs(client: httpx.AsyncClient) -> None:
    before = await scrape(client, "/metrics")

    answers = [await client.post("/process") for _ in range(REQUESTS)]
    missing = await client.get("/jobs/no-such-job")

    after = await scrape(client, "/metrics")
    assert [a.status_code for a in answers] == [202] * REQUESTS
    assert missing.status_code == 404

    def increase(metric: str, /, **labels: str) -> float:
        return value(after, metric, **labels) - value(before, metric, **labels)

    assert increase("afterword_http_requests_total", method="POST", route="/process", status="202") == REQUESTS
    assert increase("afterword_jobs_accepted_total", name="write_log") == REQUESTS
    assert increase("afterword_http_request_duration_seconds_count", method="POST", route="/process") == REQUESTS
    # The template, never the raw path: one series for every job id.
    assert increase("afterword_http_requests_total", method="GET", route="/jobs/{job_id}", status="404") == 1
    assert "no-such-job" not in after


async def test_unknown_paths_share_one_label(client: httpx.AsyncClient) -> None:
    before = await scrape(client, "/metrics")

    for path in ("/nope", "/nope/again", "/jobs/a/b/c"):
        assert (await client.get(path)).status_code == 404

    after = await scrape(client, "/metrics")
    labels = {"method": "GET", "route": "other", "status": "404"}
    assert (
        value(after, "afterword_http_requests_total", **labels)
        - value(before, "afterword_http_requests_total", **labels)
        == 3
    )
    assert "/nope" not in after


async def test_worker_counts_jobs_their_duration_and_pickup(client: httpx.AsyncClient, worker_metrics_url: str) -> None:
    async with httpx.AsyncClient(timeout=10) as worker:
        before = await scrape(worker, worker_metrics_url)
        accepted = [(await client.post("/process")).json() for _ in range(REQUESTS)]
        await wait_for_all(client, [a["jobs"][0]["id"] for a in accepted])

        # The wrapper counts a run just after the ledger records it: wait for the counters to catch up.
        # Jobs left over from other tests may end meanwhile too, hence "at least".
        def increase(text: str, metric: str, /, **labels: str) -> float:
            return value(text, metric, **labels) - value(before, metric, **labels)

        deadline = time.monotonic() + 10
        while True:
            after = await scrape(worker, worker_metrics_url)
            if increase(after, "afterword_jobs_total", name="write_log", outcome="succeeded") >= REQUESTS:
                break
            assert time.monotonic() < deadline, after
            await asyncio.sleep(0.05)

    assert increase(after, "afterword_job_duration_seconds_count", name="write_log") >= REQUESTS
    assert increase(after, "afterword_job_pickup_latency_seconds_count", name="write_log") >= REQUESTS
    # Read from the queue at scrape time; every series exists from the start.
    assert sample(after, "afterword_queue_depth") is not None
    assert sample(after, "afterword_oldest_queued_job_age_seconds") is not None
    assert sample(after, "afterword_jobs_in_progress") is not None
    for name in ("afterword_job_retries_total", "afterword_job_crash_reruns_total"):
        assert sample(after, name, name="send_email") is not None


async def test_worker_metrics_endpoint_refuses_other_methods(worker_metrics_url: str) -> None:
    async with httpx.AsyncClient(timeout=10) as worker:
        response = await worker.post(worker_metrics_url)

    assert response.status_code == 405


async def test_the_heartbeat_names_the_workers_metrics_port(local_stack: LocalStack | None, observer: Observer) -> None:
    if local_stack is None:
        pytest.skip("needs the stack the tests started")

    workers = await live_workers(observer.redis, stale_after_seconds=3)

    assert local_stack.worker_metrics_port in [w["metrics_port"] for w in workers]


async def test_a_job_posted_to_a_waiting_worker_is_counted_as_handed_over(
    client: httpx.AsyncClient, worker_metrics_url: str
) -> None:
    async with httpx.AsyncClient(timeout=10) as worker:
        before = value(await scrape(worker, worker_metrics_url), "afterword_jobs_handed_over_total")
        # One job at a time, each once the last has ended: the worker waits, registered, for the
        # next (a registration is renewed just after a job starts, so allow a few tries).
        for _ in range(5):
            answer = (await client.post("/process")).json()
            await wait_for_all(client, [job["id"] for job in answer["jobs"]])
            await asyncio.sleep(0.2)
            after = value(await scrape(worker, worker_metrics_url), "afterword_jobs_handed_over_total")
            if after > before:
                break

    assert after > before
