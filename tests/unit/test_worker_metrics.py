"""The worker's metrics: outcomes of runs, the queue gauges from a real Redis, and the endpoint's life."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from arq import Retry
from arq.constants import in_progress_key_prefix
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from services.contract import JobName
from services.jobs.metrics import FAILED, INTERRUPTED, RETRYING, SKIPPED, SUCCEEDED, JobMetrics, MetricsServer, serve
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer

QUEUE = "metrics-test:queue"


def sample(metrics: JobMetrics, metric: str, /, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for found in family.samples:
            if found.name == metric and found.labels == labels:
                return float(found.value)
    raise AssertionError(f"no sample {metric}{labels}")


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


# runs


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, SUCCEEDED),
        (Retry(defer=1), RETRYING),
        (asyncio.CancelledError(), INTERRUPTED),
        (ValueError("bad"), FAILED),
    ],
)
def test_a_run_is_counted_by_how_it_ended(error: BaseException | None, outcome: str) -> None:
    metrics = JobMetrics()

    run = metrics.start(JobName.write_log, due_ms=time.time() * 1000 - 250)
    assert sample(metrics, "afterword_jobs_in_progress") == 1
    assert run.end(error) == outcome

    assert sample(metrics, "afterword_jobs_in_progress") == 0
    assert sample(metrics, "afterword_jobs_total", name="write_log", outcome=outcome) == 1
    assert sample(metrics, "afterword_job_duration_seconds_count", name="write_log") == 1
    assert sample(metrics, "afterword_job_retries_total", name="write_log") == (outcome == RETRYING)
    assert sample(metrics, "afterword_job_pickup_latency_seconds_count", name="write_log") == 1
    assert 0.25 <= sample(metrics, "afterword_job_pickup_latency_seconds_sum", name="write_log") < 5


def test_a_skipped_run_is_not_counted() -> None:
    metrics = JobMetrics()

    run = metrics.start(JobName.send_email, due_ms=None)
    run.skip()

    assert run.end(None) == SKIPPED
    assert sample(metrics, "afterword_jobs_in_progress") == 0
    for outcome in (SUCCEEDED, FAILED, RETRYING, INTERRUPTED):
        assert sample(metrics, "afterword_jobs_total", name="send_email", outcome=outcome) == 0
    assert sample(metrics, "afterword_job_pickup_latency_seconds_count", name="send_email") == 0


def test_crash_reruns_are_counted_per_job() -> None:
    metrics = JobMetrics()

    metrics.start(JobName.update_user, due_ms=None).crash_rerun()

    assert sample(metrics, "afterword_job_crash_reruns_total", name="update_user") == 1
    assert sample(metrics, "afterword_job_crash_reruns_total", name="write_log") == 0


def test_a_run_due_in_the_future_has_no_negative_pickup() -> None:
    metrics = JobMetrics()

    run = metrics.start(JobName.write_log, due_ms=time.time() * 1000 + 60_000)

    assert run.pickup_seconds == 0


# queue gauges


async def test_queue_gauges_read_the_arq_queue(redis: Redis) -> None:
    metrics = JobMetrics()
    now_ms = time.time() * 1000
    await redis.zadd(
        QUEUE,
        {"running": now_ms - 60_000, "waiting": now_ms - 30_000, "recent": now_ms - 1_000, "deferred": now_ms + 60_000},
    )
    await redis.set(in_progress_key_prefix + "running", b"1")

    await metrics.refresh_queue(redis, QUEUE)

    assert sample(metrics, "afterword_queue_depth") == 4
    assert 30 <= sample(metrics, "afterword_oldest_queued_job_age_seconds") < 35


async def test_an_empty_queue_has_no_age(redis: Redis) -> None:
    metrics = JobMetrics()
    await redis.zadd(QUEUE, {"deferred": time.time() * 1000 + 60_000})

    await metrics.refresh_queue(redis, QUEUE)

    assert sample(metrics, "afterword_queue_depth") == 1
    assert sample(metrics, "afterword_oldest_queued_job_age_seconds") == 0


# the endpoint


async def test_the_endpoint_serves_until_stopped() -> None:
    async def render() -> bytes:
        return b"# metrics\n"

    server = MetricsServer(render, host="127.0.0.1", port=0)
    await server.start()
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            got = await client.get(url)
            anywhere = await client.get(url.replace("/metrics", "/anything"))
            head = await client.head(url)
            posted = await client.post(url, content=b"x")
    finally:
        await server.stop()

    assert (got.status_code, got.text) == (200, "# metrics\n")
    assert got.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert (anywhere.status_code, anywhere.text) == (200, "# metrics\n")
    assert (head.status_code, head.headers["content-length"]) == (200, str(len(b"# metrics\n")))
    assert posted.status_code == 405
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(timeout=2) as client:
            await client.get(url)
    await server.stop()  # stopping twice is harmless


async def test_a_silent_client_does_not_keep_the_endpoint_open() -> None:
    async def render() -> bytes:
        return b""

    server = MetricsServer(render, host="127.0.0.1", port=0)
    await server.start()
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        async with asyncio.timeout(5):
            await server.stop()
    finally:
        writer.close()


async def test_serve_renders_the_metrics_and_the_queue(redis: Redis) -> None:
    metrics = JobMetrics()
    await redis.zadd(QUEUE, {"a": time.time() * 1000})
    server = await serve(metrics, redis, queue_name=QUEUE, host="127.0.0.1", port=free_port())
    assert server is not None
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"http://127.0.0.1:{server.port}/metrics")).text
    finally:
        await server.stop()

    families = {family.name for family in text_string_to_metric_families(text)}
    assert {"afterword_jobs", "afterword_queue_depth", "afterword_oldest_queued_job_age_seconds"} <= families
    assert "afterword_queue_depth 1.0" in text


async def test_serve_is_off_on_port_0(redis: Redis) -> None:
    assert await serve(JobMetrics(), redis, queue_name=QUEUE, host="127.0.0.1", port=0) is None


async def test_a_taken_port_leaves_the_worker_without_metrics(redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        server = await serve(JobMetrics(), redis, queue_name=QUEUE, host="127.0.0.1", port=port)

    assert server is None
    assert "WORKER_METRICS_PORT" in caplog.text
