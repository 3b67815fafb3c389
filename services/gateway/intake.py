"""The gateway's intake: accepted jobs are recorded in the ledger, then queued, across requests together.

A route turns its validated :class:`Order` s into jobs with :func:`accept` (or
:meth:`Acceptance.accept`, the request's own); they go to the request's :class:`JobSink`: the
gateway's :class:`Intake`, or, for a request with an Idempotency-Key, the middleware's holder that
commits them later with the key's response (``services.gateway.middleware.idempotency``). A job
is acknowledged (202) only after its ledger row is committed.

Every request hands its jobs to :meth:`Intake.submit` and waits; a request with an
Idempotency-Key hands them to :meth:`Intake.record` with the key and its response. While one
batch is being written, the jobs of the requests that arrive meanwhile gather
(``services.core.batching``); the next batch takes all of them, up to ``max_batch`` jobs: one INSERT
statement for their ledger rows and the keys' rows (``services.ledger.insert_jobs``: a key and
its request's jobs commit together), committed before anything else, then one Redis round trip
that queues them all on the ARQ pool's default queue and wakes the workers
(:func:`services.queue.enqueue.enqueue`). Only then does each request go on to answer 202. A request
alone waits for exactly one insert and one enqueue; under load, many requests share them.

If Postgres cannot be reached, every request of the batch gets :class:`ServiceUnavailable` and
nothing is queued. If a batch fails for another reason, its requests are written one by one, so
that only the request at fault fails. If Redis cannot be reached after the commit, the jobs are
still acknowledged: their rows stay ``queued`` and the recovery sweep pushes them later.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import asyncpg

from services import ledger
from services.contract import JobName, JobStatus, Payload
from services.core.batching import Batcher
from services.core.failures import POSTGRES_UNREACHABLE, REDIS_FAILED
from services.gateway.errors import ServiceUnavailable, ledger_unavailable
from services.gateway.identifiers import new_id
from services.gateway.metrics import GatewayMetrics
from services.ledger.idempotency import KeyRecord
from services.queue import QueueRedis
from services.queue import enqueue as queue

log = logging.getLogger("afterword.gateway")

MAX_BATCH = 512
"""At most this many jobs go into one INSERT and one enqueue."""

Queue = Callable[[Sequence[ledger.NewJob]], Awaitable[object]]
"""Where committed jobs go on to reach a worker: ARQ's queue in Redis (:func:`push`)."""


@dataclass(frozen=True)
class _Submission:
    """One request's jobs, and its Idempotency-Key with its response when it carried one."""

    jobs: Sequence[ledger.NewJob]
    key: KeyRecord | None = None


class Intake:
    """Writes accepted jobs to the ledger, then queues them, in batches shared by concurrent requests.

    ``metrics`` counts the jobs once their rows are committed (afterword_jobs_accepted_total).
    ``queue`` takes the committed jobs on to the workers: :func:`push` to ``redis`` unless given
    (the in-process worker of ``services.testing`` reads them from the ledger instead).
    """

    def __init__(
        self,
        *,
        db: asyncpg.Pool,
        redis: QueueRedis,
        metrics: GatewayMetrics,
        max_batch: int = MAX_BATCH,
        queue: Queue | None = None,
    ) -> None:
        self._db = db
        self._queue = queue if queue is not None else functools.partial(push, redis)
        self._metrics = metrics
        self._batcher: Batcher[_Submission, bool] = Batcher(
            self._write,
            max_batch=max_batch,
            weight=lambda submission: max(1, len(submission.jobs)),
            fail_together=(ServiceUnavailable,),
            name="intake",
        )

    async def submit(self, jobs: Sequence[ledger.NewJob]) -> None:
        """Return once ``jobs`` are committed to the ledger and (Redis permitting) queued.

        Raises :class:`ServiceUnavailable` when Postgres cannot be reached: nothing was recorded.
        If the request is cancelled meanwhile (its client left), the jobs are still accepted.
        """
        await self._batcher.submit(_Submission(jobs))

    async def record(self, jobs: Sequence[ledger.NewJob], *, key: KeyRecord) -> bool:
        """Commit ``jobs`` and ``key`` (with its request's response) together, then queue the jobs.

        False when the key is already recorded (another request with it committed first): then
        nothing was written or queued. Raises :class:`ServiceUnavailable` as :meth:`submit` does.
        """
        return await self._batcher.submit(_Submission(jobs, key))

    async def _write(self, submissions: list[_Submission]) -> list[bool]:
        plain = [job for submission in submissions if submission.key is None for job in submission.jobs]
        keyed = [(submission.key, submission.jobs) for submission in submissions if submission.key is not None]
        written: list[bool] = []
        committed = False
        try:
            async with self._db.acquire() as conn:
                stored = iter(await ledger.insert_jobs(conn, plain, keyed=keyed))
                written = [submission.key is None or next(stored) for submission in submissions]
                committed = True
                jobs = [
                    job for submission, ok in zip(submissions, written, strict=True) if ok for job in submission.jobs
                ]
                self._metrics.accepted(job.name for job in jobs)
                # Queued before the connection goes back to the pool: the release stays off the
                # path from acceptance to the job's start.
                await self._queue(jobs)
        except POSTGRES_UNREACHABLE as exc:
            if not committed:
                count = sum(len(submission.jobs) for submission in submissions)
                log.warning("ledger unavailable, refusing %d job(s): %s", count, type(exc).__name__)
                raise ServiceUnavailable(f"{ledger_unavailable(exc)}; nothing was queued") from exc
            # Committed (and queued, Redis permitting): the jobs are accepted whatever the release did.
            log.warning("releasing the ledger connection failed after the jobs were recorded: %r", exc)
        return written


async def push(redis: QueueRedis, jobs: Sequence[ledger.NewJob]) -> int:
    """Put recorded jobs on the ARQ queue in one round trip; return how many were queued.

    A job ARQ already knows (same id) is not queued twice. Redis errors are logged, not raised:
    the jobs are in the ledger, and the recovery sweep pushes them later.
    """
    try:
        queued = await queue.enqueue(
            redis, queue.entries_of(jobs), queue_name=redis.default_queue_name, serializer=redis.job_serializer
        )
    except REDIS_FAILED as exc:
        log.warning("redis unavailable; %d job(s) stay in the ledger for the sweep: %s", len(jobs), exc)
        return 0
    return sum(queued)


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
