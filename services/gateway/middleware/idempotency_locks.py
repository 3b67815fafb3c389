"""Which Idempotency-Keys have a request running: Postgres advisory locks on a session of the gateway's own.

While a request with a key runs, this gateway holds a session-level advisory lock named after the
key (:func:`lock_id`), on one connection that it keeps for that purpose. Another request with the
same key, on this gateway or on another one sharing the database, fails to take the lock and gets
409. The lock lasts exactly as long as the session that holds it: when the gateway dies (SIGKILL,
OOM, a lost host), Postgres ends the session and drops its locks, so the key is free at once,
not after a timeout. The connection sets TCP keepalives on the server's side, so that a gateway
whose host vanished without closing the connection loses its locks within seconds.

The locks are taken and given back in batches (``services.core.batching``): concurrent requests share
one round trip, in one statement that takes and gives back its locks in the order they were
asked. A request that loses the lock's session midway (Postgres restarted) runs on: the key's row
is written with its jobs or not at all (``services.ledger.insert_jobs``), so a second request that
took the key meanwhile cannot record a second set of jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Sequence

import asyncpg

from services.core.batching import Batcher
from services.core.database import connect
from services.core.failures import POSTGRES_CONNECTION_LOST

log = logging.getLogger("afterword.gateway.idempotency")

MAX_BATCH = 512
"""At most this many locks taken or given back in one statement."""
STATEMENT_TIMEOUT_SECONDS = 10.0
"""A statement that takes longer fails (the keyed requests of its batch get 503)."""
KEEPALIVE = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3"}
"""Postgres probes an idle lock session after 5 s and drops it after 3 unanswered probes 2 s apart."""

# Every operation in the order it was asked: true takes a lock (pg_try_advisory_lock, never waits),
# false gives one back. Rows come out of unnest in order, and each is evaluated as it comes.
_LOCKS = (
    "SELECT CASE WHEN t.take THEN pg_try_advisory_lock(t.id) ELSE pg_advisory_unlock(t.id) END "
    "FROM unnest($1::bool[], $2::bigint[]) WITH ORDINALITY AS t(take, id, n) ORDER BY t.n"
)


def lock_id(scope: str, key: str) -> int:
    """The advisory lock (a signed 64-bit number) of ``key`` in ``scope``."""
    digest = hashlib.blake2b(f"{scope}\n{key}".encode(), digest_size=8, person=b"afterword-idem").digest()
    return int.from_bytes(digest, "big", signed=True)


class KeyLocks:
    """The advisory locks of the keys whose requests this gateway runs, on one session of its own."""

    def __init__(self, dsn: str, *, connect_timeout: float = 5.0) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._connection: asyncpg.Connection | None = None
        self._held: set[int] = set()  # taken, or being taken, by a request of this gateway
        self._batcher: Batcher[tuple[bool, int], bool] = Batcher(
            self._run, max_batch=MAX_BATCH, fail_together=(Exception,), name="idempotency-locks"
        )

    async def acquire(self, lock: int) -> bool:
        """Take ``lock`` for a request; False when a request (here or on another gateway) holds it.

        Raises a connection error when Postgres cannot be reached. If the caller is cancelled, a
        lock taken meanwhile is given back.
        """
        if lock in self._held:
            return False  # a request of this gateway holds it (a session may take its own lock again)
        self._held.add(lock)
        try:
            taken = await self._batcher.submit((True, lock))
        except asyncio.CancelledError:
            self._give_back(lock)  # it may have been taken: the statement runs after this one's
            raise
        except BaseException:
            self._held.discard(lock)
            raise
        if not taken:
            self._held.discard(lock)
        return taken

    async def release(self, lock: int) -> None:
        """Give back a lock :meth:`acquire` took; never raises (a lost session holds no lock).

        If the caller is cancelled, the lock is given back all the same.
        """
        with contextlib.suppress(Exception):
            await asyncio.shield(self._give_back(lock))

    def _give_back(self, lock: int) -> asyncio.Future[bool]:
        done = self._batcher.send((False, lock))
        done.add_done_callback(lambda _: self._held.discard(lock))
        done.add_done_callback(_retrieve)
        return done

    async def close(self) -> None:
        """Close the session: Postgres drops every lock it held."""
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await asyncio.wait_for(connection.close(), 5)
            except Exception:
                connection.terminate()

    async def _run(self, batch: list[tuple[bool, int]]) -> Sequence[bool]:
        takes, ids = [take for take, _ in batch], [lock for _, lock in batch]
        connection, fresh = await self._session()
        try:
            return await _apply(connection, takes, ids)
        except Exception as exc:
            self._drop(connection)
            if fresh or not isinstance(exc, POSTGRES_CONNECTION_LOST):
                raise
            # The session went away while idle (Postgres restarted, say): it holds nothing any
            # more. The batch runs again on a new one, which fails the batch if it fails too.
            log.info("the idempotency lock session was lost (%s); opening a new one", type(exc).__name__)
        connection, _ = await self._session()
        try:
            return await _apply(connection, takes, ids)
        except Exception:
            self._drop(connection)
            raise

    async def _session(self) -> tuple[asyncpg.Connection, bool]:
        """The lock session, opened now if there is none (then ``True``). Batches run one at a time."""
        if self._connection is not None and not self._connection.is_closed():
            return self._connection, False
        self._connection = await connect(
            self._dsn,
            timeout=self._connect_timeout,
            server_settings={"application_name": "afterword-gateway-idempotency-locks", **KEEPALIVE},
        )
        return self._connection, True

    def _drop(self, connection: asyncpg.Connection) -> None:
        """Forget a session that failed; closing its socket makes Postgres drop what it held."""
        if self._connection is connection:
            self._connection = None
        connection.terminate()


async def _apply(connection: asyncpg.Connection, takes: list[bool], ids: list[int]) -> list[bool]:
    rows = await connection.fetch(_LOCKS, takes, ids, timeout=STATEMENT_TIMEOUT_SECONDS)
    return [bool(row[0]) for row in rows]


def _retrieve(done: asyncio.Future[bool]) -> None:
    """Mark a give-back's outcome as seen: its failure (a lost session) needs no one's attention."""
    if not done.cancelled():
        done.exception()
