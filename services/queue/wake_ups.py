"""What the worker hears while it waits: wake-ups, and jobs handed to it by the enqueue.

The worker subscribes to two Pub/Sub channels (:meth:`WakeUps._listen`):

* **The queue's wake channel** (``services.queue.enqueue.wake_channel``): every enqueue that does
  not hand its job over publishes there in the same round trip, and the message wakes the worker
  to look at the queue at once instead of at its next poll (``services.queue.worker``).
* **Its own hand-off channel** (``services.queue.handoff``): a waiting worker with a free slot
  registers in the queue's idle set at each look, and the enqueue claims a job due now for it and
  publishes the job, fetched, there: no claim round trip between the enqueue and the start. Each
  registration holds a slot (:class:`~services.queue.handoff.Registrations`). A message may come
  before the claim that made the registration has answered (it then takes the job), name a
  registration the worker no longer holds, or come while the worker stops: such a job is given
  back (``services.queue.ends.give_back``) and waits in the queue for a claim. A message saying
  the enqueue dropped a registration (too old) frees its slot.

Redis keeps a subscriber it cannot reach, and the worker would hear nothing: a quiet connection
is pinged, one that does not answer within the call timeout ends the subscription, and the worker
subscribes anew, on a new hand-off channel (what was sent to the old one is lost with it: its
jobs run again once their short hold runs out). Polling goes on meanwhile. A message on its
channel that no enqueue wrote (anyone who can write to Redis can publish) is logged, at most once
a minute, and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio.client import PubSub
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.queue import ends, fencing, handoff, timeouts
from services.queue.enqueue import idle_workers_key, wake_channel
from services.queue.fencing import Fenced
from services.queue.handoff import Registrations
from services.queue.slots import JobSlots

log = logging.getLogger("arq.worker")


class WakeUps(JobSlots):
    """ARQ's worker that listens for wake-ups and hand-overs (see the module docstring)."""

    def __init__(self, *args: Any, call_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = self.ctx.get("settings")
        if call_timeout is None and settings is not None:
            call_timeout = timeouts.call_timeout(settings.lease_seconds)
        self.call_timeout_s = call_timeout
        """Seconds after which a Redis call gives up (``services.queue.timeouts``); None: never."""
        self._handoffs = Registrations(self.queue_name, worker_id=self.worker_id)
        self._listening = False  # subscribed to the wake channel and our hand-off channel
        self._renewed = False  # the hand-off channel changed: free the slots of the old one's registrations
        self._offering = ""  # the registration the claim in flight may make
        self._offer_dropped = False  # the enqueue dropped that registration before the claim answered
        self._early: handoff.Handoff | None = None  # a job handed to it before the claim's reply came
        self.jobs_handed_over = 0
        """Jobs the enqueue handed to this worker (``services.queue.handoff``)."""

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

    def _take_message(self, data: bytes) -> None:
        """A message on our hand-over channel: a job to start, or (not written by an enqueue) ignored."""
        try:
            given = handoff.parse(data)
        except ValueError:  # UnicodeDecodeError included
            self._trouble.warning("handoff", "ignored an unreadable hand-over message on %s", self._handoffs.channel)
            self._registration_dropped(handoff.registration_of(data))  # taken from the idle set: its slot is free
            return
        self._take_handoff(given)

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
            fetched = given.fetched
            token = self._token(fetched)
            given_back = await ends.give_back(
                self.pool,
                queue_name=self.queue_name,
                job_id=given.job_id,
                token=token,
                job_try=fetched.job_try,
                abort=fetched.abort,
            )
            if not given_back:  # its short hold ran out and another claim took it
                fencing.note(self.ctx, Fenced("give_back", given.job_id, "another claim holds the job"))

        self._chore(give_back(), failure="could not give back a handed-over job")

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
