"""Changing a job's place in the queue from outside a worker: run it again, or withdraw it.

The ledger decides (``services.ledger``): a job is retried or cancelled there first, and what is
done here only makes Redis agree. ARQ keeps per job id a result key that makes it refuse the id
again, and a try counter; it aborts a running job when its id is in the abort set.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from redis.asyncio import Redis


async def forget_past_runs(redis: Redis, job_id: str) -> None:
    """Drop what ARQ kept of a job's earlier runs (its result and try count), so the id can run afresh."""
    await redis.delete(result_key_prefix + job_id, retry_key_prefix + job_id)


async def withdraw(redis: Redis, *, queue_name: str, job_id: str) -> bool:
    """Take a job off the queue, or abort it where it runs; True if it was running (aborted)."""
    if await redis.exists(in_progress_key_prefix + job_id):
        await redis.zadd(abort_jobs_ss, {job_id: int(time.time() * 1000)})
        return True
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zrem(queue_name, job_id)
        pipe.delete(job_key_prefix + job_id)
        await pipe.execute()
    return False


async def enqueue_again(
    redis: ArqRedis, *, name: str, payload: dict[str, Any], job_id: str, defer_until: datetime | None
) -> bool:
    """Queue a job the ledger holds and Redis forgot, under its own id; False if ARQ still knows the id."""
    return await redis.enqueue_job(name, payload, _job_id=job_id, _defer_until=defer_until) is not None
