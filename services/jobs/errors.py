"""How a job's failure is classified: retry it later, or fail it now.

A job raises :class:`TransientError` for trouble that may pass (a server away, a 4xx SMTP reply,
a timeout) and :class:`PermanentError` for trouble that will not (a 5xx SMTP reply, bad data).
Any other exception is classified by :func:`is_transient`, through ``services.core.failures``
(which says which libraries' errors may pass). Whether a failed try is followed by another, how
many a job gets and how long it waits is ``services.jobs.retries``.
"""

from __future__ import annotations

from services.core import failures


class JobError(Exception):
    """Base of the errors a job raises on purpose."""


class TransientError(JobError):
    """The job may succeed if tried again later."""


class PermanentError(JobError):
    """Trying again will not help: the job fails at once."""


def is_transient(exc: BaseException) -> bool:
    """True when a job that failed with ``exc`` is worth another try.

    A :class:`PermanentError` never is, even one that is also an ``OSError``; a
    :class:`TransientError` always is; any other exception is, when ``services.core.failures``
    says it may pass.
    """
    if isinstance(exc, PermanentError):
        return False
    return isinstance(exc, TransientError) or failures.is_transient(exc)
