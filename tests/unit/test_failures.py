"""Which exceptions mean Postgres or Redis is away, and which failures of a job may pass."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio
import redis.exceptions

from services.core import failures
from services.core.database import DatabaseUnreachable, connect
from services.core.failures import (
    POSTGRES_CONNECTION_FAILED,
    POSTGRES_CONNECTION_LOST,
    POSTGRES_FAILED,
    POSTGRES_UNREACHABLE,
    REDIS_FAILED,
)
from tests.support.database import database_dsn
from tests.support.ports import free_port

# Postgres or the connection to it gone, or refusing us: every Postgres tuple counts these.
POSTGRES_AWAY: list[Exception] = [
    ConnectionRefusedError(111, "Connection refused"),
    ConnectionResetError(104, "Connection reset by peer"),
    socket.gaierror(-2, "Name or service not known"),
    TimeoutError(),
    DatabaseUnreachable("OSError: Multiple exceptions: [Errno 111] ..., [Errno 99] ..."),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.CrashShutdownError("terminating connection because of crash of another server process"),
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.InternalClientError("cannot switch to state 11; another operation (2) is in progress"),
    asyncpg.InvalidCatalogNameError('database "afterword" does not exist'),
    asyncpg.InvalidPasswordError('password authentication failed for user "afterword"'),
]

# Plain OSErrors: a bug where anything may raise them (a gateway request), the connection's where
# nothing but Postgres is talked to.
PLAIN_OS_ERRORS: list[Exception] = [
    OSError("Multiple exceptions: [Errno 111] Connect call failed, [Errno 99] Cannot assign requested address"),
    FileNotFoundError(2, "No such file or directory"),
    PermissionError(13, "Permission denied"),
]

# Postgres answered, and refused the statement: not an outage.
POSTGRES_REFUSED_IT: list[Exception] = [
    asyncpg.exceptions.UniqueViolationError("duplicate key value violates unique constraint"),
    asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
    asyncpg.exceptions.DivisionByZeroError("division by zero"),
]

NOT_A_BACKEND: list[BaseException] = [ValueError("bad data"), KeyError("k"), RuntimeError("bug")]


def _ids(values: Sequence[BaseException]) -> list[str]:
    return [type(value).__name__ for value in values]


@pytest.mark.parametrize("exc", POSTGRES_AWAY, ids=_ids(POSTGRES_AWAY))
def test_postgres_away_counts_everywhere(exc: Exception) -> None:
    for group in (POSTGRES_UNREACHABLE, POSTGRES_FAILED, POSTGRES_CONNECTION_LOST, POSTGRES_CONNECTION_FAILED):
        assert isinstance(exc, group)


@pytest.mark.parametrize("exc", PLAIN_OS_ERRORS, ids=_ids(PLAIN_OS_ERRORS))
def test_a_plain_oserror_is_a_bug_in_the_gateway_but_the_connections_in_a_postgres_only_call(exc: Exception) -> None:
    assert not isinstance(exc, POSTGRES_UNREACHABLE)
    assert not isinstance(exc, POSTGRES_FAILED)
    assert isinstance(exc, POSTGRES_CONNECTION_LOST)
    assert isinstance(exc, POSTGRES_CONNECTION_FAILED)


@pytest.mark.parametrize("exc", POSTGRES_REFUSED_IT, ids=_ids(POSTGRES_REFUSED_IT))
def test_a_refused_statement_is_a_failure_not_an_outage(exc: Exception) -> None:
    assert not isinstance(exc, POSTGRES_UNREACHABLE)
    assert not isinstance(exc, POSTGRES_CONNECTION_LOST)
    assert isinstance(exc, POSTGRES_FAILED)
    assert isinstance(exc, POSTGRES_CONNECTION_FAILED)


@pytest.mark.parametrize("exc", NOT_A_BACKEND, ids=_ids(NOT_A_BACKEND))
def test_our_own_errors_are_no_backends(exc: Exception) -> None:
    for group in (
        POSTGRES_UNREACHABLE,
        POSTGRES_FAILED,
        POSTGRES_CONNECTION_LOST,
        POSTGRES_CONNECTION_FAILED,
        REDIS_FAILED,
    ):
        assert not isinstance(exc, group)
    assert failures.is_transient(exc) is False


def test_redis_errors_are_not_postgres_errors() -> None:
    exc = redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    assert not isinstance(exc, POSTGRES_CONNECTION_FAILED)


@pytest.mark.parametrize(
    "exc",
    [
        redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        redis.exceptions.TimeoutError("Timeout reading from 127.0.0.1:6379"),
        redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
        redis.exceptions.AuthenticationError("invalid username-password pair"),
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),  # asyncio.timeout's
        OSError("Multiple exceptions: ..."),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_redis_failed(exc: Exception) -> None:
    assert isinstance(exc, REDIS_FAILED)


def test_asyncpg_errors_are_not_redis_errors() -> None:
    assert not isinstance(asyncpg.CannotConnectNowError("starting"), REDIS_FAILED)
    assert not isinstance(asyncpg.InterfaceError("connection is closed"), REDIS_FAILED)


@pytest.mark.parametrize(
    "exc",
    [
        *POSTGRES_AWAY,
        *PLAIN_OS_ERRORS,  # a socket's, a full disk's
        asyncpg.exceptions.SerializationError("could not serialize access due to concurrent update"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        redis.exceptions.ConnectionError("Connection closed by server."),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_transient_for_a_job(exc: Exception) -> None:
    assert failures.is_transient(exc) is True


@pytest.mark.parametrize(
    "exc",
    [
        *POSTGRES_REFUSED_IT,
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        redis.exceptions.DataError("Invalid input of type: 'dict'"),
        asyncio.CancelledError(),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_not_transient_for_a_job(exc: BaseException) -> None:
    assert failures.is_transient(exc) is False


# --- The same, with the exceptions the libraries really raise -------------------------------------


async def test_nothing_listening_on_the_port_is_postgres_unreachable() -> None:
    with pytest.raises(OSError) as caught:
        await connect(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", timeout=5)

    assert isinstance(caught.value, POSTGRES_UNREACHABLE)
    assert failures.is_transient(caught.value)


async def test_a_missing_socket_file_is_postgres_unreachable(tmp_path: Path) -> None:
    # asyncpg's own FileNotFoundError, made a DatabaseUnreachable by our connect.
    with pytest.raises(DatabaseUnreachable) as caught:
        await connect(f"postgresql://postgres@/postgres?host={tmp_path}", timeout=5)

    assert isinstance(caught.value.__cause__, FileNotFoundError)
    assert isinstance(caught.value, POSTGRES_UNREACHABLE)


async def test_a_database_that_does_not_exist_is_postgres_unreachable() -> None:
    with pytest.raises(asyncpg.InvalidCatalogNameError) as caught:
        await connect(database_dsn("afterword_no_such_database"), timeout=5)

    assert isinstance(caught.value, POSTGRES_UNREACHABLE)
    assert failures.is_transient(caught.value)


async def test_a_statement_postgres_refuses_is_no_outage(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.PostgresError) as caught:
        await conn.fetchval("SELECT 1 / 0")

    assert not isinstance(caught.value, POSTGRES_UNREACHABLE)
    assert isinstance(caught.value, POSTGRES_FAILED)
    assert not failures.is_transient(caught.value)


async def test_nothing_listening_on_the_port_is_redis_failed() -> None:
    client = redis.asyncio.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=5)
    try:
        with pytest.raises(redis.exceptions.ConnectionError) as caught:
            await client.ping()
    finally:
        await client.aclose()

    assert isinstance(caught.value, REDIS_FAILED)
    assert failures.is_transient(caught.value)
