"""The ledger's side of transactional enqueue: the jobs the relay pushes to Redis.

``afterword_enqueue`` (migration 0012) writes a job's row in the caller's transaction and
notifies :data:`CHANNEL` with the job's id; Postgres delivers the notification when, and only if,
that transaction commits. The relay (``services.jobs.relay``) reads the rows of the ids it hears
of (:func:`waiting`) and, when it (re)connects, those written recently that nothing may have
pushed yet (:func:`recent`), and queues them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.contract import JobName, JobStatus
from services.ledger import Executor, statuses

CHANNEL = "afterword_enqueued"
"""The notification channel of ``afterword_enqueue``: each notification's payload is a job's id."""


@dataclass(frozen=True)
class Waiting:
    """A job whose row waits for its first run: what Redis needs to queue it."""

    id: str
    name: JobName
    payload: dict[str, Any]
    status: JobStatus
    run_at: datetime


_COLUMNS = "id, name, payload, status, run_at"


_NOT_STARTED = statuses.listed([JobStatus.queued, JobStatus.deferred])
"""What a job enqueued and never started is: queued, or deferred."""


def _waiting(rows: Sequence[asyncpg.Record]) -> list[Waiting]:
    known = set(JobName)
    return [
        Waiting(
            id=row["id"],
            name=JobName(row["name"]),
            payload=json.loads(row["payload"]),
            status=JobStatus(row["status"]),
            run_at=row["run_at"],
        )
        for row in rows
        if row["name"] in known  # a name this worker does not run: a worker that does will push it
    ]


async def waiting(db: Executor, job_ids: Sequence[str]) -> list[Waiting]:
    """The jobs of ``job_ids`` that are still ``queued`` or ``deferred`` and never started."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM jobs WHERE id = ANY($1::text[]) AND status IN ({_NOT_STARTED}) AND tries = 0",
        list(job_ids),
    )
    return _waiting(rows)


async def recent(db: Executor, *, within_seconds: float, limit: int) -> list[Waiting]:
    """Jobs written in the last ``within_seconds`` that are still ``queued`` or ``deferred`` and never
    started, oldest first, at most ``limit``.

    What a relay that was not listening may have missed; older rows are the recovery sweep's.
    """
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM jobs WHERE status IN ({_NOT_STARTED}) AND tries = 0 "
        "AND enqueued_at > clock_timestamp() - make_interval(secs => $1) ORDER BY enqueued_at LIMIT $2",
        within_seconds,
        limit,
    )
    return _waiting(rows)
