"""How a job's failure is classified: retry it later, or fail it now.

A job raises :class:`TransientError` for trouble that may pass (a server away, a 4xx SMTP reply,
a timeout) and :class:`PermanentError` for trouble that will not (a 5xx SMTP reply, bad data).
Exceptions raised by the libraries we call are classified by :func:`is_transient`.
"""

from __future__ import annotations

import asyncio
import random

import asyncpg
import redis.exceptions

from services.database import POSTGRES_GONE


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


def retry_delay(job_try: int, *, base: float, cap: float = 300.0) -> float:
    """Seconds to wait before try ``job_try + 1``: exponential backoff, jittered in its upper half."""
    ceiling = min(cap, base * 2 ** max(job_try - 1, 0))
    return random.uniform(ceiling / 2, ceiling)
