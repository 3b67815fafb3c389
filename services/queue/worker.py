"""ARQ's worker, woken when work arrives rather than polling faster.

ARQ's ``Worker.main`` polls the queue every ``poll_delay`` (0.5 s): a job waits 250 ms on average
before it starts, and a worker whose ``max_jobs`` slots are full waits for its next poll to take
more, however early a slot frees. :class:`QueueWorker` keeps everything else of ARQ's worker (running a
job, retries, timeouts, aborts, cron, health checks, signals, burst mode) and changes two things:

* **When it looks.** Between two looks it waits on an event, set by a Pub/Sub subscription to the
  queue's wake channel (``services.queue.enqueue.wake_channel``; every enqueue publishes there in the same
  round trip), by the end of a job when the last look left due jobs behind for lack of a free
  slot, by a job's end that schedules its retry (the next look learns when it is due), or by the
  clock: at the latest ``poll_delay`` later, earlier if a deferred job (a retry,
  ``defer_by``, a cron run) falls due sooner. Polling stays as the safety net. While due jobs
  wait for slots, a freed slot does not send the worker to look at once if other jobs of its own
  are still running: it waits up to ``claim_linger`` for them to end too, and one look claims all
  their slots. Jobs claimed together start, write the ledger and end together, in shared round
  trips; claimed as each slot frees, a worker's jobs drift apart into small groups that never
  merge again (two workers draining end up claiming nine and one instead of ten: twice the
  claims, commits and MULTI/EXECs per job).
* **When a slot frees.** When the job hands in its attempt's end (``AttemptBook.on_end``): its
  own work is over, and what remains (the ledger's commit, ARQ's end in Redis) is the worker's
  bookkeeping. While due jobs wait, the attempt book keeps those ends (``AttemptBook.hold``) until
  the look that follows has claimed the next jobs and sent their starts: the ends of a group and
  the starts of the next share one statement and one commit, and the claim's round trip overlaps
  the jobs' ends instead of following them. User code still runs in at most ``max_jobs`` jobs at
  once; a job's task lives on until its end is written.
* **How it takes jobs.** One Lua script (``services.queue.claim``) reads the due job ids and
  claims as many as it has free slots, setting ARQ's ``arq:in-progress:<id>`` key on each as
  ARQ's WATCH/MULTI does (a job running elsewhere is skipped), does for each the commands ARQ's
  ``run_job`` starts with (read the job, count the try, take it off the abort set:
  ``services.queue.runner``), and returns the score of the next deferred job: one round trip
  per look instead of one plus five per job. When the worker holds leases
  (``services.queue.leases``, in ``ctx["leases"]``), the key is set with the lease's TTL and the
  job is leased from its claim until its run ends: no round trip per job to cut the TTL.
* **How jobs reach it when it waits.** A waiting worker with a free slot registers in the queue's
  idle set, and the enqueue claims a job due now for it and publishes the job on the worker's own
  channel (``services.queue.handoff``): no claim round trip between the enqueue and the start.
* **How it ends jobs.** ARQ's ``finish_job`` sends each job's end (its result, the deletion of
  its keys, its removal from the queue) in a MULTI/EXEC of its own. Here the ends of jobs that
  finish while one is being sent go together into the next MULTI/EXEC (``services.core.batching``):
  the same commands, one round trip for all of them.
* **What it does with values it cannot use.** Anyone who can write to Redis can leave a string
  where a sorted set belongs, a job of the wrong shape, an id that is not UTF-8, a message on a
  worker's channel that no enqueue wrote. ARQ raises on those in its main loop, and the worker
  stops. Here each is logged (once a minute at most, ``services.core.throttled_log``) and the worker
  goes on with what it can do: a queue it cannot read is looked at again with a growing pause (up
  to :data:`MAX_PAUSE_SECONDS`) until it is fixed; an abort set or idle set it cannot use means no
  aborts or no hand-overs meanwhile; a job it cannot read is failed and removed, an id that is not
  UTF-8 dropped, an unreadable message ignored; an error a job's task ends with is logged, not
  raised in the main loop.

The installed arq package is not patched: this is a subclass, and ``main`` repeats the few lines
of ARQ's own around the loop it replaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

from arq.connections import create_pool, log_redis_info
from arq.constants import (
    abort_job_max_age,
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.utils import timestamp_ms, to_ms
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.core.batching import Batcher
from services.core.throttled_log import ThrottledLog
from services.jobs.attempts import AttemptBook
from services.queue import claim as claims
from services.queue import fencing, handoff, timeouts
from services.queue.claim import TRY_RECOUNTED, UNREADABLE_JOB, Claim
from services.queue.enqueue import RETRY_KEY_TTL_SECONDS, Script, idle_workers_key, wake_channel
from services.queue.fencing import Fenced
from services.queue.handoff import Registrations
from services.queue.leases import LeaseKeeper
from services.queue.runner import ClaimedJobRunner, Fetched

log = logging.getLogger("arq.worker")

CRON_PREFIX = "cron:"
"""ARQ's cron runs (``cron:<name>:<time>``) have no ledger row: no attempt to begin."""

MAX_PAUSE_SECONDS = 5.0
"""While the queue cannot be read (a key of the wrong type), the longest wait between two looks."""


# ARQ's finish_job (arq 0.28) for each job in turn, while the job's in-progress key holds the
# claim's token ('' for none: unconditional, as ARQ's). ARGV: the queue, the abort set, the
# in-progress, result, retry and job key prefixes, then per job: id, token, '1' if finished, result
# ('' for none), the result's expiry (ms, '' for none), the score to add for a retry (''), how long
# to keep the in-progress key (ms, '' to delete it). Returns per job 1 if ended, 0 if fenced: the key
# is gone or another claim's (or not a string), and nothing was written; then the errors of the
# commands that met a key of the wrong type (the queue or the abort set): each fails alone, the rest
# is done. A retry's score is added only to a job still in the queue (ZINCRBY would add a missing one).
_FINISH = Script(b"""
local ended = {}
local errors = {}
local function try(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err ~= nil then
    errors[#errors + 1] = reply.err
    return false
  end
  return reply
end
for i = 7, #ARGV, 7 do
  local id = ARGV[i]
  local key = ARGV[3] .. id
  if ARGV[i + 1] ~= '' and redis.pcall('GET', key) ~= ARGV[i + 1] then
    ended[#ended + 1] = 0
  else
    if ARGV[i + 6] == '' then
      redis.call('DEL', key)
    else
      redis.call('PEXPIRE', key, ARGV[i + 6])
    end
    if ARGV[i + 2] == '1' then
      if ARGV[i + 3] ~= '' then
        if ARGV[i + 4] == '' then
          redis.call('SET', ARGV[4] .. id, ARGV[i + 3])
        else
          redis.call('SET', ARGV[4] .. id, ARGV[i + 3], 'PX', ARGV[i + 4])
        end
      end
      redis.call('DEL', ARGV[5] .. id, ARGV[6] .. id)
      try('ZREM', ARGV[2], id)
      try('ZREM', ARGV[1], id)
    elseif ARGV[i + 5] ~= '' and try('ZSCORE', ARGV[1], id) then
      try('ZINCRBY', ARGV[1], ARGV[i + 5], id)
    end
    ended[#ended + 1] = 1
  end
end
return {ended, errors}
""")

# Undo a hand-over (services.queue.handoff) while the job's in-progress key holds its token.
# KEYS[1]: the in-progress key, KEYS[2]: the retry key, KEYS[3]: the abort set. ARGV: the token,
# the try count before the hand-over ('0': none), the retry key's TTL (s), '1' to put the job back
# on the abort set, now (ms), the job's id, the wake channel. Returns 1 if given back, 0 if fenced.
_GIVE_BACK = Script(b"""
if redis.pcall('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
if ARGV[2] == '0' then
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
end
if ARGV[4] == '1' then
  redis.pcall('ZADD', KEYS[3], ARGV[5], ARGV[6])  -- an abort set of the wrong type: the job is given back all the same
end
redis.call('PUBLISH', ARGV[7], 1)
return 1
""")


@dataclass(frozen=True)
class _End:
    """The arguments of ARQ's ``Worker.finish_job`` for one job, and its claim's token."""

    job_id: str
    finish: bool
    result_data: bytes | None
    result_timeout_s: float | None
    keep_result_forever: bool
    incr_score: int | None
    keep_in_progress: float | None
    token: str | None


class QueueWorker(ClaimedJobRunner):
    """ARQ's worker that waits for work to arrive (see the module docstring); same arguments."""

    def __init__(self, *args: Any, claim_linger: float = 0.0, call_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.claim_linger_s = claim_linger
        """Seconds a freed slot waits for the worker's other running jobs while due jobs wait (0: none)."""
        settings = self.ctx.get("settings")
        if call_timeout is None and settings is not None:
            call_timeout = timeouts.call_timeout(settings.lease_seconds)
        self.call_timeout_s = call_timeout
        """Seconds after which a Redis call gives up (``services.queue.timeouts``); None: never."""
        self._wake = asyncio.Event()
        self._more_waiting = False  # the last look left due jobs behind: take them when a slot frees
        self._next_due_ms: int | None = None
        self._last_abort_check = 0.0
        self.worker_id = str(self.ctx.get("worker_id") or uuid.uuid4().hex[:12])
        """Names this worker in the tokens of its claims (``<worker id>:<ARQ try>``)."""
        self._tokens: dict[str, str] = {}  # the token of each running job's claim
        self._ends: Batcher[_End, bool] = Batcher(
            self._finish_many, fail_together=(RedisError, OSError), name="job-ends"
        )
        self._handoffs = Registrations(self.queue_name, worker_id=self.worker_id)
        self._listening = False  # subscribed to the wake channel and our hand-off channel
        self._freed_early: set[str] = set()  # jobs whose slot was freed when they handed in their end
        self._book_held: asyncio.TimerHandle | None = None  # the attempt book is held: the release's deadline
        self._renewed = False  # the hand-off channel changed: free the slots of the old one's registrations
        self._offering = ""  # the registration the claim in flight may make
        self._offer_dropped = False  # the enqueue dropped that registration before the claim answered
        self._early: handoff.Handoff | None = None  # a job handed to it before the claim's reply came
        self.jobs_handed_over = 0
        """Jobs the enqueue handed to this worker (``services.queue.handoff``)."""
        self._trouble = ThrottledLog(log)  # values in Redis it cannot use, said once a minute at most
        self._chores: set[asyncio.Task[None]] = set()  # clean-ups in Redis under way
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
                with contextlib.suppress(RedisError, OSError):
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
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.claim_linger_s):
                while self._running_jobs() > 0:
                    self._wake.clear()
                    await self._wake.wait()

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

    def _release_book(self) -> None:
        """End the attempt book's hold, if there is one: the kept ends go in its next batch."""
        if self._book_held is not None:
            self._book_held.cancel()
            self._book_held = None
            attempts: AttemptBook = self.ctx["attempts"]
            attempts.release()

    def _job_task_done(self, job_id: str) -> None:
        """A job's task ended: free its slot, unless it was freed when the job handed in its end."""
        self._tokens.pop(job_id, None)
        if job_id in self._freed_early:
            self._freed_early.discard(job_id)
        else:
            self._release_sem_dec_counter_on_complete()

    def _running_jobs(self) -> int:
        """Slots taken by jobs (not held for a hand-over on its way)."""
        return self.job_counter - len(self._handoffs.holding)

    async def _listen(self) -> None:
        """Wake on the wake channel, take hand-overs on our own; resubscribe after an outage."""
        channel = wake_channel(self.queue_name)
        pause = 0.1
        while True:
            try:
                async with self.pool.pubsub(ignore_subscribe_messages=True) as pubsub:
                    self._handoffs.renew_channel()  # what was sent to an earlier channel is lost with it
                    mine = self._handoffs.channel
                    await pubsub.subscribe(channel, mine)
                    self._listening = self._renewed = True
                    self._wake.set()  # jobs may have arrived while we were not listening
                    pause = 0.1
                    async for message in self._messages(pubsub):
                        if message["channel"] != mine.encode():
                            self._wake.set()
                        elif handoff.is_dropped(message["data"]):
                            self._registration_dropped(handoff.registration_of(message["data"]))
                        else:
                            self._take_message(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: polling goes on; the main loop notices too
                self._listening = False  # no registration while nothing listens on our channel
                log.warning("wake-up channel lost (%s); resubscribing in %.1fs", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.poll_delay_s or 1.0)
            finally:
                self._listening = False

    def _take_message(self, data: bytes) -> None:
        """A message on our hand-over channel: a job to start, or (not written by an enqueue) ignored."""
        try:
            given = handoff.parse(data)
        except ValueError:  # UnicodeDecodeError included
            self._trouble.warning("handoff", "ignored an unreadable hand-over message on %s", self._handoffs.channel)
            self._registration_dropped(handoff.registration_of(data))  # taken from the idle set: its slot is free
            return
        self._take_handoff(given)

    async def _messages(self, pubsub: PubSub) -> AsyncIterator[dict[str, Any]]:
        """The subscription's messages; a quiet connection is pinged, and one that does not answer fails.

        Redis keeps a subscriber it cannot reach (a worker cut off without a word) and the worker
        hears nothing either: a ping unanswered within the call timeout ends the subscription, and
        the worker subscribes anew (on a new channel) once Redis answers.
        """
        quiet = self.call_timeout_s or 1.0  # a ping after this long without a message
        loop = asyncio.get_running_loop()
        heard, pinged = loop.time(), None
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=quiet / 2)
            now = loop.time()
            if message is not None:
                heard, pinged = now, None
                if message["type"] == "message":
                    yield message
            elif pinged is not None:
                if self.call_timeout_s is not None and now - pinged > self.call_timeout_s:
                    raise RedisTimeoutError(f"no answer on the wake-up channel for {now - pinged:.1f}s")
            elif now - heard >= quiet:
                await pubsub.ping()
                pinged = now

    def _registration_dropped(self, registration: str) -> None:
        """The enqueue dropped one of our registrations (too old, or taken by an unreadable message): free its slot."""
        registrations = self._handoffs
        if registration == self._offering:  # the claim that makes it has not answered yet
            self._offer_dropped = True
            return
        if registration in registrations.holding:
            registrations.holding.discard(registration)
            if registrations.registered == registration:
                registrations.registered = None
            self._free_slot()
            self._wake.set()  # register anew

    def _take_handoff(self, given: handoff.Handoff) -> None:
        """Start a job the enqueue claimed for us, in the slot its registration held."""
        registrations = self._handoffs
        if self._offering and given.registration == self._offering:
            self._early = given  # the claim that registered it has not answered yet: it takes the job
            return
        if given.registration not in registrations.holding:  # not a registration of ours now
            self._give_back(given, why="its registration is no longer held")
            return
        registrations.holding.discard(given.registration)
        if registrations.registered == given.registration:
            registrations.registered = None
        self._run_handed_over(given)

    def _run_handed_over(self, given: handoff.Handoff) -> None:
        """Start a handed-over job in the slot its registration held (give it back when stopping)."""
        if not self.allow_pick_jobs and not given.fetched.abort:  # stopping: another worker runs it
            self._free_slot()
            self._give_back(given, why="the worker is stopping")
            return
        self.jobs_handed_over += 1
        metrics = self.ctx.get("metrics")
        if metrics is not None:
            metrics.handed_over.inc()
        started = self._start_in_slot(given.job_id, given.score, given.fetched, handed_over=True)
        # Look again (and register again if room is left) once the job's start is written: the
        # claim's round trip does not delay the start.
        if started is None:
            self._wake.set()
        else:
            started.add_done_callback(lambda _: self._wake.set())

    def _give_back(self, given: handoff.Handoff, *, why: str) -> None:
        """Undo what the enqueue did to hand ``given`` over; the job waits in the queue for a claim."""
        log.info("giving back handed-over job %s: %s", given.job_id, why)

        async def give_back() -> None:
            keys = [in_progress_key_prefix + given.job_id, retry_key_prefix + given.job_id, abort_jobs_ss]
            args: list[str | int] = [self._token(given.fetched), given.fetched.job_try - 1, RETRY_KEY_TTL_SECONDS]
            args += [int(given.fetched.abort), timestamp_ms(), given.job_id, wake_channel(self.queue_name)]
            if not await _GIVE_BACK(self.pool, keys, args):  # its short hold ran out and another claim took it
                fencing.note(self.ctx, Fenced("give_back", given.job_id, "another claim holds the job"))

        self._chore(give_back(), failure="could not give back a handed-over job")

    def _chore(self, work: Coroutine[Any, Any, None], *, failure: str) -> None:
        """Run ``work`` in the background; log ``failure`` with the error if it fails."""
        task = self.loop.create_task(work)
        self._chores.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._chores.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.warning("%s: %s", failure, task.exception())

        task.add_done_callback(done)

    def _drop_unreadable_id(self, raw_id: bytes, *, where: str) -> None:
        """Remove an id that is not UTF-8 (no job of ours has one) from the queue and the abort set, with its keys."""
        shown = raw_id[:64]
        self._trouble.warning(f"id {shown!r}", "dropped the id %r found in %s: it is not UTF-8", shown, where)

        async def drop() -> None:
            keys = [prefix.encode() + raw_id for prefix in (in_progress_key_prefix, retry_key_prefix, job_key_prefix)]
            async with self.pool.pipeline(transaction=True) as tr:
                tr.zrem(self.queue_name, raw_id)
                tr.zrem(abort_jobs_ss, raw_id)
                tr.delete(*keys)
                await tr.execute(raise_on_error=False)  # an abort set of the wrong type: the rest is done

        self._chore(drop(), failure=f"could not drop the id {shown!r}")

    def _note_broken_sets(self, claim: Claim) -> None:
        """Say what the claim could not use (see ``services.queue.claim``), and when it can again."""
        idle = idle_workers_key(self.queue_name)
        if claim.idle_set_broken:
            self._trouble.warning("idle-set", "the idle set %s is not a sorted set: no hand-overs until it is", idle)
        elif claim.registered:
            self._trouble.over("idle-set", "the idle set %s is used again", idle)
        if claim.abort_set_broken:
            self._trouble.warning("abort-set", "the abort set %s is not a sorted set: no job is aborted", abort_jobs_ss)

    def _free_slot(self) -> None:
        self.job_counter -= 1
        self.sem.release()

    async def _free_renewed_slots(self) -> None:
        """After a (re)subscription: withdraw the registration, free every slot registrations held."""
        self._renewed = False
        registrations = self._handoffs
        if registrations.registered is not None:
            with contextlib.suppress(ResponseError):  # an idle set of the wrong type holds no registration
                await self.pool.zrem(idle_workers_key(self.queue_name), registrations.registered)
            registrations.registered = None
        for _ in registrations.holding:
            self._free_slot()
        registrations.holding.clear()

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
        if isinstance(error, RedisError | OSError):
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

    def _token(self, fetched: Fetched) -> str:
        """The token of this worker's claim of a job (the value of its in-progress key)."""
        return f"{self.worker_id}:{fetched.job_try}"

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
        end = _End(
            job_id, finish, result_data, result_timeout_s, keep_result_forever, incr_score, keep_in_progress, token
        )
        if not await self._ends.submit(end):
            fencing.note(self.ctx, Fenced("finish", job_id, "its in-progress key is gone or another claim's"))
            return
        if not finish and incr_score:
            self._wake.set()  # a retry is due later: the next look learns when, and waits until then

    async def _finish_many(self, ends: list[_End]) -> list[bool]:
        # The commands of ARQ's finish_job (arq 0.28), for each job in turn, in one script (_FINISH).
        args: list[str | bytes | int] = [self.queue_name, abort_jobs_ss, in_progress_key_prefix, result_key_prefix]
        args += [retry_key_prefix, job_key_prefix]
        for end in ends:
            expire = None if end.keep_result_forever else end.result_timeout_s
            args += [
                end.job_id,
                end.token or "",
                int(end.finish),
                end.result_data if end.finish and end.result_data else b"",
                "" if expire is None else to_ms(expire) or "",
                end.incr_score or "",
                "" if end.keep_in_progress is None else to_ms(end.keep_in_progress) or 0,
            ]
        ended, errors = await _FINISH(self.pool, [], args)
        # A key of the wrong type (the abort set, say) fails its own command only: the rest is done.
        for error in {raw.decode(errors="replace") for raw in errors}:
            self._trouble.warning(f"ends {error}", "ending jobs in Redis: %s", error)
        return [bool(flag) for flag in ended]

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        if self._more_waiting:
            self._wake.set()  # a slot is free and due jobs wait: look now, not at the next poll
        elif self._handoffs.registered is None and self._listening and self.allow_pick_jobs and not self.burst:
            self._wake.set()  # a slot is free: register for hand-overs now, not at the next poll
