"""A job written straight into Redis, with no ledger row behind it, is refused: never run, counted, logged.

The attacker here can write to Redis and nothing else. The jobs are planted as the gateway queues
them (``services.queue.enqueue.enqueue``, ARQ's layout, the services' JSON serializer), with ids the
ledger has never seen, a cron-looking id among them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix

from services.core.serialization import serialize
from services.queue import enqueue as queue
from tests.integration.conftest import LocalStack
from tests.integration.test_metrics import scrape, value
from tests.support.observers import Observer

REFUSED = "afterword_jobs_refused_total"


def planted(name: str) -> tuple[str, dict[str, Any], str]:
    """A job of ``name`` an attacker would plant: its payload, and the address or email it aims at."""
    target = f"planted-{uuid.uuid4().hex[:10]}@example.com"
    if name == "send_email":
        return name, {"to": target, "subject": "Reset your password", "body": "https://evil.example"}, target
    return name, {"email": target, "name": "Mallory"}, target


async def handled(observer: Observer, job_id: str, *, within: float = 20) -> None:
    """Wait until the worker dealt with the job: its keys and its queue entry are gone."""
    deadline = time.monotonic() + within
    keys = (job_key_prefix + job_id, in_progress_key_prefix + job_id, retry_key_prefix + job_id)
    while await observer.redis.exists(*keys) or await observer.redis.zscore(observer.queue_name or "", job_id):
        assert time.monotonic() < deadline, f"the planted job {job_id} is still in Redis after {within}s"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("name", "job_id"),
    [
        ("send_email", uuid.uuid4().hex),
        ("update_user", uuid.uuid4().hex),
        ("send_email", f"cron:recovery_sweep:{int(time.time() * 1000)}"),  # looks like a cron run
    ],
)
async def test_a_job_planted_in_redis_without_a_ledger_row_never_runs(
    local_stack: LocalStack | None, observer: Observer, client: httpx.AsyncClient, name: str, job_id: str
) -> None:
    if local_stack is None:
        pytest.skip("reads the worker's own output and metrics")
    sink = observer.require_sink()
    name, payload, target = planted(name)
    before = await scrape(client, local_stack.worker_metrics_url)

    entry = queue.Entry(name, job_id, args=(payload,))
    assert await queue.enqueue(observer.redis, [entry], queue_name=observer.queue_name or "", serializer=serialize)
    await handled(observer, job_id)

    assert sink.messages_to(target) == []
    assert await observer.db.fetchval("SELECT count(*) FROM users WHERE email = $1", target) == 0
    assert await observer.db.fetchval("SELECT count(*) FROM jobs WHERE id = $1", job_id) == 0
    after = await scrape(client, local_stack.worker_metrics_url)
    assert value(after, REFUSED, name=name) == value(before, REFUSED, name=name) + 1
    refusals = [line for line in local_stack.worker.output().splitlines() if job_id in line and "no ledger row" in line]
    assert refusals, "no log line says the planted job was refused"
