"""Reading what ARQ's keys say about jobs, for the recovery sweep and the queue gauges.

ARQ keeps per job id: the job (``arq:job:<id>``), its entry in the queue's sorted set scored by
when it is due, an in-progress key while a worker runs it, and its result once it ended
(``arq:result:<id>``, a serialized ``{"s": succeeded, "r": result or error, ...}``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.utils import to_unix_ms
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.core.serialization import deserialize


@dataclass(frozen=True)
class InRedis:
    """What Redis holds of one job; ``unreadable`` names a key of the wrong type, and then nothing else is known."""

    result: bytes | None = None
    running: bool = False
    stored: bool = False
    queued: bool = False
    unreadable: str | None = None


async def look_up(redis: Redis, *, queue_name: str, job_ids: Sequence[str]) -> list[InRedis]:
    """What Redis holds of each job, in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.get(result_key_prefix + job_id)
            pipe.exists(in_progress_key_prefix + job_id)
            pipe.exists(job_key_prefix + job_id)
            pipe.zscore(queue_name, job_id)
        answers = await pipe.execute(raise_on_error=False)  # a key of the wrong type fails its own answer
    found = []
    for index in range(len(job_ids)):
        result, running, stored, score = answers[index * 4 : index * 4 + 4]
        errors = [answer for answer in (result, running, stored, score) if isinstance(answer, ResponseError)]
        if errors:
            found.append(InRedis(unreadable=str(errors[0])))
        else:
            found.append(InRedis(result=result, running=bool(running), stored=bool(stored), queued=score is not None))
    return found


@dataclass(frozen=True)
class Outcome:
    """A job's end as ARQ recorded it in its result key."""

    succeeded: bool
    value: Any


def read_result(raw: bytes) -> Outcome:
    """The outcome in a result key; ValueError if it cannot be read."""
    result = deserialize(raw)
    if not isinstance(result, dict):
        raise ValueError("a result that is not an object")
    return Outcome(succeeded=bool(result.get("s")), value=result.get("r"))


async def put_back(redis: Redis, *, queue_name: str, job_id: str, due: datetime) -> None:
    """Put a stored job's id back on the queue, scored by when it is due."""
    await redis.zadd(queue_name, {job_id: to_unix_ms(due)})


@dataclass(frozen=True)
class Depth:
    """The queue's entries (waiting, deferred and running) and the oldest due job no worker runs."""

    entries: int
    oldest_waiting_seconds: float


async def depth(redis: Redis, *, queue_name: str, scan: int) -> Depth:
    """Count the queue, and look among its ``scan`` oldest due entries for one that no worker runs."""
    now_ms = time.time() * 1000
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(queue_name)
        pipe.zrangebyscore(queue_name, "-inf", now_ms, start=0, num=scan, withscores=True)
        entries, due = await pipe.execute()
    oldest = 0.0
    if due:
        # ARQ keeps a running job in the set: the oldest waiting one is the first not in progress.
        async with redis.pipeline(transaction=False) as pipe:
            for job_id, _ in due:
                pipe.exists(in_progress_key_prefix + (job_id.decode() if isinstance(job_id, bytes) else job_id))
            running = await pipe.execute()
        waiting = next((score for (_, score), busy in zip(due, running, strict=True) if not busy), None)
        if waiting is not None:
            oldest = max(0.0, now_ms - waiting) / 1000
    return Depth(entries=int(entries), oldest_waiting_seconds=oldest)
