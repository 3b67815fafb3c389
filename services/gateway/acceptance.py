"""Accepting jobs: record them in the ledger, then push them to ARQ.

A job is acknowledged only after its ledger row is committed. If Postgres cannot be reached the
request fails with 503 and nothing is queued. If Redis cannot be reached after the commit the job
is still acknowledged: its row stays ``queued`` and the jobs service's recovery sweep pushes it
once Redis is back.

The jobs go to the request's :class:`JobSink`: the gateway's :class:`~services.gateway.intake.Intake`,
or, for a request with an Idempotency-Key, the middleware's holder that commits them later with
the key's response (``services.gateway.middleware.idempotency``); the 202 is sent only after that commit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from services import ledger
from services.contract import JobName, JobStatus, Payload
from services.gateway.identifiers import new_id
from services.gateway.intake import push

__all__ = ["JobSink", "Order", "accept", "push"]

log = logging.getLogger("afterword.gateway")


class JobSink(Protocol):
    """Where a request's accepted jobs go."""

    async def submit(self, jobs: Sequence[ledger.NewJob]) -> None:
        """Take ``jobs``; raise ServiceUnavailable when they cannot be recorded."""


@dataclass(frozen=True)
class Order:
    """A job to accept: which one, its validated payload, and an optional delay."""

    name: JobName
    payload: Payload
    defer_by: float | None = None


async def accept(*, intake: JobSink, orders: Sequence[Order], request_id: str | None = None) -> list[ledger.NewJob]:
    """Record ``orders`` in one transaction, then queue them; return the accepted jobs."""
    now = datetime.now(UTC)
    jobs = [
        ledger.NewJob(
            id=new_id(),
            name=order.name,
            payload=order.payload.model_dump(mode="json"),
            status=JobStatus.deferred if order.defer_by else JobStatus.queued,
            run_at=now + timedelta(seconds=order.defer_by or 0),
            request_id=request_id,
        )
        for order in orders
    ]
    # Committed, then queued (in a batch shared with concurrent requests); ServiceUnavailable if
    # Postgres is away. A request with an Idempotency-Key commits them after its route answered.
    await intake.submit(jobs)
    return jobs


@dataclass(frozen=True)
class Acceptance:
    """What a route needs to accept jobs (``services.gateway.dependencies.acceptance`` makes it).

    One object rather than two dependencies (intake, request id): FastAPI resolves each
    dependency of each request, a sizeable cost on the 202 path.
    """

    intake: JobSink
    request_id: str | None

    async def accept(self, orders: Sequence[Order]) -> list[ledger.NewJob]:
        """:func:`accept` ``orders`` for this request."""
        return await accept(intake=self.intake, orders=orders, request_id=self.request_id)
