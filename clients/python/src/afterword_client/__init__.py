"""A Python client for Afterword's gateway: queue jobs, follow them, act on them, sync or async.

::

    from afterword_client import Client, SendEmail

    with Client("http://127.0.0.1:8000", api_key=key) as client:
        accepted = client.enqueue(SendEmail(to="ada@example.com", subject="Hi", body="Hello!"))
        job = client.wait(accepted.id, timeout=30)
"""

from afterword_client.async_client import AsyncClient
from afterword_client.errors import (
    AfterwordError,
    APIError,
    BadRequest,
    Conflict,
    FieldError,
    Forbidden,
    HeadersTooLarge,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    TransportError,
    Unauthorized,
    Unavailable,
    ValidationFailed,
    WaitTimeout,
)
from afterword_client.models import *  # noqa: F403 (every job's payload model, whatever jobs there are)
from afterword_client.models import __all__ as _models
from afterword_client.records import Accepted, Attempt, Job, JobPage, JobSummary, StatusEvent
from afterword_client.retries import RetryPolicy
from afterword_client.sync_client import Client

__all__ = [
    "APIError",
    "Accepted",
    "AfterwordError",
    "AsyncClient",
    "Attempt",
    "BadRequest",
    "Client",
    "Conflict",
    "FieldError",
    "Forbidden",
    "HeadersTooLarge",
    "Job",
    "JobPage",
    "JobSummary",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "StatusEvent",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
    "WaitTimeout",
    *_models,
]
