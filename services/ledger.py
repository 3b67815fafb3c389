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
    row = await db.fetchrow(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = $1", job_id)  # noqa: S608 (constant columns)
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


async def start_attempt(db: asyncpg.Pool, *, job_id: str, job_try: int, worker: str) -> JobStatus | None:
    """Mark a job in progress and open its attempt.

    Returns the job's status before this start, or None when the ledger has no row for it (a
    cron run). A job already in a final state is left alone: the caller must not run it again.
    """
    async with db.acquire() as conn, conn.transaction():
        status = await conn.fetchval("SELECT status FROM jobs WHERE id = $1 FOR UPDATE", job_id)
        if status is None:
            return None
        previous = JobStatus(status)
        if previous.is_final:
            return previous
        await conn.execute(
            "UPDATE jobs SET status = 'in_progress', tries = $2, started_at = clock_timestamp(), "
            "error = NULL, updated_at = clock_timestamp() WHERE id = $1",
            job_id,
            job_try,
        )
        await conn.execute(
            "INSERT INTO job_attempts (job_id, try, worker) VALUES ($1, $2, $3) "
            "ON CONFLICT (job_id, try) DO UPDATE SET worker = EXCLUDED.worker, "
            "started_at = clock_timestamp(), finished_at = NULL, outcome = NULL, error = NULL",
            job_id,
            job_try,
            worker,
        )
        return previous


async def finish_attempt(
    db: asyncpg.Pool,
    *,
    job_id: str,
    job_try: int,
    status: JobStatus,
    result: Any = None,
    error: str | None = None,
) -> None:
    """Record how an attempt ended and the job's resulting status.

    ``status`` is the job's new status: ``succeeded``/``failed`` end it, ``retrying`` means ARQ
    will run it again, ``queued`` means it was interrupted and handed back.
    """
    outcome = {JobStatus.queued: "interrupted"}.get(status, status.value)
    final = status.is_final
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE jobs SET status = $2, result = $3, error = $4, updated_at = clock_timestamp(), "
            "finished_at = CASE WHEN $5 THEN clock_timestamp() ELSE NULL END "
            "WHERE id = $1 AND status NOT IN ('succeeded', 'failed', 'cancelled')",
            job_id,
            status.value,
            None if result is None else json.dumps(result, default=str),
            error,
            final,
        )
        await conn.execute(
            "UPDATE job_attempts SET finished_at = clock_timestamp(), outcome = $3, error = $4 "
            "WHERE job_id = $1 AND try = $2",
            job_id,
            job_try,
            outcome,
            error,
        )


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
