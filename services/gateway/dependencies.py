"""Dependency aliases that hand the lifespan's resources to route functions, and the job id that
every route under ``/jobs/{job_id}`` takes (:data:`JobIdDep`), checked once for all of them.

The functions are ``async def`` although they never await: FastAPI runs a plain ``def``
dependency in its thread pool, a thread hop per dependency and request. The routes that accept
jobs (the hot path) call :func:`acceptance` themselves instead.
"""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, Path, Request

from services.core.settings import Settings
from services.gateway.errors import NotFound
from services.gateway.identifiers import is_id
from services.gateway.intake import Acceptance
from services.gateway.live.job_events import JobEvents
from services.gateway.metrics import GatewayMetrics
from services.gateway.settled_minutes import SettledMinutes
from services.queue import QueueRedis


async def _settings(request: Request) -> Settings:
    settings: Settings = request.state.settings
    return settings


async def _db(request: Request) -> asyncpg.Pool:
    db: asyncpg.Pool = request.state.db
    return db


async def _redis(request: Request) -> QueueRedis:
    redis: QueueRedis = request.state.redis
    return redis


async def _request_id(request: Request) -> str:
    # Chosen by RequestObservationMiddleware (the client's X-Request-ID or a new one), which sends it back.
    request_id: str = request.state.request_id
    return request_id


async def _metrics(request: Request) -> GatewayMetrics:
    metrics: GatewayMetrics = request.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(_settings)]
DbDep = Annotated[asyncpg.Pool, Depends(_db)]
RedisDep = Annotated[QueueRedis, Depends(_redis)]
RequestIdDep = Annotated[str, Depends(_request_id)]
MetricsDep = Annotated[GatewayMetrics, Depends(_metrics)]


async def _events(request: Request) -> JobEvents:
    events: JobEvents = request.state.events
    return events


JobEventsDep = Annotated[JobEvents, Depends(_events)]


async def _settled_minutes(request: Request) -> SettledMinutes:
    settled: SettledMinutes = request.state.settled_minutes
    return settled


SettledMinutesDep = Annotated[SettledMinutes, Depends(_settled_minutes)]


_JOB_ID_DOC = "The job's id as its 202 gave it (32 lowercase hex digits); any other is 404."


async def _job_id(job_id: Annotated[str, Path(description=_JOB_ID_DOC)]) -> str:
    # Every job id is services.gateway.identifiers.new_id()'s: any other string names no job. Answered
    # here, before a query, so that no text Postgres refuses (a NUL) or any length reaches it.
    if not is_id(job_id):
        raise NotFound(f"no job with id {job_id!r}")
    return job_id


JobIdDep = Annotated[str, Depends(_job_id)]
"""The ``{job_id}`` path parameter of every route under ``/jobs/{job_id}``: an id no job can have is 404."""


def acceptance(request: Request) -> Acceptance:
    """Everything a route needs to accept jobs (where they go, and the request id).

    Called by the routes that accept jobs, not declared as a dependency: FastAPI resolving one
    more dependency per request is a noticeable share of the gateway's CPU on the 202 path.
    """
    state = request.state
    return Acceptance(intake=state.intake, request_id=state.request_id)
