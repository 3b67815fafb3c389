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

from services import ledger
from services.contract import JobStatus
from services.core.throttled_log import ThrottledLog
from services.queue import QueueRedis, control, inspection

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
    *, db: asyncpg.Pool, redis: QueueRedis, queue_name: str, idle_seconds: float, limit: int = 500
) -> SweepReport:
    """Reconcile unfinished ledger rows with what Redis knows; see the module docstring."""
    report = SweepReport()
    jobs = await ledger.unsettled(db, idle_seconds=idle_seconds, limit=limit)
    if not jobs:
        return report
    found = await inspection.look_up(redis, queue_name=queue_name, job_ids=[job.id for job in jobs])
    unreadable: dict[str, str] = {}
    for job, held in zip(jobs, found, strict=True):
        report.checked += 1
        if held.unreadable is not None:
            unreadable[job.id] = held.unreadable
            continue
        if held.result is not None:
            await _settle_from_result(db, job.id, held.result, report)
        elif held.running:
            continue
        elif held.stored and not held.queued:
            await inspection.put_back(redis, queue_name=queue_name, job_id=job.id, due=job.run_at)
            report.restored.append(job.id)
        elif not held.stored:
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
        outcome = inspection.read_result(raw)
    except ValueError:
        status, error = JobStatus.failed, "unreadable result in Redis"
    else:
        if outcome.succeeded:
            status, value = JobStatus.succeeded, outcome.value
        else:
            status, error = JobStatus.failed, str(outcome.value)
    if await ledger.settle(db, job_id=job_id, status=status, result=value, error=error):
        report.settled[job_id] = status


async def _enqueue_again(redis: QueueRedis, job: ledger.JobRecord, report: SweepReport) -> None:
    run_at = job.run_at if job.run_at > datetime.now(UTC) else None
    if await control.enqueue_again(redis, name=job.name, payload=job.payload, job_id=job.id, defer_until=run_at):
        report.requeued.append(job.id)
