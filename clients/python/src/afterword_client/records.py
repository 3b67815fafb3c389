"""What the gateway answers, as typed records: an accepted job, a job's record, a page, a status event.

Fields the gateway adds later are ignored, so an older client keeps working against a newer
gateway. A job's ``name`` is a plain string for the same reason (compare it with
:class:`~afterword_client.models.JobName`, a ``StrEnum``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from afterword_client.models import PAYLOADS, JobName, JobStatus, Payload


class Record(BaseModel):
    """Base of the records: immutable, and tolerant of fields it does not know."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Accepted(Record):
    """A job the gateway accepted (``POST /jobs``, ``POST /jobs/{id}/retry``)."""

    id: str
    name: str
    status: JobStatus
    status_url: str
    idempotency_key: str | None = Field(default=None, description="The Idempotency-Key the request was sent with.")
    replayed: bool = Field(
        default=False,
        description="True when this is the stored answer to an earlier request with the same Idempotency-Key.",
    )


class Attempt(Record):
    """One start of a job."""

    try_: int = Field(alias="try")
    worker: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    error: str | None


class Job(Record):
    """A job's record from the ledger, with one entry per attempt."""

    id: str
    name: str
    payload: dict[str, Any]
    status: JobStatus
    tries: int
    result: Any
    error: str | None
    enqueued_at: datetime
    run_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    request_id: str | None
    attempts: list[Attempt]

    def typed_payload(self) -> Payload:
        """The payload as its job's model (:class:`~afterword_client.models.SendEmail`, ...).

        Raises ``ValueError`` for a job this client's models do not know (a newer gateway's).
        """
        return PAYLOADS[JobName(self.name)].model_validate(self.payload)


class JobSummary(Record):
    """A job in a listing."""

    id: str
    name: str
    status: JobStatus
    tries: int
    error: str | None
    enqueued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobPage(Record):
    """One page of ``GET /jobs``, newest first; ``next_cursor`` is None on the last page."""

    jobs: list[JobSummary]
    next_cursor: str | None


class StatusEvent(Record):
    """A job took a status (an event of ``GET /jobs/{id}/events``); ``at`` is when."""

    id: str
    status: JobStatus
    tries: int
    error: str | None
    at: datetime
