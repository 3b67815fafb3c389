"""The worker's attempt bookkeeping: the starts, the effects and the ends of concurrent jobs share a commit.

Every job writes the ledger up to three times: its attempt's start, the side effect it did
(``job_effects``, so that a re-run does not repeat it) and its attempt's end. A job whose effect
is its last step notes it (:meth:`AttemptBook.note_effect`) and it is written in the statement of
the attempt's end: one wait for a commit fewer, and no wider window in which a crash makes a
re-run repeat the effect (from the effect to the commit that records it). Each write is a
commit, and commits wait on each other in Postgres: for the WAL flush, and, for a status change,
for the lock that the NOTIFY of the live status trigger takes (migration 0003). So every write
that arrives while a batch is being written goes into the next one, whatever its kind
(``services.core.batching``): one statement (:func:`services.ledger.write_bookkeeping`) and one
commit for the whole batch. A job alone waits for no one. One batch is in flight at a time: two
at once are slower, as their commits queue on each other anyway.

While due jobs wait for slots, the worker holds the book (:meth:`AttemptBook.hold`) from the
moment a job hands in its end until it has claimed the next jobs: the ends then go in the commit
of those jobs' starts, one commit per group of jobs instead of two.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg

from services import ledger
from services.contract import JobStatus
from services.core.batching import Batcher
from services.core.failures import POSTGRES_CONNECTION_LOST
from services.queue.fencing import Fenced

log = logging.getLogger("afterword.jobs")


@dataclass(frozen=True)
class End:
    """An attempt's end, with the effects the job noted to be written with it."""

    finish: ledger.Finish
    effects: tuple[ledger.Effect, ...] = ()


Operation = str | ledger.Start | ledger.Effect | End
"""What a job asks the book to write: its start (the job id, or with its claim's try), an effect it did, or its end."""

Written = ledger.Started | bool | None
"""What the book answers: a start's result; for an end or an effect, whether it was written (not fenced)."""


class AttemptBook:
    """Starts and ends attempts, and records effects, in the ledger for one worker, in shared commits."""

    def __init__(self, db: asyncpg.Pool, *, worker_id: str) -> None:
        self._db = db
        self._worker_id = worker_id
        self._book: Batcher[Operation, Written] = Batcher(
            self._write, fail_together=POSTGRES_CONNECTION_LOST, name="attempt-book"
        )
        self._early: dict[str, asyncio.Future[Written]] = {}
        self._noted: dict[str, list[ledger.Effect]] = {}
        self.on_end: Callable[[str], None] | None = None
        """Called with the job's id as a job hands in its end, before the end is written (the
        worker frees the job's slot then: the job's own work is over)."""

    def hold(self) -> None:
        """Keep the ends handed in from now on until :meth:`release`; starts and effects still go at once.

        A start or an effect that goes takes the waiting ends along into its statement.
        """
        self._book.hold()

    def release(self) -> None:
        """Write the ends kept since :meth:`hold` (in the next batch)."""
        self._book.release()

    def begin(self, job_id: str, *, job_try: int | None = None) -> asyncio.Future[Written]:
        """Send ``job_id``'s start now, ahead of :meth:`start` (called as the worker claims the job or
        takes it handed over, with ARQ's try number of the claim, which fences the start).

        The start then travels to Postgres while the job gets under way (its task, its payload),
        instead of after.
        If the job's code never asks for it (ARQ ended the job first: aborted, expired, over its
        tries, or the worker stopped), :meth:`abandon` hands the attempt back.
        """
        if job_id not in self._early:
            start = ledger.Start(job_id, job_try)
            self._early[job_id] = self._book.send(start)  # queued now: the batch may go at once
        return self._early[job_id]

    async def start(self, job_id: str, *, job_try: int | None = None) -> ledger.Started:
        """Start the job's next attempt for this worker, in a batch (or the one :meth:`begin` sent).

        A start's result, as :func:`services.ledger.keep_books` gives it: whether the job may run,
        and its attempt's number.
        """
        early = self._early.pop(job_id, None)
        started = await (
            asyncio.shield(early) if early is not None else self._book.submit(ledger.Start(job_id, job_try))
        )
        assert isinstance(started, ledger.Started)  # a start's result is always a Started
        return started

    async def abandon(self, job_id: str, *, hand_back: bool = True) -> None:
        """End the attempt that :meth:`begin` opened for a run that never started (if it opened one).

        The job goes back to ``queued``, its attempt ``interrupted``: the next start (or the
        recovery sweep, which takes ARQ's own outcome) carries on from there. Without ``hand_back``
        (the run lost its lease) nothing is written: the next start closes the attempt.
        """
        self._noted.pop(job_id, None)  # the run is over: an end that was never written takes nothing
        early = self._early.pop(job_id, None)
        if early is None or not hand_back:
            return  # started by the job's code, never begun, or not ours to end any more
        try:
            started = await early
            if isinstance(started, ledger.Started) and started.attempt and started.may_run:
                await self.finish(
                    job_id=job_id,
                    attempt=started.attempt,
                    status=JobStatus.queued,
                    error="not run: ARQ ended the job before it started",
                )
        except Fenced:
            pass  # another claim started the job since: the attempt is closed already
        except Exception as exc:  # Postgres away: the next start closes the attempt as a crash's
            log.warning("could not hand back the attempt of job %s: %s", job_id, exc)

    async def finish(
        self,
        *,
        job_id: str,
        attempt: int,
        status: JobStatus,
        result: Any = None,
        error: str | None = None,
        run_at: datetime | None = None,
    ) -> None:
        """End the attempt with the job's new status, in a batch, with the effects noted for the job.

        Raises :class:`Fenced` when the end was refused (``attempt`` is no longer the job's current,
        open one): then nothing was written, the noted effects neither. If the write fails, the
        noted effects are kept for the next try of the end.
        """
        noted = self._noted.pop(job_id, [])
        if self.on_end is not None:
            self.on_end(job_id)
        effects = tuple(replace(effect, attempt=attempt) for effect in noted)
        end = End(ledger.Finish(job_id, attempt, status, result, error, run_at), effects)
        try:
            written = await self._book.submit(end, defer=True)
        except BaseException:
            if noted:
                self._noted[job_id] = [*noted, *self._noted.get(job_id, [])]
            raise
        if not written:
            raise Fenced("end", job_id, f"attempt {attempt} is no longer the job's current one")

    async def record_effect(
        self, *, job_id: str, effect: str, detail: dict[str, Any], attempt: int | None = None
    ) -> None:
        """Record that the job did ``effect`` (``job_effects``), in a batch: returns once it is committed.

        With ``attempt`` it is fenced: :class:`Fenced` is raised when that attempt is no longer the
        job's current one (nothing was written).
        """
        if not await self._book.submit(ledger.Effect(job_id, effect, detail, attempt)):
            raise Fenced("effect", job_id, f"attempt {attempt} is no longer the job's current one")

    def note_effect(self, *, job_id: str, effect: str, detail: dict[str, Any]) -> None:
        """Record this effect with the attempt's end (:meth:`finish`), whatever the end is.

        For an effect that is the job's last step. If more work follows that can fail, use
        :meth:`record_effect`: a failed end (Postgres away) takes its noted effects with it.
        """
        self._noted.setdefault(job_id, []).append(ledger.Effect(job_id, effect, detail))

    async def _write(self, operations: list[Operation]) -> list[Written]:
        starts = [
            op if isinstance(op, ledger.Start) else ledger.Start(op)
            for op in operations
            if isinstance(op, str | ledger.Start)
        ]
        books = await ledger.keep_books(
            self._db,
            worker=self._worker_id,
            starts=starts,
            effects=[
                *(op for op in operations if isinstance(op, ledger.Effect)),
                *(effect for op in operations if isinstance(op, End) for effect in op.effects),
            ],
            finishes=[op.finish for op in operations if isinstance(op, End)],
        )
        started = iter(books.started)
        refused_ends = set(books.refused_ends)
        refused_effects = set(books.refused_effects)
        written: list[Written] = []
        for op in operations:
            if isinstance(op, str | ledger.Start):
                written.append(next(started))
            elif isinstance(op, End):
                written.append((op.finish.job_id, op.finish.attempt) not in refused_ends)
            else:
                written.append((op.job_id, op.effect) not in refused_effects)
        return written
