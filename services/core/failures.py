"""Which exceptions mean a backend (Postgres, Redis) is away, and which failures of a job may pass.

Both services ask this module; no other module lists exception classes for these questions.

Postgres's errors are read on two axes:

* *where the call was*. In code that does nothing but talk to Postgres (a batched write, a lock
  statement, the listening connection), any ``OSError`` is the connection's:
  :data:`POSTGRES_CONNECTION_LOST`. In a gateway request, which also reads files and runs our
  own code, a plain ``OSError`` (a missing file, say) is a bug, not an outage: only the socket
  errors that mean "cannot reach it" count, :data:`POSTGRES_UNREACHABLE`. A connection attempt
  that fails with a plain ``OSError`` is raised as ``DatabaseUnreachable`` (a ``ConnectionError``:
  ``services.core.database``), so it counts in both.
* *whether Postgres answered*. An error Postgres sent back for a statement (any
  ``asyncpg.PostgresError``: a constraint, a cancelled statement) is not an outage;
  :data:`POSTGRES_FAILED` and :data:`POSTGRES_CONNECTION_FAILED` add them for the callers that
  treat "Postgres could not do it" as one case, whatever the reason.

Redis's are :data:`REDIS_FAILED`; a job's are :func:`is_transient` (``services.jobs.errors`` adds
the job's own :class:`TransientError` and :class:`PermanentError`).
"""

from __future__ import annotations

import socket

import asyncpg
import redis.exceptions

POSTGRES_GONE: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    # A connection out of step with the server ("cannot switch to state 11", MagicStack/asyncpg#1069):
    # useless from then on (``services.core.database.Connection`` closes it).
    asyncpg.InternalClientError,
    # Refused at connection time: the database named does not exist (not created yet, or
    # dropped), or the role or its password is refused. Nothing the request or the job did.
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
)
"""asyncpg's own errors that mean Postgres or the connection to it is gone, or refuses us.

The socket's errors are not in it: each of the tuples below adds those it counts."""

POSTGRES_UNREACHABLE: tuple[type[Exception], ...] = (
    ConnectionError,
    socket.gaierror,
    TimeoutError,
    *POSTGRES_GONE,
)
"""Postgres cannot be reached, read strictly: the gateway answers these 503, never 500.

Connection failures only (refused, reset, no such host, timed out, or asyncpg's
:data:`POSTGRES_GONE`): a plain ``OSError`` (a missing file, say) raised in a request is a bug,
not an outage, and stays a 500."""

POSTGRES_FAILED: tuple[type[Exception], ...] = (*POSTGRES_UNREACHABLE, asyncpg.PostgresError)
""":data:`POSTGRES_UNREACHABLE`, or Postgres refused the statement (any error it sent back).

For the gateway's calls that Postgres merely serves, where "it could not do it" is one case
whatever the reason: the Idempotency-Key store (the request gets 503) and the metrics' read of a
table's size (the figure is left out)."""

POSTGRES_CONNECTION_LOST: tuple[type[Exception], ...] = (OSError, TimeoutError, *POSTGRES_GONE)
"""The connection failed, in code that does nothing but talk to Postgres: any ``OSError`` counts.

A batch of writes failing with one of these fails for every caller of the batch (no point trying
them one by one: ``services.core.batching``); a lock session failing with one while idle is
opened again (``services.gateway.middleware.idempotency_locks``)."""

POSTGRES_CONNECTION_FAILED: tuple[type[Exception], ...] = (*POSTGRES_CONNECTION_LOST, asyncpg.PostgresError)
""":data:`POSTGRES_CONNECTION_LOST`, or Postgres refused the statement: a connection of our own
that is simply made again (the gateway's listening connection, ``services.gateway.live.job_events``).

Its connection attempt is asyncpg's own, so a plain ``OSError`` of the attempt (every address
refused, no such socket file) counts here."""

REDIS_FAILED: tuple[type[Exception], ...] = (redis.exceptions.RedisError, OSError)
"""Redis is away or failed the command: redis-py's errors (``ResponseError`` included: a key of
the wrong type, say), and the socket's or a bounded call's (the built-in ``TimeoutError`` of
``asyncio.timeout`` is an ``OSError``).

What Redis holds can always be rebuilt from the ledger (the recovery sweep), so the callers log
these and carry on: the gateway leaves accepted jobs to the sweep and serves ``/stats`` without
the queue's figures, and ``python -m services.jobs`` starts a new worker."""

TRANSIENT: tuple[type[Exception], ...] = (
    OSError,  # TimeoutError and ConnectionError included: a server away, a slow network, a full disk
    *POSTGRES_GONE,
    asyncpg.exceptions.SerializationError,  # the transaction lost a race: running it again may win
    asyncpg.exceptions.DeadlockDetectedError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
"""The libraries' errors that may pass if a job is tried again later (see :func:`is_transient`)."""


def is_transient(exc: BaseException) -> bool:
    """True when ``exc``, raised by a library a job called, may pass if the job is tried again later.

    A job's own ``TransientError`` and ``PermanentError`` are ``services.jobs.errors``'s to read:
    use its ``is_transient`` for a job's failure.
    """
    return isinstance(exc, TRANSIENT)
