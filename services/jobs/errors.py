"""How a job's failure is classified: retry it later, or fail it now.

A job raises :class:`TransientError` for trouble that may pass (a server away, a 4xx SMTP reply,
a timeout) and :class:`PermanentError` for trouble that will not (a 5xx SMTP reply, bad data).
Exceptions raised by the libraries we call are classified by :func:`is_transient`. How long a
job waits before its next try, and how many it gets, is ``services.jobs.retries``.
"""

from __future__ import annotations

import asyncio

import asyncpg
import redis.exceptions

from services.core.database import POSTGRES_GONE


class JobError(Exception):
    """Base of the errors a job raises on purpose."""


class TransientError(JobError):
    """The job may succeed if tried again later."""


class PermanentError(JobError):
    """Trying again will not help: the job fails at once."""


_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    TransientError,
    TimeoutError,
    asyncio.TimeoutError,
    ConnectionError,
    OSError,
    *POSTGRES_GONE,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is worth another try."""
    if isinstance(exc, PermanentError):
        return False
    return isinstance(exc, _TRANSIENT_TYPES)
