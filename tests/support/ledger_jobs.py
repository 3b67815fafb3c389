"""Jobs written straight into the ledger, for the tests of the ledger and of the worker's bookkeeping."""

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
