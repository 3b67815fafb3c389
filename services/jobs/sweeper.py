"""The recovery sweep: no ledger row stays unfinished because Redis forgot it.

It runs as a cron job in the jobs service. For every job the ledger says is not finished and
whose row has not moved for a while, it asks Redis what ARQ knows:

- a result: ARQ ended the job (possibly without running it: max tries exceeded, job expired),
  so the ledger takes that outcome;
- running, or queued with its job key: nothing to do;
- a job key but no queue entry: the id is put back on the queue, scored by its due time (the
  ledger's ``run_at``: when it was deferred to, or when its next try is due), so a deferred job
  or a retry's backoff is not cut short;
- nothing at all (Redis restarted without persistence, FLUSHALL, the 202 was given while Redis
  was down): the job is enqueued again from the ledger, under the same id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.utils import to_unix_ms
from redis.exceptions import ResponseError

from services import ledger
from services.contract import JobStatus
from services.core.serialization import deserialize
from services.core.throttled_log import ThrottledLog

log = logging.getLogger("afterword.sweeper")
_unreadable = ThrottledLog(log)  # jobs whose keys hold values of the wrong type: said once a minute


@dataclass
class SweepReport:
    """What one sweep did, by job id."""

    checked: int = 0
    requeued: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    settled: dict[str, JobStatus] = field(default_factory=dict)


async def sweep(
    *, db: asyncpg.Pool, redis: ArqRedis, queue_name: str, idle_seconds: float, limit: int = 500
) -> SweepReport:
    """Reconcile unfinished ledger rows with what Redis knows; see the module docstring."""
    report = SweepReport()
    jobs = await ledger.unsettled(db, idle_seconds=idle_seconds, limit=limit)
    if not jobs:
        return report
    async with redis.pipeline(transaction=False) as pipe:
        for job in jobs:
            pipe.get(result_key_prefix + job.id)
            pipe.exists(in_progress_key_prefix + job.id)
            pipe.exists(job_key_prefix + job.id)
            pipe.zscore(queue_name, job.id)
        answers = await pipe.execute(raise_on_error=False)  # a key of the wrong type fails its own answer
    unreadable: dict[str, str] = {}
    for index, job in enumerate(jobs):
        report.checked += 1
        result, running, stored, score = answers[index * 4 : index * 4 + 4]
        errors = [answer for answer in (result, running, stored, score) if isinstance(answer, ResponseError)]
        if errors:
            unreadable[job.id] = str(errors[0])
            continue
        if result is not None:
            await _settle_from_result(db, job.id, result, report)
        elif running:
            continue
        elif stored and score is None:
            await redis.zadd(queue_name, {job.id: to_unix_ms(job.run_at)})
            report.restored.append(job.id)
        elif not stored:
            await _enqueue_again(redis, job, report)
    if unreadable:
        job_id, error = next(iter(unreadable.items()))
        _unreadable.warning(
            "keys", "sweep: skipped %d job(s) whose keys hold values of the wrong type, job %s: %s",
            len(unreadable), job_id, error,
        )  # fmt: skip
    if report.requeued or report.restored or report.settled:
        log.warning(
            "sweep: requeued %d, restored %d, settled %d of %d checked",
            len(report.requeued),
            len(report.restored),
            len(report.settled),
            report.checked,
        )
    return report


async def _settle_from_result(db: asyncpg.Pool, job_id: str, raw: bytes, report: SweepReport) -> None:
    value: Any = None
    error: str | None = None
    try:
        result = deserialize(raw)
    except ValueError:
        status, error = JobStatus.failed, "unreadable result in Redis"
    else:
        if result.get("s"):
            status, value = JobStatus.succeeded, result.get("r")
        else:
            status, error = JobStatus.failed, str(result.get("r"))
    if await ledger.settle(db, job_id=job_id, status=status, result=value, error=error):
        report.settled[job_id] = status


async def _enqueue_again(redis: ArqRedis, job: ledger.JobRecord, report: SweepReport) -> None:
    run_at = job.run_at if job.run_at > datetime.now(UTC) else None
    queued = await redis.enqueue_job(job.name, job.payload, _job_id=job.id, _defer_until=run_at)
    if queued is not None:
        report.requeued.append(job.id)
