"""Heartbeats in Redis that cannot be read: /readyz and /stats skip them and name them, never fail.

Whoever can write to Redis can put anything in a worker's heartbeat: not JSON, not an object, a
field of the wrong type, an id that is not UTF-8.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from services.queue.heartbeat import WORKERS_KEY
from tests.integration.conftest import LocalStack
from tests.support.planting import PlantingRedis, plant

INFO_PREFIX = "afterword:worker:"


HEARTBEATS: dict[str, bytes] = {
    "not JSON": b"{not json",
    "a JSON list": b"[1]",
    "last beat a string": b'{"id":"x","host":"h","pid":1,"last_beat":"soon"}',
    "pid a string": b'{"id":"x","host":"h","pid":"one","last_beat":1}',
    "not UTF-8": b'{"id":"\xff","last_beat":1}',
}


@pytest.mark.parametrize("shape", list(HEARTBEATS))
async def test_an_unreadable_heartbeat_is_skipped_and_reported(
    client: httpx.AsyncClient, local_only_stack: LocalStack, planting_redis: PlantingRedis, shape: str
) -> None:
    worker_id = f"hostile-{uuid.uuid4().hex[:8]}"
    plant(planting_redis, INFO_PREFIX + worker_id)
    await planting_redis.set(INFO_PREFIX + worker_id, HEARTBEATS[shape])
    await planting_redis.zadd(WORKERS_KEY, {worker_id: time.time() + 3600})  # stays "fresh" during the test
    try:
        ready = await client.get("/readyz")
        stats = await client.get("/stats")
    finally:
        await planting_redis.zrem(WORKERS_KEY, worker_id)

    assert ready.status_code == 200, ready.text
    assert ready.json()["unreadable_heartbeats"] == [worker_id]
    assert stats.status_code == 200, stats.text
    body: dict[str, Any] = stats.json()
    assert body["unreadable_heartbeats"] == [worker_id]
    assert worker_id not in [w["id"] for w in body["workers"]]
    assert body["workers"], "the real worker is still listed"


async def test_a_heartbeat_id_that_is_not_utf8_is_skipped(
    client: httpx.AsyncClient, local_only_stack: LocalStack, planting_redis: PlantingRedis
) -> None:
    worker_id = b"\xff\xfe"
    plant(planting_redis, INFO_PREFIX.encode() + worker_id)
    await planting_redis.set(INFO_PREFIX.encode() + worker_id, b"{not json")
    await planting_redis.zadd(WORKERS_KEY, {worker_id: time.time() + 3600})
    try:
        ready = await client.get("/readyz")
        stats = await client.get("/stats")
    finally:
        await planting_redis.zrem(WORKERS_KEY, worker_id)

    assert ready.status_code == 200, ready.text
    assert ready.json()["unreadable_heartbeats"] == ["\\xff\\xfe"]
    assert stats.status_code == 200, stats.text
    assert stats.json()["unreadable_heartbeats"] == ["\\xff\\xfe"]
