"""The in-process worker: runs the ledger's jobs with their real implementations, one at a time, without Redis.

Each run is what the jobs service does with a job ARQ hands it: the job's coroutine from
``services.jobs.execution`` (its definition's implementation, loaded and checked by
``services.jobs.loading``) is called with a worker context and the job's payload. So the payload
is validated against the contract, the attempt is started and ended in the ledger, the job's
timeout applies, and a failed try is decided by the job's retry policy (``RetryPolicy.decide``):
a permanent error fails the job at once, a transient one leaves it ``retrying`` until its last
try. The effects are the real ones, on what the context holds: the mailer sends to the
configured SMTP server, the log writer appends to the configured file, the users repository
writes the ``users`` table of the test's database.

What Redis does for the jobs service is done here in memory: the queue is the ledger itself (the
jobs not yet ended, as the recovery sweep reads them), ARQ's try count is kept per job, and the
one worker of the process holds the lease of each job it runs (:class:`InProcessLeases`). The
context has no ``redis`` and no ``heartbeat``.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
from redis.asyncio import Redis

from services import ledger
from services.contract import JobName, JobStatus
from services.core.settings import Settings
from services.jobs.attempts import AttemptBook
from services.jobs.effects.log_writer import LogWriter
from services.jobs.effects.mailer import Mailer
from services.jobs.effects.users import UserRepository
from services.jobs.execution import REGISTRY, install
from services.jobs.loading import load
from services.jobs.metrics import JobMetrics
from services.queue import RetryLater
from services.queue.leases import LeaseKeeper

MAX_RUNS = 1000
"""One :meth:`InProcessWorker.run_all` stops after this many runs: its jobs keep queuing jobs."""

_PASSED = frozenset({JobStatus.succeeded, JobStatus.retrying, JobStatus.failed, JobStatus.cancelled})
"""Where a run leaves its job when the job's coroutine recorded how the try went."""


class InProcessLeases(LeaseKeeper):
    """The leases of the one worker of this process: it holds each job from its claim to its end.

    No other worker can take a job over, so nothing is renewed in Redis and no lease is lost.
    """

    def __init__(self, *, lease_seconds: float) -> None:
        super().__init__(cast(Redis, None), lease_seconds=lease_seconds)  # never used: nothing to renew

    async def hold(self, job_id: str) -> None:
        """Lease ``job_id`` (it is, from its claim on)."""
        if self.token(job_id) is None:
            self.claimed(job_id)

    def holds(self, job_id: str) -> bool:
        """True from the job's claim to its end."""
        return self.token(job_id) is not None

    async def count_from(self, job_id: str, job_try: int) -> bool:
        """Never needed: no other claim can hold the job (ARQ's try count is the worker's own)."""
        return False


@dataclass(frozen=True)
class Run:
    """One try of a job by the in-process worker, and the job's record after it."""

    job_id: str
    name: JobName
    job_try: int
    status: JobStatus
    """The job's status after this try: ``succeeded``, ``retrying`` (tried again by the next run),
    ``failed``, or ``cancelled`` (cancelled before it ran)."""
    result: Any
    error: str | None
    exception: BaseException | None = field(default=None, compare=False, repr=False)
    """What the try raised, if it failed."""


class JobFailed(AssertionError):
    """A job ended ``failed`` (``run_all()`` checks that none did, unless told not to)."""

    def __init__(self, failed: Sequence[Run], runs: Sequence[Run]) -> None:
        self.failed = list(failed)
        self.runs = list(runs)
        lines = [f"{run.name} {run.job_id} (try {run.job_try}): {run.error}" for run in self.failed]
        super().__init__(f"{len(lines)} job(s) failed:\n  " + "\n  ".join(lines))


class InProcessWorker:
    """Runs the jobs of one database's ledger (:meth:`open` it on a pool of that database)."""

    def __init__(self, context: dict[str, Any], *, db: asyncpg.Pool, leases: InProcessLeases) -> None:
        self._context = context
        self._db = db
        self._leases = leases
        self._tries: dict[str, int] = {}
        self._lock = asyncio.Lock()  # one run at a time, like a worker with one slot

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings, *, db: asyncpg.Pool) -> AsyncIterator[InProcessWorker]:
        """A worker whose jobs' effects go where ``settings`` say, and whose ledger is ``db``'s."""
        install(load())  # as the jobs service starts: a job without its implementation stops here
        worker_id = f"in-process:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        leases = InProcessLeases(lease_seconds=settings.lease_seconds)
        mailer = Mailer.from_settings(settings)
        context: dict[str, Any] = {
            "settings": settings,
            "worker_id": worker_id,
            "db": db,
            "mailer": mailer,
            "log_writer": LogWriter(settings.log_file),
            "users": UserRepository(db),
            "leases": leases,
            "attempts": AttemptBook(db, worker_id=worker_id),
            "metrics": JobMetrics(),
            "metrics_server": None,
        }
        try:
            yield cls(context, db=db, leases=leases)
        finally:
            await mailer.close()

    async def run_all(self, *, due_only: bool = False) -> list[Run]:
        """Run every job not yet ended, again and again, until none is left; each try once, in order.

        Jobs queued meanwhile (by a job, say) run too. A job's deferral and the waits between its
        tries are skipped, unless ``due_only``: then only the jobs due now run, and a job left
        ``retrying`` waits for a later call.
        """
        async with self._lock:
            runs: list[Run] = []
            while True:
                pending = await self._pending(due_only=due_only)
                if not pending:
                    return runs
                for record in pending:
                    if len(runs) >= MAX_RUNS:
                        raise RuntimeError(f"{MAX_RUNS} runs and the jobs are not done: do they keep queuing jobs?")
                    runs.append(await self._run(record))

    async def _pending(self, *, due_only: bool) -> list[ledger.JobRecord]:
        records = await ledger.unsettled(self._db, idle_seconds=0, limit=MAX_RUNS)
        if due_only:
            now = datetime.now(UTC)
            records = [record for record in records if record.run_at <= now]
        return sorted(records, key=lambda record: (record.run_at, record.enqueued_at))

    async def _run(self, record: ledger.JobRecord) -> Run:
        name = JobName(record.name)
        # ARQ counts the tries of a job it retries; a job queued afresh (or again, by a retry) starts at 1.
        job_try = self._tries.get(record.id, 0) + 1 if record.status is JobStatus.retrying else 1
        self._tries[record.id] = job_try
        context = {
            **self._context,
            "job_id": record.id,
            "job_try": job_try,
            "attempt": 0,
            "enqueue_time": record.enqueued_at,
            "score": int(record.run_at.timestamp() * 1000),
        }
        raised: BaseException | None = None
        self._leases.claimed(record.id)
        try:
            await REGISTRY[name](context, record.payload)
        except Exception as exc:  # the coroutine recorded the try's end in the ledger (checked below)
            raised = exc.__cause__ if isinstance(exc, RetryLater) and exc.__cause__ is not None else exc
        finally:
            self._leases.release(record.id)
        after = await ledger.get_job(self._db, record.id)
        if after is None or after.status not in _PASSED:
            if raised is not None:
                raise raised  # the try's end was not recorded (the ledger failed): the test sees why
            raise RuntimeError(f"job {record.id} is {after and after.status} after its run")
        error = None if after.status is JobStatus.succeeded else after.error
        return Run(record.id, name, job_try, after.status, after.result, error, raised)
