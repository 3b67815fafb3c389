"""How a job's failure is classified, and how long it waits before the next try."""

from __future__ import annotations

import asyncio

import aiosmtplib
import asyncpg
import pytest
import redis.exceptions

from services.jobs.errors import PermanentError, TransientError, is_transient, retry_delay


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


@pytest.mark.parametrize(("job_try", "ceiling"), [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (0, 1.0)])
def test_retry_delay_doubles_with_jitter(job_try: int, ceiling: float) -> None:
    for _ in range(200):
        delay = retry_delay(job_try, base=1.0)
        assert ceiling / 2 <= delay <= ceiling


def test_retry_delay_is_capped() -> None:
    for _ in range(200):
        assert 150.0 <= retry_delay(30, base=1.0) <= 300.0
        assert 5.0 <= retry_delay(30, base=1.0, cap=10.0) <= 10.0
