"""A job's status as the live routes see it, and the ``job_watchers`` that make Postgres announce it.

``GET /jobs/{id}?wait=N`` and ``GET /jobs/{id}/events`` wait for a job's status changes. The
status trigger of the ``jobs`` table (migration 0008) announces a change on :data:`CHANNEL`
only for a watched job: one with a row in ``job_watchers``, registered by :func:`watch_status`
under the backend pid of the connection that listens, and deleted by :func:`unwatch` (its waiter
is gone) or :func:`sweep_watches` (its listening connection is gone). :func:`parse_notification`
reads what the trigger sends. The listening connection and the waiters are the gateway's
(``services.gateway.live.job_events``); every statement they run is here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.contract import JobStatus
from services.ledger.executor import Executor

CHANNEL = "afterword_job_status"
"""The Postgres notification channel of the jobs table's status trigger."""

_SWEEP_WATCHES = (
    "DELETE FROM job_watchers w WHERE NOT EXISTS (SELECT FROM pg_stat_activity a WHERE a.pid = w.listener_pid)"
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


def parse_notification(payload: str) -> StatusChange:
    """The change a notification of :data:`CHANNEL` carries (ValueError/KeyError when malformed)."""
    data: dict[str, Any] = json.loads(payload)
    return StatusChange(
        id=str(data["id"]),
        status=JobStatus(data["status"]),
        tries=int(data["tries"]),
        error=data.get("error"),
        at=datetime.fromisoformat(data["at"]),
    )


async def unwatch(db: Executor, watch_ids: Sequence[str], *, timeout_seconds: float | None = None) -> None:
    """Delete these watches: their waiters are gone, their jobs' changes need no announcing for them."""
    await db.execute("DELETE FROM job_watchers WHERE watch_id = ANY($1)", list(watch_ids), timeout=timeout_seconds)


async def sweep_watches(db: Executor, *, timeout_seconds: float | None = None) -> None:
    """Delete the watches of listening connections that no longer exist (a gateway that died)."""
    await db.execute(_SWEEP_WATCHES, timeout=timeout_seconds)
