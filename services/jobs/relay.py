"""The relay: jobs enqueued inside applications' transactions reach Redis as soon as they commit.

``SELECT afterword_enqueue(...)`` (migration 0012) writes a job's row in the caller's transaction
and notifies ``afterword_enqueued`` with its id; Postgres delivers the notification at the commit,
and never for a transaction that rolled back. Every worker runs one :class:`Relay` (started by
``on_startup``, ``services.jobs.setup``): one Postgres connection of its own that listens there.
The ids heard while a batch is on its way gather, and go together in the next one: one read of
their rows (``services.ledger.relay.waiting``: those still ``queued`` or ``deferred`` and never
started) and one Redis round trip that queues them (``services.queue.enqueue``), handing a job due
now to a waiting worker. With several workers every relay hears every id; the enqueue skips an id
ARQ already knows (its job or result key exists), so a job is queued once, and a run that finds
its row already ended does nothing.

Nothing is lost while no relay listens (every worker stopped, the connection lost): on each
(re)connection, once it listens, the relay queues the rows written in the last
``catch_up_seconds`` that are still waiting (``services.ledger.relay.recent``), and the recovery
sweep queues older ones (``services.jobs.sweeper``: rows unchanged for ``SWEEP_IDLE_SECONDS``, every
``SWEEP_EVERY_SECONDS``). A connection that died without a word is found by a probe every
``check_seconds``. If Redis cannot be reached the rows stay ``queued`` for the sweep, as the
gateway's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from redis.asyncio import Redis

from services.core.failures import REDIS_FAILED
from services.core.listening import ListeningConnection
from services.core.serialization import serialize
from services.ledger import relay as waiting_jobs
from services.queue import enqueue as queue

log = logging.getLogger("afterword.relay")

LISTENER_NAME = "afterword-relay"
"""The ``application_name`` of the relay's connection, as ``pg_stat_activity`` shows it."""

MAX_BATCH = 512
"""At most this many jobs are read and queued in one round trip each."""

CATCH_UP_LIMIT = 10_000
"""At most this many rows are queued by the catch-up of one (re)connection; the sweep takes the rest."""


class Relay(ListeningConnection):
    """One listening connection; the jobs it hears of, queued in batches."""

    def __init__(
        self,
        dsn: str,
        redis: Redis,
        *,
        queue_name: str,
        catch_up_seconds: float,
        call_seconds: float = 5.0,
        reconnect_seconds: float = 1.0,
        check_seconds: float = 10.0,
    ) -> None:
        super().__init__(what="relay", log=log, reconnect_seconds=reconnect_seconds)
        self._dsn = dsn
        self._redis = redis
        self._queue_name = queue_name
        self.catch_up_seconds = catch_up_seconds
        self._call_seconds = call_seconds
        self._check_seconds = check_seconds
        self._heard: list[str] = []
        self._wake = asyncio.Event()
        self.queued = 0
        """How many jobs this relay put on the queue (ids ARQ did not know yet)."""

    def _hear(
        self, connection: asyncpg.Connection | PoolConnectionProxy, pid: int, channel: str, payload: object
    ) -> None:
        self._heard.append(str(payload))
        self._wake.set()

    async def _listen(self, failures: int) -> None:
        """Listen, catch up, then queue what is heard until the connection is lost."""
        connection = await asyncpg.connect(
            self._dsn,
            timeout=self._call_seconds,
            command_timeout=self._call_seconds,
            server_settings={"application_name": LISTENER_NAME},
        )
        lost = asyncio.Event()

        def on_lost(_: object) -> None:
            lost.set()
            self._wake.set()

        connection.add_termination_listener(on_lost)
        try:
            await connection.add_listener(waiting_jobs.CHANNEL, self._hear)
            # Listening from here on: what committed before is in the catch-up, what commits after is heard.
            missed = await waiting_jobs.recent(connection, within_seconds=self.catch_up_seconds, limit=CATCH_UP_LIMIT)
            await self._queue(missed)
            self._connected.set()
            self._said_again(failures)
            loop = asyncio.get_running_loop()
            next_check = loop.time() + self._check_seconds
            while not lost.is_set():
                if self._heard:
                    batch, self._heard = self._heard[:MAX_BATCH], self._heard[MAX_BATCH:]
                    try:
                        jobs = await waiting_jobs.waiting(connection, batch)
                    except BaseException:
                        self._heard[:0] = batch  # read again after the reconnection (its catch-up has them too)
                        raise
                    await self._queue(jobs)
                    continue
                if loop.time() >= next_check:  # a connection that died without a word only shows when used
                    await connection.execute("SELECT 1")
                    next_check = loop.time() + self._check_seconds
                self._wake.clear()
                if not self._heard and not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, next_check - loop.time())):
                            await self._wake.wait()
            log.warning("relay connection lost, reconnecting")
        finally:
            self._connected.clear()
            if not connection.is_closed():
                connection.terminate()

    async def _queue(self, jobs: Sequence[waiting_jobs.Waiting]) -> None:
        """Queue ``jobs`` (a job ARQ knows already is skipped); Redis errors leave them to the sweep."""
        for start in range(0, len(jobs), MAX_BATCH):
            chunk = jobs[start : start + MAX_BATCH]
            entries = queue.entries_of(chunk)
            try:
                queued = await queue.enqueue(self._redis, entries, queue_name=self._queue_name, serializer=serialize)
            except REDIS_FAILED as exc:
                log.warning("redis unavailable; %d job(s) stay in the ledger for the sweep: %s", len(chunk), exc)
                return
            self.queued += sum(queued)
