"""Accepting jobs: record them in the ledger, then push them to ARQ.

A job is acknowledged only after its ledger row is committed. If Postgres cannot be reached the
request fails with 503 and nothing is queued. If Redis cannot be reached after the commit the job
is still acknowledged: its row stays ``queued`` and the jobs service's recovery sweep pushes it
once Redis is back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services import ledger
from services.contract import JobName, JobStatus, Payload
from services.gateway.intake import Intake, push
from services.gateway.metrics import GatewayMetrics
from services.identifiers import new_id

__all__ = ["Order", "accept", "push"]

log = logging.getLogger("afterword.gateway")


@dataclass(frozen=True)
class Order:
    """A job to accept: which one, its validated payload, and an optional delay."""

    name: JobName
    payload: Payload
    defer_by: float | None = None


async def accept(
    *,
    intake: Intake,
    orders: Sequence[Order],
    metrics: GatewayMetrics,
    request_id: str | None = None,
) -> list[ledger.NewJob]:
    """Record ``orders`` in one transaction, then queue them; return the accepted jobs.

    ``metrics`` counts the jobs once their rows are committed (afterword_jobs_accepted_total).
    """
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
    # Postgres is away.
    await intake.submit(jobs)
    metrics.accepted(job.name for job in jobs)
    return jobs


@dataclass(frozen=True)
class Acceptance:
    """What a route needs to accept jobs (``services.gateway.dependencies.acceptance`` makes it).

    One object rather than three dependencies (intake, metrics, request id): FastAPI resolves each
    dependency of each request, a sizeable cost on the 202 path.
    """

    intake: Intake
    metrics: GatewayMetrics
    request_id: str | None

    async def accept(self, orders: Sequence[Order]) -> list[ledger.NewJob]:
        """:func:`accept` ``orders`` for this request."""
        return await accept(intake=self.intake, orders=orders, metrics=self.metrics, request_id=self.request_id)
