"""Worker heartbeats in Redis: each worker says every few seconds that it is alive.

ARQ's own health check is written once an hour by default and holds one key per queue; this keeps
one entry per worker in a sorted set scored by the time of its last beat, which the gateway's
``/readyz`` and ``/stats`` read.

Anyone who can write to Redis can put anything there. An entry that cannot be read (not JSON, not
an object, a field of the wrong type, an id that is not UTF-8) is skipped, logged, and named in
:attr:`Beats.unreadable`, so that readiness and stats report it instead of failing on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.core.throttled_log import ThrottledLog

WORKERS_KEY = "afterword:workers"
_INFO_PREFIX = "afterword:worker:"

log = logging.getLogger("afterword.heartbeat")
_unreadable = ThrottledLog(log)


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


@dataclass(frozen=True)
class Beats:
    """The workers whose last beat is recent, and the entries of the live set that could not be read."""

    workers: list[dict[str, Any]]
    """Each live worker's info: ``id``, ``host``, ``pid``, ``last_beat`` and what else it said."""
    unreadable: list[str]
    """The ids (non-UTF-8 bytes escaped) whose entry was skipped; the set's key if it is not a sorted set."""


async def read_beats(redis: Redis, *, stale_after_seconds: float) -> Beats:
    """The live workers and the unreadable entries; stale entries are pruned."""
    now = time.time()
    try:
        await redis.zremrangebyscore(WORKERS_KEY, "-inf", now - stale_after_seconds * 20)
        ids: list[bytes] = await redis.zrangebyscore(WORKERS_KEY, now - stale_after_seconds, "+inf")
    except ResponseError as exc:  # not a sorted set: no worker can be known until it is fixed
        _unreadable.warning(WORKERS_KEY, "the heartbeat set %s cannot be read: %s", WORKERS_KEY, exc)
        return Beats(workers=[], unreadable=[WORKERS_KEY])
    if not ids:
        return Beats(workers=[], unreadable=[])
    raw_ids = [i if isinstance(i, bytes) else str(i).encode() for i in ids]
    infos = await redis.mget([_INFO_PREFIX.encode() + i for i in raw_ids])
    workers, unreadable = [], []
    for raw_id, raw in zip(raw_ids, infos, strict=True):
        if raw is None:
            continue  # stopped or expired between the two reads
        info = _readable(raw)
        if info is None:
            worker_id = raw_id.decode(errors="backslashreplace")
            unreadable.append(worker_id)
            _unreadable.warning(worker_id, "skipped the unreadable heartbeat of worker %r", worker_id)
        else:
            workers.append(info)
    return Beats(workers=workers, unreadable=unreadable)


async def live_workers(redis: Redis, *, stale_after_seconds: float) -> list[dict[str, Any]]:
    """The info of the workers whose last beat is recent (:func:`read_beats` without the unreadable)."""
    return (await read_beats(redis, stale_after_seconds=stale_after_seconds)).workers


def _readable(raw: bytes) -> dict[str, Any] | None:
    """A heartbeat's info if it has the shape :func:`beat` writes, else None."""
    try:
        info = json.loads(raw)
    except ValueError:  # not JSON, or not UTF-8
        return None
    if not isinstance(info, dict):
        return None
    last_beat = info.get("last_beat")
    if not isinstance(last_beat, int | float) or isinstance(last_beat, bool) or not math.isfinite(last_beat):
        return None
    if not all(isinstance(info.get(field, ""), str) for field in ("id", "host")):
        return None
    if type(info.get("pid", 0)) is not int:
        return None
    return info


class Heartbeat:
    """A background task that beats every ``interval`` seconds until stopped."""

    def __init__(self, redis: Redis, *, worker_id: str, info: dict[str, Any], interval: float) -> None:
        self._redis = redis
        self._worker_id = worker_id
        self._info = info
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Beat once now (so readiness is immediate), then keep beating in the background.

        Redis away raises (the worker cannot start); a heartbeat set of the wrong type is logged,
        and the beats in the background try again.
        """
        try:
            await self._beat()
        except ResponseError as exc:
            _unreadable.warning(WORKERS_KEY, "could not beat: %s", exc)
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
            try:
                await self._beat()
            except ResponseError as exc:  # a key of the wrong type: said, and tried again
                _unreadable.warning(WORKERS_KEY, "could not beat: %s", exc)
            except Exception:  # noqa: S110 (Redis away: the next beat tries again)
                pass
