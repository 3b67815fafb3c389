"""Accepting jobs: record them in the ledger, then push them to ARQ.

A job is acknowledged only after its ledger row is committed. If Postgres cannot be reached the
request fails with 503 and nothing is queued. If Redis cannot be reached after the commit the job
is still acknowledged: its row stays ``queued`` and the jobs service's recovery sweep pushes it
once Redis is back.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from arq.connections import ArqRedis
from redis.exceptions import RedisError

from services import ledger
from services.contract import JobName, JobStatus, Payload
from services.gateway.errors import DATABASE_ERRORS, ServiceUnavailable
from services.gateway.metrics import GatewayMetrics

log = logging.getLogger("afterword.gateway")


@dataclass(frozen=True)
class Order:
    """A job to accept: which one, its validated payload, and an optional delay."""

    name: JobName
    payload: Payload
    defer_by: float | None = None


async def accept(
    *,
    db: asyncpg.Pool,
    redis: ArqRedis,
    orders: Sequence[Order],
    metrics: GatewayMetrics,
    request_id: str | None = None,
) -> list[ledger.NewJob]:
    """Record ``orders`` in one transaction, then queue them; return the accepted jobs.

    ``metrics`` counts the jobs once their rows are committed (afterword_jobs_accepted_total).
    """
    now = datetime.now(UTC)
    jobs = [
        ledger.NewJob(
            id=uuid.uuid4().hex,
            name=order.name,
            payload=order.payload.model_dump(mode="json"),
            status=JobStatus.deferred if order.defer_by else JobStatus.queued,
            run_at=now + timedelta(seconds=order.defer_by or 0),
            request_id=request_id,
        )
        for order in orders
    ]
    try:
        async with db.acquire() as conn, conn.transaction():
            await ledger.insert_jobs(conn, jobs)
    except DATABASE_ERRORS as exc:
        log.warning("ledger unavailable, refusing %d job(s): %s", len(jobs), type(exc).__name__)
        raise ServiceUnavailable("the jobs ledger (Postgres) is unavailable; nothing was queued") from exc
    metrics.accepted(job.name for job in jobs)
    await push(redis, jobs)
    return jobs


async def push(redis: ArqRedis, jobs: Sequence[ledger.NewJob]) -> int:
    """Put recorded jobs on the ARQ queue; return how many were pushed.

    A job ARQ already knows (same id) is not queued twice. Redis errors are logged, not raised:
    the jobs are in the ledger, and the recovery sweep pushes them later.
    """
    pushed = 0
    for job in jobs:
        try:
            queued = await redis.enqueue_job(
                job.name.value,
                job.payload,
                _job_id=job.id,
                _defer_until=job.run_at if job.status is JobStatus.deferred else None,
            )
        except (RedisError, OSError) as exc:
            log.warning("redis unavailable; job %s stays in the ledger for the sweep: %s", job.id, exc)
            return pushed
        pushed += queued is not None
    return pushed
