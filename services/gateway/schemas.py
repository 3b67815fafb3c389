"""Request and response bodies of the gateway's HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field, PlainSerializer
from starlette.responses import Response

from services.contract import JobName, JobStatus, SingleLine, Text

Timestamp = Annotated[
    datetime, PlainSerializer(lambda value: value.isoformat(timespec="microseconds"), return_type=str)
]


MAX_DEFER_SECONDS = 7 * 24 * 3600
"""The longest ``defer_by`` a request may ask for: a week."""


class Request(BaseModel):
    """Base of request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class SignupRequest(Request):
    """A new user signing up."""

    email: EmailStr = Field(examples=["ada@example.com"])
    name: SingleLine = Field(min_length=1, max_length=100, examples=["Ada Lovelace"])


class SendRequest(Request):
    """Data a user sends; its message is logged."""

    message: Text | None = Field(default=None, min_length=1, max_length=10_000, examples=["User sent data"])


class JobRequest(Request):
    """Any job of the contract, with its payload (validated against that job's payload model)."""

    name: JobName = Field(examples=[JobName.write_log])
    payload: dict[str, Any] = Field(
        default_factory=dict,
        description="The job's payload; its schema is the one of the job named (see the examples).",
        examples=[{"message": "hello from the API"}],
    )
    defer_by: float | None = Field(
        default=None, ge=0, le=MAX_DEFER_SECONDS, description="Seconds to wait before the job may run."
    )


class AcceptedJob(BaseModel):
    """A job the gateway accepted."""

    id: str
    name: JobName
    status_url: str


class Accepted(BaseModel):
    """The 202 answer of /signup and /process."""

    message: str
    jobs: list[AcceptedJob]


def accepted_response(body: BaseModel) -> Response:
    """The 202 answer carrying ``body``, serialized by pydantic.

    A route that returns a model has FastAPI validate it again against its ``response_model``
    and encode it in Python; the routes that accept jobs return this instead (same JSON, same
    OpenAPI schema, from their ``response_model``): the 202 path is the gateway's hot path.
    """
    return Response(content=body.model_dump_json(), status_code=202, media_type="application/json")


class SendAccepted(BaseModel):
    """The 202 answer of /send (the seed tutorial names its key ``status``)."""

    status: str
    jobs: list[AcceptedJob]


class JobAcceptedView(AcceptedJob):
    """The 202 answer of POST /jobs."""

    status: JobStatus


class AttemptView(BaseModel):
    """One start of a job."""

    try_: int = Field(serialization_alias="try")
    worker: str
    started_at: Timestamp
    finished_at: Timestamp | None
    outcome: str | None
    error: str | None


class JobView(BaseModel):
    """A job as the ledger knows it."""

    id: str
    name: str
    payload: dict[str, Any] = Field(description="The job's payload, as accepted.")
    status: JobStatus
    tries: int
    result: Any
    error: str | None
    enqueued_at: Timestamp
    run_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    request_id: str | None
    attempts: list[AttemptView]


class JobSummary(BaseModel):
    """A job in a listing."""

    id: str
    name: str
    status: JobStatus
    tries: int
    error: str | None
    enqueued_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None


class JobPage(BaseModel):
    """One page of GET /jobs, newest first."""

    jobs: list[JobSummary]
    next_cursor: str | None = Field(description="Pass as ``cursor`` for the next page; null on the last page.")
    next: str | None = Field(description="The URL of the next page; null on the last page.")


class StatusEvent(BaseModel):
    """The data of one ``status`` event of GET /jobs/{id}/events."""

    id: str
    status: JobStatus
    tries: int
    error: str | None
    at: Timestamp = Field(description="When the job's row took this status.")


class ThroughputMinute(BaseModel):
    """Jobs that ended in one minute (by ``finished_at``)."""

    minute: Timestamp
    succeeded: int
    failed: int


class Percentiles(BaseModel):
    """Pickup latency percentiles in milliseconds; null when no job started in the window."""

    p50: float | None
    p95: float | None
    p99: float | None


class LatencyMinute(Percentiles):
    """Pickup latency percentiles of the jobs first started in one minute."""

    minute: Timestamp


class WorkerView(BaseModel):
    """A worker whose heartbeat is fresh."""

    id: str
    host: str
    pid: int
    last_beat: Timestamp


class StatsView(BaseModel):
    """The answer of GET /stats."""

    now: Timestamp = Field(description="The gateway's clock, to tell the age of timestamps.")
    minutes: int = Field(description="The window of the per-minute figures.")
    queue_depth: int | None = Field(description="Jobs on the ARQ queue (ZCARD); null when Redis is down.")
    jobs_by_status: dict[JobStatus, int] = Field(description="Jobs of the ledger per status (every status named).")
    jobs_by_status_estimated: list[JobStatus] = Field(
        description=(
            "The statuses whose count is Postgres' estimate rather than exact: those expected to have more "
            "than STATS_EXACT_COUNT_LIMIT jobs."
        )
    )
    throughput: list[ThroughputMinute] = Field(description="One entry per minute of the window, oldest first.")
    pickup_latency_ms: Percentiles = Field(
        description="From a job's run_at to the start of its first attempt, over the window."
    )
    pickup_latency_by_minute: list[LatencyMinute] = Field(
        description="The same per minute of the first attempt's start; minutes without a start are left out."
    )
    workers: list[WorkerView] = Field(description="Live workers (empty when Redis is down).")
    unreadable_heartbeats: list[str] = Field(
        default_factory=list,
        description=(
            "Heartbeat entries in Redis that could not be read and were left out of workers: their worker ids "
            "(the heartbeat set's key when it is not a sorted set)."
        ),
    )
