"""ARQ's worker, woken when work arrives rather than polling faster.

ARQ's ``Worker.main`` polls the queue every ``poll_delay`` (0.5 s): a job waits 250 ms on average
before it starts, and a worker whose ``max_jobs`` slots are full waits for its next poll to take
more, however early a slot frees. :class:`QueueWorker` keeps everything else of ARQ's worker
(running a job, retries, timeouts, aborts, cron, health checks, signals, burst mode) and changes:

* **When it looks.** Between two looks it waits on an event, set by a message on the queue's wake
  channel (``services.queue.wake_ups``), by the end of a job when the last look left due jobs
  behind for lack of a free slot, by a job's end that schedules its retry (the next look learns
  when it is due), or by the clock: at the latest ``poll_delay`` later, earlier if a deferred job
  falls due sooner. Polling stays as the safety net. While due jobs wait for slots, a freed slot
  waits up to ``claim_linger`` for the worker's other running jobs to end too, and one look claims
  all their slots: jobs claimed together start, write the ledger and end together, in shared round
  trips, instead of drifting apart into small groups that never merge again.
* **How it takes jobs.** One Lua script (``services.queue.claim``) claims as many due jobs as it
  has free slots, with the commands ARQ's ``run_job`` starts with, and returns the score of the
  next deferred job: one round trip per look instead of one plus five per job. With leases
  (``ctx["leases"]``) each job is leased from its claim until its run ends.
* **When a slot frees, and how jobs end**: ``services.queue.slots``, ``services.queue.ends``.
* **How jobs reach it while it waits**: ``services.queue.wake_ups``, ``services.queue.handoff``.
* **What it does with values it cannot use.** Anyone who can write to Redis can leave a string
  where a sorted set belongs, a job of the wrong shape, an id that is not UTF-8. ARQ raises on those
  in its main loop, and the worker stops. Here each is logged (once a minute at most) and the worker
  goes on with what it can do: a queue it cannot read is looked at again with a growing pause (up
  to :data:`MAX_PAUSE_SECONDS`); an abort set or idle set it cannot use means no aborts or no
  hand-overs meanwhile; a job it cannot read is failed, an id that is not UTF-8 dropped; an error
  a job's task ends with is logged, not raised in the main loop.

The installed arq package is not patched: these are subclasses, and ``main`` repeats the few lines
of ARQ's own around the loop it replaces. The ARQ internals they rely on: ``services.queue.arq_internals``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any

from arq.connections import create_pool, log_redis_info
from arq.constants import abort_job_max_age, abort_jobs_ss, in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.utils import timestamp_ms
from redis.exceptions import ResponseError

from services.core.failures import REDIS_FAILED
from services.jobs.attempts import AttemptBook
from services.queue import claim as claims
from services.queue import ends, handoff, timeouts
from services.queue.claim import TRY_RECOUNTED, UNREADABLE_JOB, Claim
from services.queue.enqueue import RETRY_KEY_TTL_SECONDS, idle_workers_key
from services.queue.leases import LeaseKeeper
from services.queue.runner import Fetched
from services.queue.wake_ups import WakeUps

log = logging.getLogger("arq.worker")

MAX_PAUSE_SECONDS = 5.0
"""While the queue cannot be read (a key of the wrong type), the longest wait between two looks."""


class QueueWorker(WakeUps):
    """ARQ's worker that waits for work to arrive (see the module docstring); same arguments.

    ``claim_linger``: seconds a freed slot waits for the worker's other running jobs while due
    jobs wait (0: none). ``call_timeout``: seconds after which a Redis call gives up (None: a third
    of the lease, when ``ctx["settings"]`` has one; ``services.queue.timeouts``).
    """

    def __init__(self, *args: Any, claim_linger: float = 0.0, call_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, claim_linger=claim_linger, call_timeout=call_timeout, **kwargs)
        self._next_due_ms: int | None = None
        self._last_abort_check = 0.0
        self.stopped_by: signal.Signals | None = None
        """The SIGTERM or SIGINT that told this worker to stop, once one did."""

    def handle_sig(self, signum: signal.Signals) -> None:
        """ARQ's handler, remembering the signal: a worker told to stop is never started again."""
        self.stopped_by = self.stopped_by or signal.Signals(signum)
        super().handle_sig(signum)

    def handle_sig_wait_for_completion(self, signum: signal.Signals) -> None:
        """ARQ's handler with a grace period for running jobs, remembering the signal."""
        self.stopped_by = self.stopped_by or signal.Signals(signum)
        super().handle_sig_wait_for_completion(signum)

    async def main(self) -> None:
        """ARQ's ``Worker.main``, with the fixed-period poll replaced by a wait for work."""
        if self._pool is None and self.call_timeout_s is not None and self.redis_settings is not None:
            self._pool = await timeouts.create_redis(
                self.redis_settings,
                call_seconds=self.call_timeout_s,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        log.info("Starting worker for %d functions: %s", len(self.functions), ", ".join(self.functions))
        await log_redis_info(self.pool, log.info)
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        attempts: AttemptBook | None = self.ctx.get("attempts")
        if attempts is not None:
            attempts.on_end = self._end_handed_in
        leases: LeaseKeeper | None = self.ctx.get("leases")
        if leases is not None:
            leases.on_lost = self._lease_lost
        listener = asyncio.create_task(self._listen(), name="wakeup-listener")
        pause = 0.0
        try:
            while True:
                self._wake.clear()
                try:
                    await self._poll_iteration()
                except ResponseError as exc:  # a key of the wrong type (the queue, say): not ours to repair
                    pause = min(max(pause * 2, 0.5), MAX_PAUSE_SECONDS)
                    self._trouble.warning(
                        "queue", "cannot use the queue %s: %s; looking again every %.0fs at most",
                        self.queue_name, exc, MAX_PAUSE_SECONDS,
                    )  # fmt: skip
                    await asyncio.sleep(pause)
                    continue
                finally:
                    self._release_book()  # in case the iteration did not get to its claim
                if pause:
                    pause = 0.0
                    self._trouble.over("queue", "the queue %s can be used again", self.queue_name)
                if self.burst:
                    if 0 <= self.max_burst_jobs <= self._jobs_started():
                        await asyncio.gather(*self.tasks.values())
                        return
                    if await self.pool.zcard(self.queue_name) == 0:
                        await asyncio.gather(*self.tasks.values())
                        return
                await self._wait_for_work()
        finally:
            self._release_book()
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            if self._handoffs.registered is not None:
                with contextlib.suppress(*REDIS_FAILED):
                    await self.pool.zrem(idle_workers_key(self.queue_name), self._handoffs.registered)

    async def _wait_for_work(self) -> None:
        """Until woken, the next deferred job falls due, or ``poll_delay`` passes."""
        timeout = self.poll_delay_s
        if self._next_due_ms is not None:
            timeout = min(timeout, max(0.0, (self._next_due_ms - timestamp_ms()) / 1000))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        if self._more_waiting and self.claim_linger_s > 0 and self.allow_pick_jobs:
            await self._let_running_jobs_end()

    async def _let_running_jobs_end(self) -> None:
        """While due jobs wait for slots: up to ``claim_linger_s`` for this worker's running jobs to end.

        Each job that ends wakes the worker (:meth:`_release_sem_dec_counter_on_complete`); the next
        look then claims every slot freed meanwhile, so the jobs that ran together go on together.
        Claimed as each slot frees, a worker's jobs drift apart into small groups that never merge
        again (two workers draining end up claiming nine and one instead of ten: twice the claims,
        commits and MULTI/EXECs per job).
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.claim_linger_s):
                while self._running_jobs() > 0:
                    self._wake.clear()
                    await self._wake.wait()

    def _drop_unreadable_id(self, raw_id: bytes, *, where: str) -> None:
        """Remove an id that is not UTF-8 (no job of ours has one) from the queue and the abort set, with its keys."""
        shown = raw_id[:64]
        self._trouble.warning(f"id {shown!r}", "dropped the id %r found in %s: it is not UTF-8", shown, where)
        dropped = ends.drop(self.pool, queue_name=self.queue_name, raw_id=raw_id)
        self._chore(dropped, failure=f"could not drop the id {shown!r}")

    def _note_broken_sets(self, claim: Claim) -> None:
        """Say what the claim could not use (see ``services.queue.claim``), and when it can again."""
        idle = idle_workers_key(self.queue_name)
        if claim.idle_set_broken:
            self._trouble.warning("idle-set", "the idle set %s is not a sorted set: no hand-overs until it is", idle)
        elif claim.registered:
            self._trouble.over("idle-set", "the idle set %s is used again", idle)
        if claim.abort_set_broken:
            self._trouble.warning("abort-set", "the abort set %s is not a sorted set: no job is aborted", abort_jobs_ss)

    async def _poll_iteration(self) -> None:
        """ARQ's ``_poll_iteration``, taking jobs with one script and checking aborts at most every poll delay."""
        count = self.queue_read_limit
        if self.burst and self.max_burst_jobs >= 0:
            remaining = self.max_burst_jobs - self._jobs_started()
            if remaining < 1:
                return
            count = min(remaining, count)
        if self._renewed:
            await self._free_renewed_slots()
        held = 1 if self._handoffs.registered is not None else 0  # freed if the claim withdraws it
        try:
            if self.allow_pick_jobs and self.job_counter - held < self.max_jobs:
                await self._claim_and_start(room=min(self.max_jobs - self.job_counter, count), count=count)
            else:  # no room: look again when a job ends (or at the next poll)
                self._next_due_ms, self._more_waiting = None, self.allow_pick_jobs
        finally:
            self._release_book()  # the claimed jobs' starts are on their way: the kept ends join them
        now = asyncio.get_running_loop().time()
        if self.allow_abort_jobs and now - self._last_abort_check >= self.poll_delay_s:
            self._last_abort_check = now
            await self._cancel_aborted_jobs()
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                self._note_error(job_id, task)
        await self.heart_beat()

    def _note_error(self, job_id: str, task: asyncio.Task[Any]) -> None:
        """Log the error a job's task ended with (ARQ raises it in its main loop: one job would stop the worker).

        The job's own errors are its outcome; what ends here is the worker's bookkeeping around it, in
        Redis mostly (its end while Redis is away: its lease runs out and it runs again, and the
        ledger keeps its effects from being repeated).
        """
        error = None if task.cancelled() else task.exception()
        if isinstance(error, REDIS_FAILED):
            self._trouble.warning(f"end {type(error).__name__}", "job %s could not end in Redis: %s", job_id, error)
        elif error is not None:
            log.error("job %s ended with an error of the worker's", job_id, exc_info=error)

    async def _cancel_aborted_jobs(self) -> None:
        """ARQ's: cancel the running jobs named in the abort set. An abort set of the wrong type, or an
        id in it that is not UTF-8, is logged (and the id dropped) instead of stopping the worker."""
        try:
            async with self.pool.pipeline(transaction=True) as pipe:
                pipe.zrange(abort_jobs_ss, start=0, end=-1)
                pipe.zremrangebyscore(abort_jobs_ss, min=timestamp_ms() + abort_job_max_age, max=float("inf"))
                abort_job_ids, _ = await pipe.execute()
        except ResponseError as exc:
            self._trouble.warning(
                "abort-set", "cannot read the abort set %s: %s; no job is aborted", abort_jobs_ss, exc
            )
            return
        self._trouble.over("abort-set", "the abort set %s is read again", abort_jobs_ss)
        aborted: set[str] = set()
        for raw_id in abort_job_ids:
            try:
                job_id = raw_id.decode()
            except UnicodeDecodeError:
                self._drop_unreadable_id(raw_id, where=abort_jobs_ss)
                continue
            task = self.job_tasks.get(job_id)
            if task is not None:
                aborted.add(job_id)
                task.cancel()
        if aborted:
            self.aborting_tasks.update(aborted)
            await self.pool.zrem(abort_jobs_ss, *aborted)

    async def _claim_and_start(self, *, room: int, count: int) -> None:
        now = timestamp_ms()
        sent = time.monotonic()  # the leases of the jobs claimed hold from here
        leases: LeaseKeeper | None = self.ctx.get("leases")
        ttl_ms = int(self.in_progress_timeout_s * 1000) if leases is None else leases.lease_ms
        registrations = self._handoffs
        withdraw = registrations.registered or ""
        offer = ""
        if self._listening and not self.burst:  # a waiting worker takes jobs handed to it
            # With leases, a handed-over job is held briefly until the worker confirms it.
            hold_ms = ttl_ms if leases is None else min(ttl_ms, handoff.HOLD_MS)
            max_age_ms = int(max(4 * self.poll_delay_s, 2.0) * 1000)  # made anew at each look
            offer = registrations.offer(lease_ms=hold_ms, aborts=self.allow_abort_jobs, max_age_ms=max_age_ms)
        abort_set = abort_jobs_ss if self.allow_abort_jobs else ""
        args: list[str | int] = [now, room, ttl_ms, count, in_progress_key_prefix, job_key_prefix, retry_key_prefix]
        args += [RETRY_KEY_TTL_SECONDS, abort_set, idle_workers_key(self.queue_name), withdraw, offer]
        args.append(f"{self.worker_id}:")
        self._offering, self._early, self._offer_dropped = offer, None, False
        try:
            claim = Claim.of(await claims.SCRIPT(self.pool, [self.queue_name], args))
        finally:
            self._offering = ""
        self._next_due_ms, self._more_waiting = claim.next_due_ms, claim.left
        self._note_broken_sets(claim)
        if withdraw:
            registrations.registered = None
            if claim.withdrawn:  # else a hand-over took it: its slot stays held for the job on its way
                registrations.holding.discard(withdraw)
                self._free_slot()
        for job in claim.jobs:
            try:
                job_id = job.raw_id.decode()
            except UnicodeDecodeError:
                self._drop_unreadable_id(job.raw_id, where=self.queue_name)
                continue
            if job.flags & UNREADABLE_JOB:
                self._trouble.warning(job_id, "job %s: its job key is not a string; failing it", job_id)
            if job.flags & TRY_RECOUNTED:
                self._trouble.warning(job_id, "job %s: its try counter held no number; counted afresh", job_id)
            fetched = Fetched(
                data=job.data, job_try=job.job_try, abort=job.abort, unreadable=bool(job.flags & UNREADABLE_JOB)
            )
            await self.sem.acquire()  # never blocks: room <= free slots
            self.job_counter += 1
            self._start_in_slot(job_id, job.score, fetched, since=sent)
        registered = claim.registered
        if registered and self._offer_dropped and self._early is None:
            registered = False  # dropped as too old before this answer came (clocks apart): holds nothing
        if registered:
            await self.sem.acquire()  # never blocks: the script registers only with room left
            self.job_counter += 1
            early, self._early = self._early, None
            if early is None:
                registrations.holding.add(offer)
                registrations.registered = offer
            else:  # already taken by a hand-over that arrived before this reply
                self._run_handed_over(early)
        elif self._early is not None:  # cannot be: a hand-over takes only a registration made
            self._give_back(self._early, why="the claim did not register it")
            self._early = None

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        if self._more_waiting:
            self._wake.set()  # a slot is free and due jobs wait: look now, not at the next poll
        elif self._handoffs.registered is None and self._listening and self.allow_pick_jobs and not self.burst:
            self._wake.set()  # a slot is free: register for hand-overs now, not at the next poll
