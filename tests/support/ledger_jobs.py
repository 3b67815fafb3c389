"""Jobs written straight into the ledger, for the tests of the ledger and of the worker's bookkeeping.

The worker writes attempts and effects only in batches (``services.jobs.attempts`` calls
:func:`services.ledger.keep_books`); :func:`start_attempt`, :func:`finish_attempt` and
:func:`record_effect` send one such write alone, through the same statement.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from services import ledger
from services.contract import JobName, JobStatus


def new_job(
    status: JobStatus = JobStatus.queued,
    *,
    name: JobName = JobName.write_log,
    payload: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> ledger.NewJob:
    """A job with a fresh id, due now (a ``write_log`` of "hello" unless told otherwise)."""
    return ledger.NewJob(
        id=uuid.uuid4().hex,
        name=name,
        payload={"message": "hello"} if payload is None else payload,
        status=status,
        run_at=datetime.now(UTC),
        request_id=request_id,
    )


async def insert_job(
    db: ledger.Executor, status: JobStatus = JobStatus.queued, *, request_id: str | None = None
) -> str:
    """Insert :func:`new_job` (committed, when ``db`` is a pool); return its id."""
    job = new_job(status, request_id=request_id)
    await ledger.insert_jobs(db, [job])
    return job.id


async def start_attempt(db: ledger.Executor, *, job_id: str, worker: str, job_try: int | None = None) -> ledger.Started:
    """Start ``job_id``'s next attempt for ``worker`` (with ARQ's try ``job_try``, which fences it)."""
    books = await ledger.keep_books(db, worker=worker, starts=[ledger.Start(job_id, job_try)])
    (started,) = books.started
    return started


async def finish_attempt(
    db: ledger.Executor,
    *,
    job_id: str,
    attempt: int,
    status: JobStatus,
    result: Any = None,
    error: str | None = None,
    run_at: datetime | None = None,
) -> bool:
    """End ``attempt`` with the job's new ``status``; False when the end was refused (fenced)."""
    finish = ledger.Finish(job_id, attempt, status, result, error, run_at)
    books = await ledger.keep_books(db, finishes=[finish])
    return not books.refused_ends


async def record_effect(
    db: ledger.Executor, *, job_id: str, effect: str, detail: dict[str, Any], attempt: int | None = None
) -> bool:
    """Record the job's ``effect`` (fenced by ``attempt`` when given); False when it was refused."""
    books = await ledger.keep_books(db, effects=[ledger.Effect(job_id, effect, detail, attempt)])
    return not books.refused_effects
