"""The Postgres connection pools of both services.

asyncpg's pool runs a reset query (``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
ALL``) every time a connection goes back to the pool: one more round trip per use, the largest
single cost after the queries themselves. Our code leaves no session state behind (no ``SET``,
``LISTEN``, advisory lock or cursor outside a transaction; the gateway's LISTEN has a connection of
its own), so :func:`create_pool` skips that query. asyncpg still rolls back a transaction left open
on a connection before it is reused.

A connection whose protocol got out of step with the server raises asyncpg's
``InternalClientError`` ("cannot switch to state 11; another operation (2) is in progress": seen
when Postgres stops while a statement waits on a lock, MagicStack/asyncpg#1069) on every use after;
without the reset query nothing would notice, and the pool would hand it out again and again. Our
connections (:class:`Connection`) close themselves when a statement raises it, so the pool replaces
them, and the error counts as a connection failure (``services.core.failures``).

A connection that cannot be made fails with :class:`DatabaseUnreachable` (a ``ConnectionError``)
whatever the socket said: asyncio raises a plain ``OSError("Multiple exceptions: ...")`` when a
host name has several addresses and each refused, and a missing Unix socket is a
``FileNotFoundError``; both mean Postgres cannot be reached, and the services answer that with
503 (``services.core.failures.POSTGRES_UNREACHABLE``), never 500.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

R = TypeVar("R")


def _closing_when_out_of_step(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    @functools.wraps(method)
    async def run(connection: asyncpg.Connection, *args: Any, **kwargs: Any) -> R:
        try:
            return await method(connection, *args, **kwargs)
        except asyncpg.InternalClientError:
            connection.terminate()  # unusable from now on: the pool makes a new one
            raise

    return run


class Connection(asyncpg.Connection):
    """asyncpg's connection, closed as soon as a statement finds its protocol out of step."""

    __slots__ = ()

    execute = _closing_when_out_of_step(asyncpg.Connection.execute)  # type: ignore[assignment]
    executemany = _closing_when_out_of_step(asyncpg.Connection.executemany)  # type: ignore[assignment]
    fetch = _closing_when_out_of_step(asyncpg.Connection.fetch)  # type: ignore[assignment]
    fetchrow = _closing_when_out_of_step(asyncpg.Connection.fetchrow)  # type: ignore[assignment]
    fetchval = _closing_when_out_of_step(asyncpg.Connection.fetchval)  # type: ignore[assignment]


class DatabaseUnreachable(ConnectionError):
    """Connecting to Postgres failed at the socket: nothing listens, no route, no such socket file."""


async def _connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """``asyncpg.connect``, with any ``OSError`` of the connection attempt as :class:`DatabaseUnreachable`."""
    try:
        connection: asyncpg.Connection = await asyncpg.connect(*args, **kwargs)
    except (ConnectionError, TimeoutError, socket.gaierror):
        raise  # already read as "cannot reach it"
    except OSError as exc:
        raise DatabaseUnreachable(f"{type(exc).__name__}: {exc}") from exc
    return connection


async def connect(dsn: str, **options: Any) -> asyncpg.Connection:
    """One connection outside any pool (a session of its own), made and typed as the pools' are."""
    return await _connect(dsn, connection_class=Connection, **options)


async def _nothing_to_reset(connection: asyncpg.Connection) -> None:
    """asyncpg's own clean-up (ending an open transaction) has run; there is nothing else to undo."""


async def create_pool(dsn: str, **options: Any) -> asyncpg.Pool:
    """An asyncpg pool on ``dsn`` (``options`` as for ``asyncpg.create_pool``) without the reset query.

    Its connections are :class:`Connection`, made by :func:`_connect`.
    """
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn, reset=_nothing_to_reset, connect=_connect, connection_class=Connection, **options
    )
    return pool
