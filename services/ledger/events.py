"""A job's status as the live routes see it: read, or read while registering a watch on the job.

``GET /jobs/{id}?wait=N`` and ``GET /jobs/{id}/events`` wait for a job's status changes, which
Postgres announces for watched jobs only (migration 0008, ``job_watchers``). The gateway's
listening connection lives in ``services.gateway.live.job_events``; the statements it runs are here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.contract import JobStatus
from services.ledger.executor import Executor


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
    return None if row is None else _status_change(row)


async def watch_status(db: Executor, job_id: str, *, watch_id: str, listener_pid: int) -> StatusChange | None:
    """Register a watch on the job (its changes are announced from now on), then read its status.

    The read waits for any writer that changed the job without seeing the watch (migration 0008),
    so a change is either in what this returns or announced afterwards. None if the job is
    unknown; the watch is registered all the same.
    """
    row = await db.fetchrow(
        "SELECT id, status, tries, error, updated_at FROM afterword_watch_job($1, $2, $3)",
        job_id,
        watch_id,
        listener_pid,
    )
    return None if row is None else _status_change(row)


def _status_change(row: asyncpg.Record) -> StatusChange:
    return StatusChange(
        id=row["id"], status=JobStatus(row["status"]), tries=row["tries"], error=row["error"], at=row["updated_at"]
    )
