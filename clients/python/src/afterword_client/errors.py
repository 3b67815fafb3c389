"""The errors the client raises, one class per way a call can fail.

::

    AfterwordError
    ├── TransportError         no answer: the connection failed, broke or timed out (after the retries)
    ├── WaitTimeout            wait() ran out of time before the job ended (.job: its last record)
    └── APIError               the gateway answered with an error (.status_code, .detail, .request_id)
        ├── BadRequest         400: a malformed Idempotency-Key, a body JSON cannot parse
        ├── Unauthorized       401: no valid API key
        ├── Forbidden          403: a read-only key on a change
        ├── NotFound           404: no such job
        ├── Conflict           409: the job's status forbids it, or the Idempotency-Key is still in use
        ├── PayloadTooLarge    413: the body is larger than the gateway takes
        ├── ValidationFailed   422: invalid input (.errors: one FieldError per invalid field)
        ├── RateLimited        429: too many requests (.retry_after)
        ├── HeadersTooLarge    431: the request line and headers are larger than the gateway takes
        ├── Unavailable        503: Postgres is away; nothing was done (.retry_after)
        └── ServerError        any other 5xx

An answer with a status this tree does not name raises :class:`APIError` itself.
"""

from __future__ import annotations

import email.utils
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from afterword_client.records import Job


class AfterwordError(Exception):
    """Base of every error the client raises."""


class TransportError(AfterwordError):
    """No answer came: the connection was refused, broke, or timed out, on every try."""


class WaitTimeout(AfterwordError):
    """``wait`` gave up before the job ended; :attr:`job` is the record it saw last."""

    def __init__(self, job: Job, timeout: float) -> None:
        super().__init__(f"job {job.id} is still {job.status} after {timeout:g} s")
        self.job = job


class APIError(AfterwordError):
    """The gateway answered with an error status."""

    def __init__(self, response: httpx.Response, detail: Any) -> None:
        self.response = response
        self.status_code = response.status_code
        self.detail = detail
        """The answer's ``detail``: a sentence, or (for most 422s) the list of invalid fields."""
        self.request_id = response.headers.get("x-request-id")
        """The gateway's id of the request, on its log lines about it."""
        super().__init__(f"{response.status_code}: {self._describe()}")

    def _describe(self) -> str:
        return str(self.detail)


class BadRequest(APIError):
    """400: a malformed ``Idempotency-Key`` header, or a body that JSON cannot parse."""


class Unauthorized(APIError):
    """401: the gateway needs a valid API key, and none was sent or the key is unknown."""


class Forbidden(APIError):
    """403: a read-only key (``API_READ_KEYS``) was used for a change."""


class NotFound(APIError):
    """404: no job has this id."""


class Conflict(APIError):
    """409: the job's status forbids the change, or a request with this Idempotency-Key still runs."""


class PayloadTooLarge(APIError):
    """413: the request's body is larger than the gateway's ``MAX_BODY_BYTES``."""


@dataclass(frozen=True)
class FieldError:
    """One invalid field of a 422: where it is (``loc``), what is wrong (``msg``), and its kind."""

    loc: tuple[str | int, ...]
    msg: str
    type: str

    @property
    def field(self) -> str:
        """The dotted path of the field in the request (``payload.to``), without the part it was in (``body``)."""
        parts = self.loc[1:] if self.loc and self.loc[0] in ("body", "query", "path", "header") else self.loc
        return ".".join(str(part) for part in parts)


class ValidationFailed(APIError):
    """422: the request is invalid; :attr:`errors` names each invalid field.

    An Idempotency-Key used before for a different request is also 422, with a sentence as its
    detail and no field errors.
    """

    def __init__(self, response: httpx.Response, detail: Any) -> None:
        self.errors: tuple[FieldError, ...] = tuple(
            FieldError(loc=tuple(item.get("loc", ())), msg=str(item.get("msg", "")), type=str(item.get("type", "")))
            for item in (detail if isinstance(detail, list) else [])
            if isinstance(item, dict)
        )
        super().__init__(response, detail)

    @property
    def fields(self) -> list[str]:
        """The dotted paths of the invalid fields (``payload.to``, ``defer_by``)."""
        return [error.field for error in self.errors]

    def _describe(self) -> str:
        if not self.errors:
            return str(self.detail)
        return "; ".join(f"{error.field or '(request)'}: {error.msg}" for error in self.errors)


class RateLimited(APIError):
    """429: too many requests; :attr:`retry_after` says how long to wait, when the gateway says so."""

    def __init__(self, response: httpx.Response, detail: Any) -> None:
        super().__init__(response, detail)
        self.retry_after = retry_after(response)


class HeadersTooLarge(APIError):
    """431: the request line and headers are larger than the gateway's ``MAX_HEADER_BYTES``."""


class Unavailable(APIError):
    """503: the jobs ledger (Postgres) is unavailable and nothing was done; :attr:`retry_after` in seconds."""

    def __init__(self, response: httpx.Response, detail: Any) -> None:
        super().__init__(response, detail)
        self.retry_after = retry_after(response)


class ServerError(APIError):
    """Any other 5xx answer."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: RateLimited,
    431: HeadersTooLarge,
    503: Unavailable,
}


def error_for(response: httpx.Response) -> APIError:
    """The error an answer with an error status stands for (its body read already)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        detail: Any = response.text
    else:
        detail = body.get("detail", body) if isinstance(body, dict) else body
    kind = _BY_STATUS.get(response.status_code)
    if kind is None:
        kind = ServerError if response.status_code >= 500 else APIError
    return kind(response, detail)


def retry_after(response: httpx.Response) -> float | None:
    """The answer's ``Retry-After`` in seconds (from a number or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
