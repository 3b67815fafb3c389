"""The worker's slots: a claimed job runs in one, which frees as soon as the job's own work is over.

ARQ frees a job's slot when its task ends, after its end is written. Here a slot frees when the
job hands in its attempt's end (``AttemptBook.on_end``): its own work is over, and what remains
(the ledger's commit, ARQ's end in Redis) is the worker's bookkeeping. While due jobs wait for
slots, the attempt book keeps those ends (``AttemptBook.hold``) until the look that follows has
claimed the next jobs and sent their starts (``services.queue.worker``): the ends of a group and
the starts of the next share one statement and one commit, and the claim's round trip overlaps
the jobs' ends instead of following them. User code still runs in at most ``max_jobs`` jobs at
once; a job's task lives on until its end is written.

ARQ's end of a job in Redis (``finish_job``) is batched with the ends of the jobs that finish
while one is being sent, and fenced by the claim's token (``services.queue.ends``). A job whose
lease is lost while it runs is cancelled (``services.queue.leases``, ``services.queue.fencing``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from typing import Any

from services.core.batching import Batcher
from services.core.failures import REDIS_FAILED
from services.core.throttled_log import ThrottledLog
from services.jobs.attempts import AttemptBook
from services.queue import ends, fencing
from services.queue.ends import End
from services.queue.fencing import Fenced
from services.queue.leases import LeaseKeeper
from services.queue.runner import ClaimedJobRunner, Fetched

log = logging.getLogger("arq.worker")

CRON_PREFIX = "cron:"
"""ARQ's cron runs (``cron:<name>:<time>``) have no ledger row: no attempt to begin."""


class JobSlots(ClaimedJobRunner):
    """ARQ's worker whose slots free when a job hands in its end (see the module docstring)."""

    def __init__(self, *args: Any, claim_linger: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.claim_linger_s = claim_linger
        """Seconds a freed slot waits for the worker's other running jobs while due jobs wait (0: none)."""
        self.worker_id = str(self.ctx.get("worker_id") or uuid.uuid4().hex[:12])
        """Names this worker in the tokens of its claims (``<worker id>:<ARQ try>``)."""
        self._wake = asyncio.Event()  # set: the worker looks at the queue now
        self._more_waiting = False  # the last look left due jobs behind: take them when a slot frees
        self._tokens: dict[str, str] = {}  # the token of each running job's claim
        self._ends: Batcher[End, bool] = Batcher(self._finish_many, fail_together=REDIS_FAILED, name="job-ends")
        self._freed_early: set[str] = set()  # jobs whose slot was freed when they handed in their end
        self._book_held: asyncio.TimerHandle | None = None  # the attempt book is held: the release's deadline
        self._trouble = ThrottledLog(log)  # values in Redis it cannot use, said once a minute at most
        self._chores: set[asyncio.Task[None]] = set()  # clean-ups in Redis under way

    def _token(self, fetched: Fetched) -> str:
        """The token of this worker's claim of a job (the value of its in-progress key)."""
        return f"{self.worker_id}:{fetched.job_try}"

    def _start_in_slot(
        self, job_id: str, score: int, fetched: Fetched, *, since: float | None = None, handed_over: bool = False
    ) -> asyncio.Future[Any] | None:
        """Run a claimed job in a slot already taken; the slot is freed when the run ends.

        ``since`` is when the claim was sent; a job ``handed_over`` has its lease confirmed first.
        Returns the ledger start begun for it (None when there is none to begin).
        """
        leases: LeaseKeeper | None = self.ctx.get("leases")
        attempts: AttemptBook | None = self.ctx.get("attempts")
        started = None
        token = self._tokens[job_id] = self._token(fetched)
        if leases is not None:
            if handed_over:
                leases.handed_over(job_id, token)
            else:
                leases.claimed(job_id, token, since=since)
        if attempts is not None and not job_id.startswith(CRON_PREFIX):
            # The ledger start goes out now, while the job gets under way.
            started = attempts.begin(job_id, job_try=fetched.job_try)
        task = self.loop.create_task(self.run_claimed(job_id, score, fetched))
        task.add_done_callback(lambda _: self._job_task_done(job_id))
        self.tasks[job_id] = task
        return started

    def _job_task_done(self, job_id: str) -> None:
        """A job's task ended: free its slot, unless it was freed when the job handed in its end."""
        self._tokens.pop(job_id, None)
        if job_id in self._freed_early:
            self._freed_early.discard(job_id)
        else:
            self._release_sem_dec_counter_on_complete()

    def _free_slot(self) -> None:
        self.job_counter -= 1
        self.sem.release()

    def _end_handed_in(self, job_id: str) -> None:
        """A job handed in its attempt's end: free its slot now; while due jobs wait, hold the book.

        The hold lasts until the next look has sent the starts of what it claimed
        (:meth:`_release_book`), at most ``claim_linger`` and a second.
        """
        if job_id not in self.tasks or job_id in self._freed_early:
            return
        self._freed_early.add(job_id)
        if self._more_waiting and self.allow_pick_jobs and self.claim_linger_s > 0 and self._book_held is None:
            attempts: AttemptBook = self.ctx["attempts"]
            attempts.hold()
            self._book_held = self.loop.call_later(self.claim_linger_s + 1.0, self._release_book)
        self._release_sem_dec_counter_on_complete()

    def _release_book(self) -> None:
        """End the attempt book's hold, if there is one: the kept ends go in its next batch."""
        if self._book_held is not None:
            self._book_held.cancel()
            self._book_held = None
            attempts: AttemptBook = self.ctx["attempts"]
            attempts.release()

    def _lease_lost(self, fenced: Fenced) -> None:
        """A running job's lease was lost (paused, cut off, stalled past it): stop acting on the job.

        Its run is cancelled unless it handed in its end already; what it still writes is fenced
        where it lands (``services.queue.fencing``).
        """
        fencing.note(self.ctx, fenced)
        job_id = fenced.job_id
        task = self.job_tasks.get(job_id)
        if task is not None and not task.done() and job_id not in self._freed_early:
            log.warning("job %s: its lease was lost; cancelling its run", job_id)
            task.cancel()

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        """ARQ's ``finish_job``, sent in one script with the ends of concurrent jobs, fenced by the claim's token."""
        token = self._tokens.get(job_id)
        end = End(
            job_id, finish, result_data, result_timeout_s, keep_result_forever, incr_score, keep_in_progress, token
        )
        if not await self._ends.submit(end):
            fencing.note(self.ctx, Fenced("finish", job_id, "its in-progress key is gone or another claim's"))
            return
        if not finish and incr_score:
            self._wake.set()  # a retry is due later: the next look learns when, and waits until then

    async def _finish_many(self, batch: list[End]) -> list[bool]:
        ended, errors = await ends.finish_many(self.pool, queue_name=self.queue_name, ends=batch)
        # A key of the wrong type (the abort set, say) fails its own command only: the rest is done.
        for error in errors:
            self._trouble.warning(f"ends {error}", "ending jobs in Redis: %s", error)
        return ended

    def _chore(self, work: Coroutine[Any, Any, None], *, failure: str) -> None:
        """Run ``work`` in the background; log ``failure`` with the error if it fails."""
        task = self.loop.create_task(work)
        self._chores.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._chores.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.warning("%s: %s", failure, task.exception())

        task.add_done_callback(done)
