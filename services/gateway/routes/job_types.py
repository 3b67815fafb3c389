"""``POST /jobs/<name>``: one route per job, its body typed by the job's payload model.

Built from the job definitions (``services.contract.JOBS``), so that a new job gets its route,
its request schema and its example in the API docs with no edit here. ``POST /jobs`` takes any
job, named in its body; these take the same body without the name, and answer the same 202.

This module has no ``from __future__ import annotations``: each route's body annotation is a
model built at import, which FastAPI must see as a class, not as a name to resolve later.
"""

from typing import Annotated, Any, cast

from fastapi import APIRouter, Body, Request, Response, status
from pydantic import Field, create_model

from services.contract import JOBS, JobDefinition, JobName, Payload
from services.gateway.intake import Order
from services.gateway.routes.jobs import accept_one
from services.gateway.schemas import MAX_DEFER_SECONDS, JobAcceptedView
from services.gateway.schemas import Request as RequestBody

router = APIRouter(prefix="/jobs", tags=["jobs"])


class TypedJobRequest(RequestBody):
    """Base of the bodies of ``POST /jobs/<name>``."""

    payload: Payload
    defer_by: float | None = None


def request_model(definition: JobDefinition) -> type[TypedJobRequest]:
    """The body of ``POST /jobs/<name>``: the job's payload, and how long to wait before it may run."""
    model: type[TypedJobRequest] = create_model(
        f"{definition.payload.__name__}Request",
        __base__=TypedJobRequest,
        __doc__=f"A {definition.name.value} job. {definition.payload.__doc__ or ''}".strip(),
        payload=(definition.payload, Field(description="The job's payload.")),
        defer_by=(
            float | None,
            Field(default=None, ge=0, le=MAX_DEFER_SECONDS, description="Seconds to wait before the job may run."),
        ),
    )
    return model


def _add_route(name: JobName, definition: JobDefinition) -> None:
    body_model = request_model(definition)
    example: dict[str, Any] = {"payload": dict(definition.example)}
    if definition.defer_by is not None:
        example["defer_by"] = definition.defer_by
    examples = {name.value: {"summary": definition.summary or name.value, "value": example}}

    async def submit(request: Request, body: Annotated[body_model, Body(openapi_examples=examples)]) -> Response:  # type: ignore[valid-type]
        typed = cast(TypedJobRequest, body)
        return await accept_one(request, Order(name, typed.payload, typed.defer_by))

    router.add_api_route(
        f"/{name.value}",
        submit,
        methods=["POST"],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=JobAcceptedView,
        name=f"submit_{name.value}",
        summary=f"Queue a {name.value} job",
        description=definition.payload.__doc__ or "",
    )


for _name, _definition in JOBS.items():
    _add_route(_name, _definition)
