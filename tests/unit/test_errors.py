"""How a job's failure is classified: worth another try, or not."""

from __future__ import annotations

import asyncio

import aiosmtplib
import asyncpg
import pytest
import redis.exceptions

from services.jobs.errors import PermanentError, TransientError, is_transient


@pytest.mark.parametrize(
    "exc",
    [
        TransientError("x"),
        TimeoutError(),
        ConnectionRefusedError(),
        OSError("network unreachable"),
        asyncpg.CannotConnectNowError("starting"),
        asyncpg.InvalidCatalogNameError('database "afterword" does not exist'),
        asyncpg.InvalidPasswordError("password authentication failed"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock"),
        asyncpg.exceptions.SerializationError("serialization"),
        redis.exceptions.ConnectionError("gone"),
        redis.exceptions.TimeoutError("slow"),
        aiosmtplib.SMTPConnectError("refused"),
    ],
)
def test_transient(exc: BaseException) -> None:
    assert is_transient(exc) is True


@pytest.mark.parametrize(
    "exc",
    [
        PermanentError("x"),
        ValueError("bad data"),
        KeyError("k"),
        RuntimeError("bug"),
        asyncpg.exceptions.UniqueViolationError("dup"),
        asyncio.CancelledError(),
    ],
)
def test_permanent(exc: BaseException) -> None:
    assert is_transient(exc) is False


def test_a_permanent_error_that_is_also_an_oserror_is_permanent() -> None:
    class Refused(PermanentError, OSError):
        pass

    assert is_transient(Refused("550")) is False
