"""The ``jobs`` table: one row per accepted job, its status, result and timings.

The gateway inserts a job's row before it acknowledges the job (:func:`insert_jobs`), with the
Idempotency-Key rows of the same request in the same statement. The worker moves the status
through :mod:`services.ledger.attempts`; the recovery sweep and the cancel and retry routes
change it from outside a run (:func:`settle`, :func:`requeue_for_retry`); a worker cron deletes
the jobs that ended long ago (:func:`prune_ended`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.contract import JobName, JobStatus
from services.core.serialization import json_bytes
from services.ledger import idempotency as idempotency_keys
from services.ledger import statuses
from services.ledger.executor import Executor
from services.ledger.idempotency import KeyRecord


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


async def insert_jobs(
    db: Executor, jobs: Sequence[NewJob], *, keyed: Sequence[tuple[KeyRecord, Sequence[NewJob]]] = ()
) -> list[bool]:
    """Record newly accepted jobs, all of them or none, in one statement (one round trip).

    ``keyed`` are the requests that carried an Idempotency-Key: each key's row (with its
    response) and that request's jobs are written by the same statement, so they commit together.
    A key another request already recorded (and that has not expired) is not written, and neither
    are its jobs. Returns, for each of ``keyed``, whether it was written.

    Outside a transaction the statement commits on its own; the 202 may follow when it returns.
    """
    every = [*jobs, *(job for _, request_jobs in keyed for job in request_jobs)]
    arguments: list[Any] = [
        [j.id for j in every],
        [j.name.value for j in every],
        [json_bytes(j.payload).decode() for j in every],
        [j.status.value for j in every],
        [j.run_at for j in every],
        [j.request_id for j in every],
    ]
    if not keyed:
        await db.execute(f"INSERT INTO jobs {_NEW_JOBS} SELECT * FROM unnest({_NEW_JOB_ARRAYS})", *arguments)
        return []
    keys = [key for key, _ in keyed]
    # Each job's key (NULL for a job without one), to keep the jobs whose key was not written out.
    arguments += [
        [None] * len(jobs) + [key.scope for key, request_jobs in keyed for _ in request_jobs],
        [None] * len(jobs) + [key.key for key, request_jobs in keyed for _ in request_jobs],
        *idempotency_keys.insert_arguments(keys),
    ]
    rows = await db.fetch(
        f"WITH written AS ({idempotency_keys.insert_keys(9)}), "
        f"inserted AS (INSERT INTO jobs {_NEW_JOBS} SELECT t.id, t.name, t.payload, t.status, t.run_at, t.request_id "
        f"FROM unnest({_NEW_JOB_ARRAYS}, $7::text[], $8::text[]) "
        "AS t(id, name, payload, status, run_at, request_id, scope, key) "
        "WHERE t.key IS NULL OR (t.scope, t.key) IN (SELECT scope, key FROM written)) "
        "SELECT scope, key FROM written",
        *arguments,
    )
    written = {(row["scope"], row["key"]) for row in rows}
    return [(key.scope, key.key) in written for key in keys]


_NEW_JOBS = "(id, name, payload, status, run_at, request_id)"
_NEW_JOB_ARRAYS = "$1::text[], $2::text[], $3::jsonb[], $4::text[], $5::timestamptz[], $6::text[]"
_QUEUED = statuses.literal(JobStatus.queued)
_RETRYABLE = statuses.listed((JobStatus.failed, JobStatus.cancelled))
"""What ``POST /jobs/{id}/retry`` puts back to ``queued``."""


async def get_job(db: Executor, job_id: str) -> JobRecord | None:
    """The ledger row of one job, or None."""
    row = await db.fetchrow(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = $1", job_id)
    return None if row is None else _record(row)


async def settle(db: Executor, *, job_id: str, status: JobStatus, result: Any = None, error: str | None = None) -> bool:
    """Set a job's status from outside a run (sweep, cancel); never changes a job already final.

    Returns True when the row changed. Open attempts are closed with the same outcome.
    """
    changed = await db.fetchval(
        "UPDATE jobs SET status = $2, result = COALESCE($3, result), error = $4, updated_at = clock_timestamp(), "
        "finished_at = CASE WHEN $5 THEN clock_timestamp() ELSE finished_at END "
        f"WHERE id = $1 AND status NOT IN ({statuses.FINAL}) RETURNING 1",
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
        f"UPDATE jobs SET status = {_QUEUED}, error = NULL, result = NULL, finished_at = NULL, "
        "run_at = clock_timestamp(), updated_at = clock_timestamp() "
        f"WHERE id = $1 AND status IN ({_RETRYABLE}) RETURNING {_JOB_COLUMNS}",
        job_id,
    )
    return None if row is None else _record(row)


async def unsettled(db: Executor, *, idle_seconds: float, limit: int = 500) -> list[JobRecord]:
    """Jobs not yet ended whose row has not changed for ``idle_seconds`` (what the sweep checks)."""
    rows = await db.fetch(
        f"SELECT {_JOB_COLUMNS} FROM jobs "
        f"WHERE status IN ({statuses.UNFINISHED}) "
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


PRUNE_BATCH = 1000
"""Jobs deleted per statement by :func:`prune_ended`: each statement's locks stay short."""


async def prune_ended(
    db: Executor, *, ended_before_seconds: float, names: Sequence[str] | None = None, max_batches: int = 100
) -> int:
    """Delete jobs (of ``names`` only, unless None) that ended more than ``ended_before_seconds`` ago; return how many.

    Only ``succeeded``, ``failed`` and ``cancelled`` jobs go, with their attempts (the foreign key
    cascades) and their effects, oldest first, :data:`PRUNE_BATCH` per statement (each commits on
    its own) and at most ``max_batches`` statements per call: the next call goes on. A row locked
    by someone else (a retry putting a failed job back) is skipped, not waited for.
    """
    pruned = 0
    for _ in range(max_batches):
        deleted = await db.fetchval(
            "WITH doomed AS ("
            "  SELECT id FROM jobs WHERE finished_at < clock_timestamp() - make_interval(secs => $1) "
            f"  AND status IN ({statuses.FINAL}) AND ($3::text[] IS NULL OR name = ANY($3::text[])) "
            "  ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED"
            "), effects AS (DELETE FROM job_effects e USING doomed d WHERE e.job_id = d.id), "
            "gone AS (DELETE FROM jobs j USING doomed d WHERE j.id = d.id RETURNING 1) "
            "SELECT count(*) FROM gone",
            ended_before_seconds,
            PRUNE_BATCH,
            None if names is None else list(names),
        )
        pruned += deleted
        if deleted < PRUNE_BATCH:
            break
    return pruned
