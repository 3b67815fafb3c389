"""Live job status: one Postgres LISTEN connection, fanned out to the requests waiting on a job.

Every change of a watched job's status makes Postgres announce it on :data:`CHANNEL` (the
trigger of ``migrations/0008_notify_watched_jobs_only.sql``), with the job's id, status, tries,
error and the time of the change. The gateway's lifespan starts one :class:`JobEvents` hub, which
holds the only listening connection of the process and hands each notification to the in-process
subscribers of that job: the long-polls of ``GET /jobs/{id}?wait=N`` and the streams of
``GET /jobs/{id}/events``. The statements it runs (reads, watches) and the reading of a
notification are the ledger's, in ``services.ledger.events``; this module holds the connection.

Only watched jobs are announced: a transaction that notifies holds an instance-wide lock through
its commit, which would serialize every worker's commits. A waiter subscribes, then reads the job
with :meth:`Subscription.read`, which registers the watch in Postgres (``job_watchers``, under the
listening connection's backend pid) in the same transaction as the read. A change committed in
between is not lost: it is either in what the read returns or in the subscription's queue. A
change that the read already showed may come again as a notification; it is recognised by its
time (``at``, the row's ``updated_at``, which only grows for one job) and skipped. A subscription
that closes deletes its watch; the hub also deletes, every ``check_seconds`` (10 s), the watches
of listening connections that no longer exist (a gateway that died).

When the listening connection is down, the hub reconnects every second and the waiters read the
ledger every :attr:`JobEvents.poll_seconds` instead, so nothing hangs. While Postgres itself is
away, those reads fail and the waiters go on waiting (event streams send their keep-alives),
reading again every :attr:`JobEvents.poll_seconds`. On every (re)connection and
disconnection each queue also gets a :data:`RESYNC` marker, which makes its waiter read the ledger
at once (notifications sent while no one listened are lost), registering its watch again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services import ledger
from services.core.failures import POSTGRES_UNREACHABLE
from services.core.listening import ListeningConnection
from services.ledger import StatusChange
from services.ledger import events as ledger_events
from services.ledger.events import CHANNEL

log = logging.getLogger("afterword.gateway.events")

LISTENER_NAME = "afterword-gateway-listener"
"""The ``application_name`` of the listening connection, as ``pg_stat_activity`` shows it."""

RESYNC = None
"""A queue item that says: notifications may have been missed, read the ledger."""

Item = StatusChange | None
"""What a subscription's queue receives: a change, or :data:`RESYNC`."""


class Subscription:
    """One waiter's interest in one job; :meth:`close` (or leaving the ``with`` block) ends it."""

    def __init__(self, hub: JobEvents, job_id: str) -> None:
        self.hub = hub
        self.job_id = job_id
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.watch_id = secrets.token_hex(12)
        """This waiter's row in ``job_watchers``."""
        self.registered = False
        """True once its watch may be in ``job_watchers``."""
        self.closed = False
        self.owes_read = False
        """True while a read that a :data:`RESYNC` asked for has failed (Postgres away): it is tried again."""

    async def read(self, db: ledger.Executor) -> StatusChange | None:
        """The job's current status (None if unknown), its watch registered first if the hub listens.

        Every read after :meth:`JobEvents.subscribe` goes through here: the first, and those that
        a :data:`RESYNC` asks for. While the listening connection is down it is a plain read.
        """
        pid = self.hub.listener_pid
        if pid is None:
            return await ledger.status_of(db, self.job_id)
        self.registered = True  # before the await: a close() meanwhile must delete the watch
        try:
            return await ledger.watch_status(db, self.job_id, watch_id=self.watch_id, listener_pid=pid)
        finally:
            if self.closed:
                self.hub._unwatch(self)

    def close(self) -> None:
        """Stop receiving this job's changes (idempotent); its watch is deleted soon after."""
        if not self.closed:
            self.closed = True
            self.hub._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class JobEvents(ListeningConnection):
    """The hub: one listening connection, and the subscriptions it feeds."""

    def __init__(
        self,
        dsn: str,
        *,
        reconnect_seconds: float = 1.0,
        poll_seconds: float = 1.0,
        check_seconds: float = 10.0,
    ) -> None:
        super().__init__(what="job status listener", log=log, reconnect_seconds=reconnect_seconds)
        self._dsn = dsn
        self.poll_seconds = poll_seconds
        """How often waiters read the ledger while the listening connection is down."""
        self._check_seconds = check_seconds
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._connection: asyncpg.Connection | None = None
        self._listener_pid: int | None = None
        self._unwatched: set[str] = set()
        """Watch ids of closed subscriptions, to delete from ``job_watchers``."""
        self._wake = asyncio.Event()

    @property
    def listener_pid(self) -> int | None:
        """The listening connection's backend pid, which watches are registered under; None while down."""
        return self._listener_pid if self.connected else None

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are open."""
        return sum(len(subs) for subs in self._subscriptions.values())

    def subscribe(self, job_id: str) -> Subscription:
        """Start receiving ``job_id``'s changes; subscribe before reading its current status."""
        subscription = Subscription(self, job_id)
        self._subscriptions.setdefault(job_id, set()).add(subscription)
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        subs = self._subscriptions.get(subscription.job_id)
        if subs is not None:
            subs.discard(subscription)
            if not subs:
                del self._subscriptions[subscription.job_id]
        if subscription.registered:
            self._unwatch(subscription)

    def _unwatch(self, subscription: Subscription) -> None:
        self._unwatched.add(subscription.watch_id)
        self._wake.set()

    def _notify(
        self, connection: asyncpg.Connection | PoolConnectionProxy, pid: int, channel: str, payload: object
    ) -> None:
        if not self._subscriptions:  # nobody waits on any job: most notifications, under load
            return
        try:
            change = ledger_events.parse_notification(str(payload))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring a malformed %s notification: %s", CHANNEL, exc)
            return
        for subscription in self._subscriptions.get(change.id, ()):
            subscription.queue.put_nowait(change)

    def _resync_all(self) -> None:
        for subs in self._subscriptions.values():
            for subscription in subs:
                subscription.queue.put_nowait(RESYNC)

    async def _listen(self, failures: int) -> None:
        """Listen until the connection is lost (``failures``: failed attempts just before this one)."""
        connection = await asyncpg.connect(self._dsn, timeout=5, server_settings={"application_name": LISTENER_NAME})
        lost = asyncio.Event()

        def on_lost(_: object) -> None:
            lost.set()
            self._wake.set()

        connection.add_termination_listener(on_lost)
        self._connection = connection
        try:
            await connection.add_listener(CHANNEL, self._notify)
            self._listener_pid = connection.get_server_pid()
            self._connected.set()
            self._resync_all()  # each waiter reads its job again, which registers its watch under this pid
            self._said_again(failures)
            loop = asyncio.get_running_loop()
            next_check = loop.time()
            while not lost.is_set():
                if self._unwatched:
                    unwatched, self._unwatched = list(self._unwatched), set()
                    try:
                        await ledger_events.unwatch(connection, unwatched, timeout_seconds=5)
                    except BaseException:
                        self._unwatched.update(unwatched)
                        raise
                # A connection that died without a word only shows when used.
                if loop.time() >= next_check:
                    await ledger_events.sweep_watches(connection, timeout_seconds=5)
                    next_check = loop.time() + self._check_seconds
                self._wake.clear()
                if not lost.is_set() and not self._unwatched:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, next_check - loop.time())):
                            await self._wake.wait()
            log.warning("job status listener connection lost, reconnecting")
        finally:
            self._connected.clear()
            self._listener_pid = None
            self._connection = None
            self._resync_all()
            if not connection.is_closed():
                connection.terminate()


async def next_change(db: ledger.Executor, subscription: Subscription, last: StatusChange, *, within: float) -> Item:
    """The job's first change after ``last`` within ``within`` seconds, or None if none came."""
    hub = subscription.hub
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (left := deadline - loop.time()) > 0:
        item: Item = RESYNC
        if not subscription.owes_read:
            listening = hub.connected
            try:
                async with asyncio.timeout(left if listening else min(left, hub.poll_seconds)):
                    item = await subscription.queue.get()
            except TimeoutError:
                if listening:
                    return None
        if item is None:  # RESYNC
            try:
                item = await subscription.read(db)
            except POSTGRES_UNREACHABLE:
                # Postgres is away (restarting, say): the waiter keeps waiting, and reads again
                # every poll_seconds until it answers or the time is up.
                subscription.owes_read = True
                await asyncio.sleep(min(hub.poll_seconds, max(0.0, deadline - loop.time())))
                continue
            subscription.owes_read = False
            if item is None:
                return None
        if item.at > last.at:
            return item
    return None


async def wait_until_final(db: ledger.Executor, hub: JobEvents, job_id: str, *, seconds: float) -> None:
    """Return once the job is succeeded, failed or cancelled, or after ``seconds`` (or if unknown)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    with hub.subscribe(job_id) as subscription:
        last = await subscription.read(db)
        while last is not None and not last.status.is_final:
            last = await next_change(db, subscription, last, within=deadline - loop.time())


async def follow(
    db: ledger.Executor, subscription: Subscription, first: StatusChange, *, keepalive_seconds: float
) -> AsyncIterator[Item]:
    """Yield ``first``, then each change of the job until a final one; None after each quiet spell.

    ``subscription`` must have been opened before ``first`` was read; it is closed when the
    iteration ends, is closed, or is cancelled (a client that went away).
    """
    try:
        yield first
        last = first
        while not last.status.is_final:
            change = await next_change(db, subscription, last, within=keepalive_seconds)
            if change is not None:
                last = change
            yield change
    finally:
        subscription.close()
