"""The FastAPI ``BackgroundTasks`` tutorial's endpoints, with the work moved to the jobs service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request, Response, status

from services.contract import JobName, SendEmail, UpdateUser, WriteLog
from services.gateway.dependencies import acceptance
from services.gateway.intake import Order
from services.gateway.routes.jobs import status_url
from services.gateway.schemas import (
    Accepted,
    AcceptedJob,
    SendAccepted,
    SendRequest,
    SignupRequest,
    accepted_response,
)
from services.ledger import NewJob

router = APIRouter(tags=["seed"])

DEFAULT_SEND_MESSAGE = "User sent data"


def accepted_jobs(request: Request, jobs: list[NewJob]) -> list[AcceptedJob]:
    """The ``jobs`` list of a 202 answer, each with its status URL."""
    return [AcceptedJob(id=job.id, name=job.name, status_url=status_url(request, job.id)) for job in jobs]


def welcome_email(signup: SignupRequest) -> SendEmail:
    """The welcome email a signup sends."""
    return SendEmail(
        to=signup.email,
        subject=f"Welcome to Afterword, {signup.name}",
        body=f"Hello {signup.name},\n\nthanks for signing up. Your account is ready.\n\n-- Afterword\n",
        mark_welcome_sent=True,
    )


@router.post("/signup", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted)
async def signup(
    signup: SignupRequest,
    request: Request,
) -> Response:
    """Sign a user up: queue the welcome email, the user-row update and a log line."""
    orders = [
        Order(JobName.send_email, welcome_email(signup)),
        Order(JobName.update_user, UpdateUser(email=signup.email, name=signup.name)),
        Order(JobName.write_log, WriteLog(message=f"signup: {signup.email}")),
    ]
    jobs = await acceptance(request).accept(orders)
    return accepted_response(Accepted(message="Signup complete", jobs=accepted_jobs(request, jobs)))


@router.post("/send", status_code=status.HTTP_202_ACCEPTED, response_model=SendAccepted)
async def send(
    request: Request,
    data: Annotated[SendRequest | None, Body()] = None,
) -> Response:
    """Log the data a user sent (``"User sent data"`` when no message is given)."""
    message = data.message if data is not None and data.message is not None else DEFAULT_SEND_MESSAGE
    jobs = await acceptance(request).accept([Order(JobName.write_log, WriteLog(message=message))])
    return accepted_response(SendAccepted(status="Log task added", jobs=accepted_jobs(request, jobs)))


@router.post("/process", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted)
async def process(request: Request) -> Response:
    """Start processing: queue the ``"Process started"`` log line."""
    orders = [Order(JobName.write_log, WriteLog(message="Process started"))]
    jobs = await acceptance(request).accept(orders)
    return accepted_response(Accepted(message="Processing started", jobs=accepted_jobs(request, jobs)))
