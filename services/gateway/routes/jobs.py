"""Queue any contract job, and read a job's record from the ledger."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from services import ledger
from services.contract import JOBS, PAYLOADS, JobName, JobStatus
from services.core.failures import REDIS_FAILED
from services.gateway import cursor as cursors
from services.gateway.dependencies import DbDep, JobEventsDep, JobIdDep, RedisDep, SettingsDep, acceptance
from services.gateway.errors import Conflict, NotFound, ServiceUnavailable
from services.gateway.intake import Order, push
from services.gateway.live.job_events import wait_until_final
from services.gateway.schemas import (
    AttemptView,
    JobAcceptedView,
    JobPage,
    JobRequest,
    JobSummary,
    JobView,
    accepted_response,
)
from services.queue import control

router = APIRouter(prefix="/jobs", tags=["jobs"])

RETRYABLE = frozenset({JobStatus.failed, JobStatus.cancelled})
"""The statuses a job can be retried from."""
log = logging.getLogger("afterword.gateway")

_EXAMPLES: dict[str, dict[str, Any]] = {
    name.value: {
        "summary": definition.summary or name.value,
        "value": {
            "name": name.value,
            "payload": dict(definition.example),
            **({} if definition.defer_by is None else {"defer_by": definition.defer_by}),
        },
    }
    for name, definition in JOBS.items()
}
"""One example request per job, from its definition (``services.contract.JOBS``)."""


def status_url(request: Request, job_id: str) -> str:
    """The URL of ``GET /jobs/{job_id}``: what ``request.url_for("get_job", ...)`` gives, without its
    search through every route, a sizeable cost on the 202 path.

    The part before the id depends only on what Starlette builds ``request.base_url`` from (the
    scheme, the ``Host`` header, the server's address, the root path): it is built once per such
    combination, at most :data:`_STATUS_URL_BASES` of them, and looked up after that. The ``Host``
    header is the client's: one longer than :data:`_MAX_CACHED_HOST_BYTES` (no real host name is)
    gets its base built for this request only, so the cache holds at most 256 short keys.
    """
    scope = request.scope
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    key = (scope["scheme"], host, scope.get("server"), scope.get("app_root_path", scope.get("root_path", "")))
    base = _status_url_bases.get(key)
    if base is None:
        url = request.base_url
        base = f"{url.scheme}://{url.netloc}{url.path.rstrip('/')}{router.prefix}/"
        if len(_status_url_bases) < _STATUS_URL_BASES and (host is None or len(host) <= _MAX_CACHED_HOST_BYTES):
            _status_url_bases[key] = base
    return base + job_id


_STATUS_URL_BASES = 256
_MAX_CACHED_HOST_BYTES = 300
"""A DNS name has at most 253 characters; with a port or as an IPv6 literal, a host fits in 300."""
_status_url_bases: dict[tuple[Any, ...], str] = {}


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobAcceptedView)
async def submit_job(
    job_request: Annotated[JobRequest, Body(openapi_examples=_EXAMPLES)],
    request: Request,
) -> Response:
    """Queue one job of the contract; its payload is validated against that job's model."""
    try:
        payload = PAYLOADS[job_request.name].model_validate(job_request.payload)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", "payload", *error["loc"])} for error in errors]
        ) from None
    return await accept_one(request, Order(job_request.name, payload, job_request.defer_by))


async def accept_one(request: Request, order: Order) -> Response:
    """Accept one job for ``request`` and answer 202 with its id and status URL."""
    (job,) = await acceptance(request).accept([order])
    view = JobAcceptedView(id=job.id, name=job.name, status=job.status, status_url=status_url(request, job.id))
    return accepted_response(view)


async def job_view(db: DbDep, job_id: str) -> JobView:
    """A job's full record with its attempts; NotFound when the ledger has no such job."""
    record = await ledger.get_job(db, job_id)
    if record is None:
        raise NotFound(f"no job with id {job_id!r}")
    attempts = await ledger.get_attempts(db, job_id)
    return JobView(
        id=record.id,
        name=record.name,
        payload=record.payload,
        status=record.status,
        tries=record.tries,
        result=record.result,
        error=record.error,
        enqueued_at=record.enqueued_at,
        run_at=record.run_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        request_id=record.request_id,
        attempts=[
            AttemptView(
                try_=a.try_,
                worker=a.worker,
                started_at=a.started_at,
                finished_at=a.finished_at,
                outcome=a.outcome,
                error=a.error,
            )
            for a in attempts
        ],
    )


@router.get("", response_model=JobPage)
async def list_jobs(
    request: Request,
    db: DbDep,
    status: JobStatus | None = None,
    name: JobName | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> JobPage:
    """Jobs newest first, filtered by status and name: ``?status=failed`` lists the dead letters."""
    try:
        before = None if cursor is None else cursors.decode(cursor)
    except cursors.InvalidCursor as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("query", "cursor"), "msg": str(exc), "input": cursor}]
        ) from None
    records = await ledger.list_jobs(db, status=status, name=name, limit=limit + 1, before=before)
    page, more = records[:limit], len(records) > limit
    next_cursor = cursors.encode(page[-1].enqueued_at, page[-1].id) if more else None
    return JobPage(
        jobs=[
            JobSummary(
                id=r.id,
                name=r.name,
                status=r.status,
                tries=r.tries,
                error=r.error,
                enqueued_at=r.enqueued_at,
                started_at=r.started_at,
                finished_at=r.finished_at,
            )
            for r in page
        ],
        next_cursor=next_cursor,
        next=None if next_cursor is None else str(request.url.include_query_params(cursor=next_cursor)),
    )


@router.get("/{job_id}", response_model=JobView, responses={404: {"description": "No such job"}})
async def get_job(
    job_id: JobIdDep,
    db: DbDep,
    events: JobEventsDep,
    wait: Annotated[
        float,
        Query(ge=0, le=60, description="Seconds to wait for the job to end (succeeded, failed or cancelled) first."),
    ] = 0,
) -> JobView:
    """A job's status, tries, result or error and timings, from the jobs ledger.

    With ``?wait=N`` the answer waits until the job ends or ``N`` seconds pass (a long poll).
    """
    if wait > 0:
        await wait_until_final(db, events, job_id, seconds=wait)
    return await job_view(db, job_id)


@router.post(
    "/{job_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAcceptedView,
    responses={
        404: {"description": "No such job"},
        409: {"description": "The job is not failed or cancelled"},
        503: {"description": "Postgres or Redis is unavailable; the job was not retried"},
    },
)
async def retry_job(job_id: JobIdDep, request: Request, db: DbDep, redis: RedisDep) -> JobAcceptedView:
    """Run a failed or cancelled job again, under the same id (its attempts keep counting)."""
    current = await ledger.get_job(db, job_id)
    if current is None:
        raise NotFound(f"no job with id {job_id!r}")
    if current.status not in RETRYABLE:
        raise Conflict(f"job {job_id} is {current.status}; only failed or cancelled jobs can be retried")
    # ARQ refuses an id whose result it still keeps, and counts tries per id: start afresh, before
    # the ledger says queued. With Redis away nothing has changed: 503, and the job stays as it was.
    try:
        await control.forget_past_runs(redis, job_id)
    except REDIS_FAILED as exc:
        log.warning("job %s not retried: the queue (Redis) is unavailable: %s", job_id, type(exc).__name__)
        raise ServiceUnavailable(f"the queue (Redis) is unavailable; job {job_id} was not retried") from exc
    record = await ledger.requeue_for_retry(db, job_id=job_id)
    if record is None:  # retried or changed by another request meanwhile
        raise Conflict(f"job {job_id} is no longer failed or cancelled")
    job = ledger.NewJob(
        id=record.id,
        name=JobName(record.name),
        payload=record.payload,
        status=JobStatus.queued,
        run_at=record.run_at,
        request_id=record.request_id,
    )
    await push(redis, [job])
    return JobAcceptedView(id=job.id, name=job.name, status=job.status, status_url=status_url(request, job.id))


@router.delete(
    "/{job_id}",
    response_model=JobView,
    responses={404: {"description": "No such job"}, 409: {"description": "The job already ended"}},
)
async def cancel_job(job_id: JobIdDep, db: DbDep, redis: RedisDep, settings: SettingsDep) -> JobView:
    """Cancel a queued, deferred, retrying or running job; a running one is aborted."""
    record = await ledger.get_job(db, job_id)
    if record is None:
        raise NotFound(f"no job with id {job_id!r}")
    if not await ledger.settle(db, job_id=job_id, status=JobStatus.cancelled, error="cancelled by request"):
        raise Conflict(f"job {job_id} already ended as {record.status}")
    # The ledger now says cancelled, so no worker will start it; take it off the queue as well,
    # and abort it where it runs. Redis trouble here changes nothing for the outcome.
    try:
        await control.withdraw(redis, queue_name=settings.queue_name, job_id=job_id)
    except Exception as exc:
        log.warning("job %s cancelled in the ledger; Redis not updated: %s", job_id, exc)
    return await job_view(db, job_id)
