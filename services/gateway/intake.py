"""The gateway's intake: the jobs of concurrent requests are recorded and queued together.

Every request hands its jobs to :meth:`Intake.submit` and waits. While one batch is being written,
the jobs of the requests that arrive meanwhile gather (``services.batching``); the next batch
takes all of them, up to ``max_batch`` jobs: one INSERT statement for their ledger rows, committed
before anything else, then one Redis round trip that queues them all on the ARQ pool's default
queue and wakes the workers (:func:`services.queue.enqueue`). Only then does each request go on
to answer 202. A request alone waits for exactly one insert and one enqueue; under load, many
requests share them.

If Postgres cannot be reached, every request of the batch gets :class:`ServiceUnavailable` and
nothing is queued. If a batch fails for another reason, its requests are written one by one, so
that only the request at fault fails. If Redis cannot be reached after the commit, the jobs are
still acknowledged: their rows stay ``queued`` and the recovery sweep pushes them later.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg
from arq.connections import ArqRedis
from redis.exceptions import RedisError

from services import ledger, queue
from services.batching import Batcher
from services.contract import JobStatus
from services.gateway.errors import DATABASE_ERRORS, ServiceUnavailable, ledger_unavailable

log = logging.getLogger("afterword.gateway")

MAX_BATCH = 512
"""At most this many jobs go into one INSERT and one enqueue."""


class Intake:
    """Writes accepted jobs to the ledger, then queues them, in batches shared by concurrent requests."""

    def __init__(self, *, db: asyncpg.Pool, redis: ArqRedis, max_batch: int = MAX_BATCH) -> None:
        self._db = db
        self._redis = redis
        self._batcher: Batcher[Sequence[ledger.NewJob], None] = Batcher(
            self._write, max_batch=max_batch, weight=len, fail_together=(ServiceUnavailable,), name="intake"
        )

    async def submit(self, jobs: Sequence[ledger.NewJob]) -> None:
        """Return once ``jobs`` are committed to the ledger and (Redis permitting) queued.

        Raises :class:`ServiceUnavailable` when Postgres cannot be reached: nothing was recorded.
        If the request is cancelled meanwhile (its client left), the jobs are still accepted.
        """
        await self._batcher.submit(jobs)

    async def _write(self, requests: list[Sequence[ledger.NewJob]]) -> list[None]:
        jobs = [job for request_jobs in requests for job in request_jobs]
        committed = False
        try:
            async with self._db.acquire() as conn:
                await ledger.insert_jobs(conn, jobs)
                committed = True
                # Queued before the connection goes back to the pool: the release stays off the
                # path from acceptance to the job's start.
                await push(self._redis, jobs)
        except DATABASE_ERRORS as exc:
            if not committed:
                log.warning("ledger unavailable, refusing %d job(s): %s", len(jobs), type(exc).__name__)
                raise ServiceUnavailable(f"{ledger_unavailable(exc)}; nothing was queued") from exc
            # Committed (and queued, Redis permitting): the jobs are accepted whatever the release did.
            log.warning("releasing the ledger connection failed after %d job(s) were recorded: %r", len(jobs), exc)
        return [None] * len(requests)


async def push(redis: ArqRedis, jobs: Sequence[ledger.NewJob]) -> int:
    """Put recorded jobs on the ARQ queue in one round trip; return how many were queued.

    A job ARQ already knows (same id) is not queued twice. Redis errors are logged, not raised:
    the jobs are in the ledger, and the recovery sweep pushes them later.
    """
    entries = [
        queue.Entry(
            function=job.name.value,
            job_id=job.id,
            args=(job.payload,),
            defer_until=job.run_at if job.status is JobStatus.deferred else None,
        )
        for job in jobs
    ]
    try:
        queued = await queue.enqueue(
            redis, entries, queue_name=redis.default_queue_name, serializer=redis.job_serializer
        )
    except (RedisError, OSError) as exc:
        log.warning("redis unavailable; %d job(s) stay in the ledger for the sweep: %s", len(jobs), exc)
        return 0
    return sum(queued)
