"""Opaque keyset cursors for paginating GET /jobs by ``(enqueued_at, id)``."""

from __future__ import annotations

import base64
import json
from datetime import datetime


class InvalidCursor(ValueError):
    """The cursor was not made by :func:`encode`."""


def encode(enqueued_at: datetime, job_id: str) -> str:
    """The cursor that continues after this job."""
    raw = json.dumps([enqueued_at.isoformat(), job_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, str]:
    """The ``(enqueued_at, id)`` a cursor stands for."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, job_id = json.loads(raw)
        moment = datetime.fromisoformat(stamp)
    except (ValueError, TypeError) as exc:
        raise InvalidCursor("not a cursor from a previous page") from exc
    if not isinstance(job_id, str) or moment.tzinfo is None:
        raise InvalidCursor("not a cursor from a previous page")
    return moment, job_id
