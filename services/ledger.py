"""The jobs ledger in Postgres: one row per accepted job, one per attempt, one per side effect.

The gateway writes a job's row before it acknowledges the job; the worker records every attempt
and the outcome. ``GET /jobs/{id}`` answers from here, so a job's record outlives ARQ's result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.contract import JobName, JobStatus

Executor = asyncpg.Connection | asyncpg.Pool | PoolConnectionProxy
"""Anything that runs a query: a pool, or a connection inside a transaction."""


@dataclass(frozen=True)
class NewJob:
    """A job the gateway is about to acknowledge."""

    id: str
    name: JobName
    payload: dict[str, Any]
    status: JobStatus
    run_at: datetime
    request_id: str | None = None


@dataclass(frozen=True)
class Attempt:
    """One start of a job and how it ended (``outcome`` is None while it runs)."""

    try_: int
    worker: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    error: str | None


@dataclass(frozen=True)
class JobRecord:
    """A job's row of the ledger."""

    id: str
    name: str
    payload: dict[str, Any]
    status: JobStatus
    tries: int
    result: Any
    error: str | None
    request_id: str | None
    enqueued_at: datetime
    run_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


_JOB_COLUMNS = (
    "id, name, payload, status, tries, result, error, request_id, enqueued_at, run_at, started_at, finished_at"
)


def _record(row: asyncpg.Record) -> JobRecord:
    return JobRecord(
        id=row["id"],
        name=row["name"],
        payload=json.loads(row["payload"]),
        status=JobStatus(row["status"]),
        tries=row["tries"],
        result=None if row["result"] is None else json.loads(row["result"]),
        error=row["error"],
        request_id=row["request_id"],
        enqueued_at=row["enqueued_at"],
        run_at=row["run_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


async def insert_jobs(db: Executor, jobs: Sequence[NewJob]) -> None:
    """Record newly accepted jobs (call inside the transaction that must commit before the 202)."""
    await db.executemany(
        "INSERT INTO jobs (id, name, payload, status, run_at, request_id) VALUES ($1, $2, $3, $4, $5, $6)",
        [(j.id, j.name.value, json.dumps(j.payload), j.status.value, j.run_at, j.request_id) for j in jobs],
    )


async def get_job(db: Executor, job_id: str) -> JobRecord | None:
    """The ledger row of one job, or None."""
    row = await db.fetchrow(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = $1", job_id)
    return None if row is None else _record(row)


async def get_attempts(db: Executor, job_id: str) -> list[Attempt]:
    """Every attempt of a job, oldest first."""
    rows = await db.fetch(
        "SELECT try, worker, started_at, finished_at, outcome, error FROM job_attempts WHERE job_id = $1 ORDER BY try",
        job_id,
    )
    return [
        Attempt(
            try_=r["try"],
            worker=r["worker"],
            started_at=r["started_at"],
            finished_at=r["finished_at"],
            outcome=r["outcome"],
            error=r["error"],
        )
        for r in rows
    ]


@dataclass(frozen=True)
class Started:
    """What :func:`start_attempt` found: the status before this start, and this attempt's number.

    ``request_id`` is the one stored with the job; ``crash_rerun`` is True when this start closed
    an attempt that a dead worker had left open.
    """

    previous: JobStatus | None
    attempt: int
    request_id: str | None = None
    crash_rerun: bool = False

    @property
    def may_run(self) -> bool:
        """False when the job already ended (succeeded, failed or cancelled meanwhile)."""
        return self.previous is None or not self.previous.is_final


async def start_attempt(db: asyncpg.Pool, *, job_id: str, worker: str) -> Started:
    """Mark a job in progress and open its next attempt.

    An attempt left open by a worker that died is closed as ``interrupted`` first. For a job the
    ledger does not know (a cron run) ``previous`` is None and nothing is written; for a job already
    in a final state nothing is written either, and the caller must not run it.
    """
    async with db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT status, request_id FROM jobs WHERE id = $1 FOR UPDATE", job_id)
        if row is None:
            return Started(previous=None, attempt=0)
        previous, request_id = JobStatus(row["status"]), row["request_id"]
        if previous.is_final:
            return Started(previous=previous, attempt=0, request_id=request_id)
        closed = await conn.execute(
            "UPDATE job_attempts SET outcome = 'interrupted', finished_at = clock_timestamp(), "
            "error = 'the worker stopped before the attempt ended' WHERE job_id = $1 AND outcome IS NULL",
            job_id,
        )
        attempt: int = await conn.fetchval(
            "INSERT INTO job_attempts (job_id, try, worker) "
            "SELECT $1, COALESCE(max(try), 0) + 1, $2 FROM job_attempts WHERE job_id = $1 RETURNING try",
            job_id,
            worker,
        )
        await conn.execute(
            "UPDATE jobs SET status = 'in_progress', tries = $2, started_at = clock_timestamp(), "
            "finished_at = NULL, updated_at = clock_timestamp() WHERE id = $1",
            job_id,
            attempt,
        )
        return Started(previous=previous, attempt=attempt, request_id=request_id, crash_rerun=closed != "UPDATE 0")


async def finish_attempt(
    db: asyncpg.Pool,
    *,
    job_id: str,
    attempt: int,
    status: JobStatus,
    result: Any = None,
    error: str | None = None,
) -> None:
    """Record how an attempt ended and the job's resulting status.

    ``status`` is the job's new status: ``succeeded``/``failed`` end it, ``retrying`` means ARQ
    will run it again, ``queued`` means it was interrupted and handed back. A job already final
    (cancelled meanwhile) keeps its status; its attempt is then recorded as ``cancelled``.
    """
    outcome = "interrupted" if status is JobStatus.queued else status.value
    async with db.acquire() as conn, conn.transaction():
        updated = await conn.fetchval(
            "UPDATE jobs SET status = $2, result = $3, error = $4, updated_at = clock_timestamp(), "
            "finished_at = CASE WHEN $5 THEN clock_timestamp() ELSE NULL END "
            "WHERE id = $1 AND status NOT IN ('succeeded', 'failed', 'cancelled') RETURNING 1",
            job_id,
            status.value,
            None if result is None else json.dumps(result, default=str),
            error,
            status.is_final,
        )
        await conn.execute(
            "UPDATE job_attempts SET finished_at = clock_timestamp(), outcome = $3, error = $4 "
            "WHERE job_id = $1 AND try = $2",
            job_id,
            attempt,
            outcome if updated else "cancelled",
            error,
        )


async def settle(db: Executor, *, job_id: str, status: JobStatus, result: Any = None, error: str | None = None) -> bool:
    """Set a job's status from outside a run (sweep, cancel); never changes a job already final.

    Returns True when the row changed. Open attempts are closed with the same outcome.
    """
    changed = await db.fetchval(
        "UPDATE jobs SET status = $2, result = COALESCE($3, result), error = $4, updated_at = clock_timestamp(), "
        "finished_at = CASE WHEN $5 THEN clock_timestamp() ELSE finished_at END "
        "WHERE id = $1 AND status NOT IN ('succeeded', 'failed', 'cancelled') RETURNING 1",
        job_id,
        status.value,
        None if result is None else json.dumps(result, default=str),
        error,
        status.is_final,
    )
    if changed and status.is_final:
        await db.execute(
            "UPDATE job_attempts SET finished_at = clock_timestamp(), outcome = $2, error = $3 "
            "WHERE job_id = $1 AND outcome IS NULL",
            job_id,
            status.value,
            error,
        )
    return bool(changed)


async def requeue_for_retry(db: Executor, *, job_id: str) -> JobRecord | None:
    """Put a failed or cancelled job back to ``queued`` (POST /jobs/{id}/retry); None if it is not one."""
    row = await db.fetchrow(
        "UPDATE jobs SET status = 'queued', error = NULL, result = NULL, finished_at = NULL, "
        "run_at = clock_timestamp(), updated_at = clock_timestamp() "
        f"WHERE id = $1 AND status IN ('failed', 'cancelled') RETURNING {_JOB_COLUMNS}",
        job_id,
    )
    return None if row is None else _record(row)


async def unsettled(db: Executor, *, idle_seconds: float, limit: int = 500) -> list[JobRecord]:
    """Jobs not yet ended whose row has not changed for ``idle_seconds`` (what the sweep checks)."""
    rows = await db.fetch(
        f"SELECT {_JOB_COLUMNS} FROM jobs "
        "WHERE status IN ('queued', 'deferred', 'retrying', 'in_progress') "
        "AND updated_at < clock_timestamp() - make_interval(secs => $1) "
        "ORDER BY updated_at LIMIT $2",
        idle_seconds,
        limit,
    )
    return [_record(row) for row in rows]


async def list_jobs(
    db: Executor,
    *,
    status: JobStatus | None,
    name: str | None,
    limit: int,
    before: tuple[datetime, str] | None,
) -> list[JobRecord]:
    """Jobs newest first, optionally filtered, paginated by ``(enqueued_at, id)`` keyset."""
    rows = await db.fetch(
        f"SELECT {_JOB_COLUMNS} FROM jobs "
        "WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR name = $2) "
        "AND ($3::timestamptz IS NULL OR (enqueued_at, id) < ($3, $4)) "
        "ORDER BY enqueued_at DESC, id DESC LIMIT $5",
        None if status is None else status.value,
        name,
        None if before is None else before[0],
        None if before is None else before[1],
        limit,
    )
    return [_record(row) for row in rows]


async def effect_done(db: Executor, *, job_id: str, effect: str) -> bool:
    """True when this job already did this side effect (a re-run must skip it)."""
    found = await db.fetchval("SELECT 1 FROM job_effects WHERE job_id = $1 AND effect = $2", job_id, effect)
    return found is not None


async def record_effect(db: Executor, *, job_id: str, effect: str, detail: dict[str, Any]) -> None:
    """Remember that this job did this side effect."""
    await db.execute(
        "INSERT INTO job_effects (job_id, effect, detail) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        job_id,
        effect,
        json.dumps(detail),
    )


@dataclass(frozen=True)
class StatusChange:
    """A job's status at one moment: what GET /jobs/{id}/events sends, one per change.

    ``at`` is the row's ``updated_at``, which only grows for a given job, so of two changes the
    later one has the larger ``at``.
    """

    id: str
    status: JobStatus
    tries: int
    error: str | None
    at: datetime


async def status_of(db: Executor, job_id: str) -> StatusChange | None:
    """The job's current status, tries, error and the time its row last changed; None if unknown."""
    row = await db.fetchrow("SELECT id, status, tries, error, updated_at FROM jobs WHERE id = $1", job_id)
    if row is None:
        return None
    return StatusChange(
        id=row["id"], status=JobStatus(row["status"]), tries=row["tries"], error=row["error"], at=row["updated_at"]
    )
