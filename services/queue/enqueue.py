"""Putting jobs on the ARQ queue in one round trip, and waking the workers when we do.

``ArqRedis.enqueue_job`` takes three round trips per job (WATCH and EXISTS, then MULTI, PSETEX,
ZADD, EXEC). :func:`enqueue` does the same for any number of jobs in one Lua script, which Redis
runs atomically, and keeps ARQ's data layout exactly: per job ``arq:job:<id>`` set with PSETEX to
the job serialized by ARQ's own ``serialize_job``, expiring ``expires_extra_ms`` (1 day) after
its score, and its id added to the queue's sorted set scored by its run-at time in ms. A job is
skipped, as ARQ skips it, when its job key or its result key (``arq:result:<id>``) exists.

The same script hands a job due now to a waiting worker registered in the queue's idle set
(:func:`idle_workers_key`, ``services.queue.handoff``): it claims the job for that worker as the
worker's own claim would (the in-progress key set to the worker's token, for the registration's
short hold), and publishes it on the worker's channel. A registration older than the age it
states is never chosen: it is dropped, and its channel told. Values it cannot use there (an idle
set, abort set or try counter of the wrong type, a registration that is not one) make it skip the
hand-over or that value, never fail the enqueue. Jobs not handed over are
announced on the queue's wake channel (:func:`wake_channel`), so a waiting worker
(``services.queue.worker``) starts at once instead of at its next poll; neither message costs an
extra round trip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from arq.constants import (
    abort_jobs_ss,
    expires_extra_ms,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import serialize_job
from arq.utils import timestamp_ms, to_unix_ms
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from services.contract import JobStatus

WAKE_SUFFIX = ":wake"
IDLE_SUFFIX = ":idle"
RETRY_KEY_TTL_SECONDS = 88400
"""How long ARQ keeps a job's try counter (``arq:retry:<id>``), as its ``run_job`` sets it."""

# KEYS: the queue, then per job its job key and its result key.
# ARGV: the wake channel ('' for none), the idle workers' set ('' for no hand-off), now (ms), the
# in-progress key prefix, the retry key prefix, the abort set, then per job: id, score (ms),
# expiry (ms), serialized job. Returns per job 1 if queued (2 if also handed to a worker), 0 if not.
_ENQUEUE_SOURCE = b"""
local queue = KEYS[1]
local idle = ARGV[2]
local function failed(reply)
  return type(reply) == 'table' and reply.err ~= nil
end
local function hand_off(id, score, data)
  while true do
    local first = redis.pcall('ZRANGE', idle, 0, 0, 'WITHSCORES')
    if failed(first) or #first == 0 then
      idle = ''  -- nobody waits (or the set is not one): the other jobs of this call are not offered either
      return false
    end
    local member, since = first[1], first[2]
    redis.call('ZREM', idle, member)
    local ttl, aborts, max_age, worker, channel =
      string.match(member, '^([1-9]%d?%d?%d?%d?%d?%d?%d?%d?)|([01])|%d+|(%d+)|([^|]*)|(.+)$')
    if not channel then return false end
    local born = tonumber(since)
    if not born or born + tonumber(max_age) < tonumber(ARGV[3]) then
      redis.call('PUBLISH', channel, member)  -- not made anew in time: dropped, and its worker told
    else
      if redis.call('EXISTS', ARGV[4] .. id) == 1 then
        redis.call('ZADD', idle, since, member)
        return false
      end
      local counted = redis.pcall('GET', ARGV[5] .. id)
      if failed(counted) then counted = false end
      local try = (tonumber(counted or '0') or 0) + 1
      local abort = 0
      if aborts == '1' then
        local aborting = redis.pcall('ZSCORE', ARGV[6], id)
        if aborting and not failed(aborting) then abort = 1 end
      end
      local message = member .. '\\n' .. id .. '\\n' .. score .. '\\n' .. try .. '\\n' .. abort .. '\\n' .. data
      if redis.call('PUBLISH', channel, message) > 0 then
        redis.call('PSETEX', ARGV[4] .. id, ttl, worker .. ':' .. try)
        redis.call('SET', ARGV[5] .. id, try, 'EX', RETRY_TTL)
        if abort == 1 then redis.pcall('ZREM', ARGV[6], id) end
        return true
      end
    end
  end
end
local queued = {}
local woken = 0
for j = 0, (#KEYS - 1) / 2 - 1 do
  local a = 7 + 4 * j
  if redis.call('EXISTS', KEYS[2 + 2 * j], KEYS[3 + 2 * j]) == 0 then
    redis.call('PSETEX', KEYS[2 + 2 * j], ARGV[a + 2], ARGV[a + 3])
    redis.call('ZADD', queue, ARGV[a + 1], ARGV[a])
    queued[j + 1] = 1
    if idle ~= '' and tonumber(ARGV[a + 1]) <= tonumber(ARGV[3]) and hand_off(ARGV[a], ARGV[a + 1], ARGV[a + 3]) then
      queued[j + 1] = 2
    else
      woken = woken + 1
    end
  else
    queued[j + 1] = 0
  end
end
if woken > 0 and ARGV[1] ~= '' then
  redis.call('PUBLISH', ARGV[1], woken)
end
return queued
""".replace(b"RETRY_TTL", str(RETRY_KEY_TTL_SECONDS).encode())


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


def idle_workers_key(queue_name: str) -> str:
    """The sorted set of the waiting workers of ``queue_name`` that take jobs handed to them."""
    return queue_name + IDLE_SUFFIX


@dataclass(frozen=True)
class Entry:
    """One job to queue: ARQ's function name, arguments, id, and when it may run (None: now)."""

    function: str
    job_id: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    defer_until: datetime | None = None


class Recorded(Protocol):
    """A job as its ledger row holds it: all :func:`entries_of` needs to queue it."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def payload(self) -> dict[str, Any]: ...
    @property
    def status(self) -> JobStatus: ...
    @property
    def run_at(self) -> datetime: ...


def entries_of(jobs: Sequence[Recorded]) -> list[Entry]:
    """One entry per recorded job: its name is ARQ's function, its payload the one argument, its
    ledger id ARQ's job id; a deferred job waits until its ``run_at``."""
    return [
        Entry(
            function=str(job.name),
            job_id=job.id,
            args=(job.payload,),
            defer_until=job.run_at if job.status is JobStatus.deferred else None,
        )
        for job in jobs
    ]


async def enqueue(
    redis: Redis,
    entries: Sequence[Entry],
    *,
    queue_name: str,
    serializer: Callable[[dict[str, Any]], bytes] | None,
    wake: bool = True,
) -> list[bool]:
    """Queue ``entries`` in one round trip; per entry, True if queued, False if ARQ knew its id already.

    With ``wake``, a job due now is handed to a waiting worker when one is registered (see the
    module docstring), and the others wake the workers.
    """
    if not entries:
        return []
    enqueue_time_ms = timestamp_ms()
    keys: list[str] = [queue_name]
    argv: list[str | bytes | int] = [
        wake_channel(queue_name) if wake else "",
        idle_workers_key(queue_name) if wake else "",
        enqueue_time_ms,
        in_progress_key_prefix,
        retry_key_prefix,
        abort_jobs_ss,
    ]
    for entry in entries:
        score = enqueue_time_ms if entry.defer_until is None else to_unix_ms(entry.defer_until)
        expires_ms = max(1, score - enqueue_time_ms + expires_extra_ms)
        job = serialize_job(entry.function, entry.args, entry.kwargs, None, enqueue_time_ms, serializer=serializer)
        keys += [job_key_prefix + entry.job_id, result_key_prefix + entry.job_id]
        argv += [entry.job_id, score, expires_ms, job]
    queued = await _ENQUEUE(redis, keys, argv)
    return [bool(flag) for flag in queued]
