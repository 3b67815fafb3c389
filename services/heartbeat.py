"""Worker heartbeats in Redis: each worker says every few seconds that it is alive.

ARQ's own health check is written once an hour by default and holds one key per queue; this keeps
one entry per worker in a sorted set scored by the time of its last beat, which the gateway's
``/readyz`` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from redis.asyncio import Redis

WORKERS_KEY = "afterword:workers"
_INFO_PREFIX = "afterword:worker:"


async def beat(redis: Redis, *, worker_id: str, info: dict[str, Any], ttl_seconds: float) -> None:
    """Record that ``worker_id`` is alive now, with a little about it."""
    now = time.time()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(WORKERS_KEY, {worker_id: now})
        pipe.set(_INFO_PREFIX + worker_id, json.dumps({**info, "last_beat": now}), px=int(ttl_seconds * 1000))
        await pipe.execute()


async def forget(redis: Redis, *, worker_id: str) -> None:
    """Remove a worker that stops cleanly."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zrem(WORKERS_KEY, worker_id)
        pipe.delete(_INFO_PREFIX + worker_id)
        await pipe.execute()


async def live_workers(redis: Redis, *, stale_after_seconds: float) -> list[dict[str, Any]]:
    """Workers whose last beat is recent, with their info; stale entries are pruned."""
    now = time.time()
    await redis.zremrangebyscore(WORKERS_KEY, "-inf", now - stale_after_seconds * 20)
    ids = await redis.zrangebyscore(WORKERS_KEY, now - stale_after_seconds, "+inf")
    if not ids:
        return []
    infos = await redis.mget([_INFO_PREFIX + (i.decode() if isinstance(i, bytes) else i) for i in ids])
    return [json.loads(info) for info in infos if info is not None]


class Heartbeat:
    """A background task that beats every ``interval`` seconds until stopped."""

    def __init__(self, redis: Redis, *, worker_id: str, info: dict[str, Any], interval: float) -> None:
        self._redis = redis
        self._worker_id = worker_id
        self._info = info
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Beat once now (so readiness is immediate), then keep beating in the background."""
        await self._beat()
        self._task = asyncio.create_task(self._run(), name=f"heartbeat:{self._worker_id}")

    async def stop(self) -> None:
        """Stop beating and remove this worker from the live set."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await forget(self._redis, worker_id=self._worker_id)

    async def _beat(self) -> None:
        await beat(self._redis, worker_id=self._worker_id, info=self._info, ttl_seconds=self._interval * 3)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            with contextlib.suppress(Exception):  # Redis away: the next beat tries again
                await self._beat()
