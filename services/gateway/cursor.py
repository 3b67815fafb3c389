"""Opaque keyset cursors for paginating GET /jobs by ``(enqueued_at, id)``."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from services.gateway.identifiers import is_id

MAX_LENGTH = 200
"""Longer than any cursor :func:`encode` makes (about 100 characters): a longer one is refused unread."""


class InvalidCursor(ValueError):
    """The cursor was not made by :func:`encode`."""


def encode(enqueued_at: datetime, job_id: str) -> str:
    """The cursor that continues after this job."""
    raw = json.dumps([enqueued_at.isoformat(), job_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, str]:
    """The ``(enqueued_at, id)`` a cursor stands for, in UTC, with an id as jobs have.

    Whatever a client puts in a cursor ends up in a query: it must hold what :func:`encode` puts
    there (an aware time Postgres can store, a job id), or it is refused here.
    """
    if len(cursor) > MAX_LENGTH:
        raise InvalidCursor("not a cursor from a previous page")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, job_id = json.loads(raw)
        moment = datetime.fromisoformat(stamp)
        utc = None if moment.tzinfo is None else moment.astimezone(UTC)  # overflows at datetime's ends
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidCursor("not a cursor from a previous page") from exc
    if utc is None or not isinstance(job_id, str) or not is_id(job_id):
        raise InvalidCursor("not a cursor from a previous page")
    return utc, job_id
