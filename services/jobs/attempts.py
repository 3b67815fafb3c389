"""The worker's attempt bookkeeping: the starts, the effects and the ends of concurrent jobs share commits.

Every status change of a job commits a NOTIFY (migration 0003, for the live status routes), and
Postgres runs such commits one at a time, WAL flush included. With one commit per start and one
per end, the workers waited on that lock (``pg_stat_activity``: Lock/object) and drained about
500 jobs/s however many of them ran. Here the starts that arrive while one batch of starts is
being written go together into the next (``services.batching``), and so do the ends and the
side effects the jobs record (``job_effects``): one statement and one commit for each batch. A
job alone waits for no one.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from services import ledger
from services.batching import Batcher
from services.contract import JobStatus

_CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)
"""A batch failing with these fails for every job in it (no point trying them one by one)."""


class AttemptBook:
    """Starts and ends attempts in the ledger for one worker, batching concurrent calls."""

    def __init__(self, db: asyncpg.Pool, *, worker_id: str) -> None:
        self._db = db
        self._worker_id = worker_id
        self._starts: Batcher[str, ledger.Started] = Batcher(
            self._start_many, fail_together=_CONNECTION_ERRORS, name="attempt-starts"
        )
        self._finishes: Batcher[ledger.Finish, None] = Batcher(
            self._finish_many, fail_together=_CONNECTION_ERRORS, name="attempt-ends"
        )
        self._effects: Batcher[ledger.Effect, None] = Batcher(
            self._record_many, fail_together=_CONNECTION_ERRORS, name="job-effects"
        )

    async def start(self, job_id: str) -> ledger.Started:
        """:func:`services.ledger.start_attempt` for this worker, in a batch."""
        return await self._starts.submit(job_id)

    async def finish(
        self, *, job_id: str, attempt: int, status: JobStatus, result: Any = None, error: str | None = None
    ) -> None:
        """:func:`services.ledger.finish_attempt`, in a batch."""
        await self._finishes.submit(ledger.Finish(job_id, attempt, status, result, error))

    async def record_effect(self, *, job_id: str, effect: str, detail: dict[str, Any]) -> None:
        """:func:`services.ledger.record_effect`, in a batch: returns once it is committed."""
        await self._effects.submit(ledger.Effect(job_id, effect, detail))

    async def _start_many(self, job_ids: list[str]) -> list[ledger.Started]:
        return await ledger.start_attempts(self._db, job_ids=job_ids, worker=self._worker_id)

    async def _finish_many(self, finishes: list[ledger.Finish]) -> list[None]:
        await ledger.finish_attempts(self._db, finishes)
        return [None] * len(finishes)

    async def _record_many(self, effects: list[ledger.Effect]) -> list[None]:
        await ledger.record_effects(self._db, effects)
        return [None] * len(effects)
