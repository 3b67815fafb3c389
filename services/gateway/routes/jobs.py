"""Queue any contract job, and read a job's record from the ledger."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from services import ledger
from services.contract import PAYLOADS, JobName
from services.gateway.acceptance import Order, accept
from services.gateway.dependencies import DbDep, RedisDep, RequestIdDep
from services.gateway.errors import NotFound
from services.gateway.schemas import AttemptView, JobAcceptedView, JobRequest, JobView

router = APIRouter(prefix="/jobs", tags=["jobs"])

_EXAMPLES: dict[str, dict[str, Any]] = {
    JobName.send_email: {
        "summary": "Send an email",
        "value": {
            "name": "send_email",
            "payload": {"to": "ada@example.com", "subject": "Hi", "body": "Hello!"},
        },
    },
    JobName.write_log: {
        "summary": "Write a log line, in 30 s",
        "value": {"name": "write_log", "payload": {"message": "hello"}, "defer_by": 30},
    },
    JobName.update_user: {
        "summary": "Create or update a user",
        "value": {"name": "update_user", "payload": {"email": "ada@example.com", "name": "Ada"}},
    },
    JobName.cleanup_temp_files: {
        "summary": "Clean the temp directory now",
        "value": {"name": "cleanup_temp_files", "payload": {}},
    },
}


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobAcceptedView)
async def submit_job(
    job_request: Annotated[JobRequest, Body(openapi_examples=_EXAMPLES)],
    request: Request,
    db: DbDep,
    redis: RedisDep,
    request_id: RequestIdDep,
) -> JobAcceptedView:
    """Queue one job of the contract; its payload is validated against that job's model."""
    try:
        payload = PAYLOADS[job_request.name].model_validate(job_request.payload)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", "payload", *error["loc"])} for error in errors]
        ) from None
    (job,) = await accept(
        db=db,
        redis=redis,
        orders=[Order(job_request.name, payload, job_request.defer_by)],
        request_id=request_id,
    )
    return JobAcceptedView(
        id=job.id,
        name=job.name,
        status=job.status,
        status_url=str(request.url_for("get_job", job_id=job.id)),
    )


@router.get("/{job_id}", response_model=JobView, responses={404: {"description": "No such job"}})
async def get_job(job_id: str, db: DbDep) -> JobView:
    """A job's status, tries, result or error and timings, from the jobs ledger."""
    record = await ledger.get_job(db, job_id)
    if record is None:
        raise NotFound(f"no job with id {job_id!r}")
    attempts = await ledger.get_attempts(db, job_id)
    return JobView(
        id=record.id,
        name=record.name,
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
