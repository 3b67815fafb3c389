"""Putting jobs on the ARQ queue in one round trip, and waking the workers when we do.

``ArqRedis.enqueue_job`` takes three round trips per job (WATCH and EXISTS, then MULTI, PSETEX,
ZADD, EXEC). :func:`enqueue` does the same for any number of jobs in one Lua script, which Redis
runs atomically, and keeps ARQ's data layout exactly: per job ``arq:job:<id>`` set with PSETEX to
the job serialized by ARQ's own ``serialize_job``, expiring ``expires_extra_ms`` (1 day) after
its score, and its id added to the queue's sorted set scored by its run-at time in ms. A job is
skipped, as ARQ skips it, when its job key or its result key (``arq:result:<id>``) exists.

The same script publishes on the queue's wake channel (:func:`wake_channel`) when it queued
anything, so a waiting worker (``services.jobs.wakeup``) starts at once instead of at its next
poll; the message costs no extra round trip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms, to_unix_ms
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

WAKE_SUFFIX = ":wake"

# KEYS: the queue, then per job its job key and its result key.
# ARGV: the wake channel ('' for none), then per job: id, score (ms), expiry (ms), serialized job.
_ENQUEUE_SOURCE = b"""
local queue = KEYS[1]
local queued = {}
local added = 0
for j = 0, (#KEYS - 1) / 2 - 1 do
  local a = 2 + 4 * j
  if redis.call('EXISTS', KEYS[2 + 2 * j], KEYS[3 + 2 * j]) == 0 then
    redis.call('PSETEX', KEYS[2 + 2 * j], ARGV[a + 2], ARGV[a + 3])
    redis.call('ZADD', queue, ARGV[a + 1], ARGV[a])
    added = added + 1
    queued[j + 1] = 1
  else
    queued[j + 1] = 0
  end
end
if added > 0 and ARGV[1] ~= '' then
  redis.call('PUBLISH', ARGV[1], added)
end
return queued
"""


class Script:
    """A Lua script run by its SHA-1 (EVALSHA), loaded into Redis the first time Redis does not know it."""

    def __init__(self, source: bytes) -> None:
        self.source = source
        self.sha = hashlib.sha1(source).hexdigest()  # noqa: S324 (Redis names scripts by SHA-1)

    async def __call__(self, redis: Redis, keys: Sequence[str], args: Sequence[str | bytes | int | float]) -> Any:
        """Run the script on ``keys`` with ``args``; one round trip (two after a Redis restart)."""
        try:
            return await self._run(redis, keys, args)
        except NoScriptError:  # a new or restarted Redis
            await redis.script_load(self.source)
            return await self._run(redis, keys, args)

    async def _run(self, redis: Redis, keys: Sequence[str], args: Sequence[str | bytes | int | float]) -> Any:
        # redis-py types evalsha's arguments as str only; bytes and numbers are fine too.
        return await redis.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[arg-type,misc]


_ENQUEUE = Script(_ENQUEUE_SOURCE)


def wake_channel(queue_name: str) -> str:
    """The Pub/Sub channel on which enqueuing announces new jobs of ``queue_name``."""
    return queue_name + WAKE_SUFFIX


@dataclass(frozen=True)
class Entry:
    """One job to queue: ARQ's function name, arguments, id, and when it may run (None: now)."""

    function: str
    job_id: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    defer_until: datetime | None = None


async def enqueue(
    redis: Redis,
    entries: Sequence[Entry],
    *,
    queue_name: str,
    serializer: Callable[[dict[str, Any]], bytes] | None,
    wake: bool = True,
) -> list[bool]:
    """Queue ``entries`` in one round trip; per entry, True if queued, False if ARQ knew its id already."""
    if not entries:
        return []
    enqueue_time_ms = timestamp_ms()
    keys: list[str] = [queue_name]
    argv: list[str | bytes | int] = [wake_channel(queue_name) if wake else ""]
    for entry in entries:
        score = enqueue_time_ms if entry.defer_until is None else to_unix_ms(entry.defer_until)
        expires_ms = max(1, score - enqueue_time_ms + expires_extra_ms)
        job = serialize_job(entry.function, entry.args, entry.kwargs, None, enqueue_time_ms, serializer=serializer)
        keys += [job_key_prefix + entry.job_id, result_key_prefix + entry.job_id]
        argv += [entry.job_id, score, expires_ms, job]
    queued = await _ENQUEUE(redis, keys, argv)
    return [bool(flag) for flag in queued]
