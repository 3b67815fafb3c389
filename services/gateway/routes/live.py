"""Live status: a job's status changes as Server-Sent Events."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from services import ledger
from services.contract import JobStatus
from services.gateway.dependencies import DbDep, JobEventsDep, JobIdDep
from services.gateway.errors import NotFound
from services.gateway.live.job_events import Item, Subscription, follow
from services.gateway.schemas import (
    StatusEvent,
)

router = APIRouter(tags=["live"])
log = logging.getLogger("afterword.gateway")

KEEPALIVE_SECONDS = 15.0
"""A comment line is sent after this long without an event, so proxies keep the stream open."""

_EVENTS_DOC = """\
`text/event-stream`. The first event is the job's current status, then one event per change:

```
event: status
data: {"id": "…", "status": "in_progress", "tries": 1, "error": null, "at": "2026-…"}
```

The stream ends after the event of a final status (succeeded, failed, cancelled); a job already
ended gets that one event. A comment line (`: ping`) is sent every 15 s while nothing happens.
"""


_EVENT_SCHEMA = {
    # Before OpenAPI 3.2 (`itemSchema`), the schema of an event stream describes each of its events.
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"const": "status"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {
                "type": "object",
                "required": ["id", "status", "tries", "error", "at"],
                "properties": {
                    "id": {"type": "string"},
                    "status": {"enum": [status.value for status in JobStatus]},
                    "tries": {"type": "integer"},
                    "error": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                    "at": {"type": "string", "format": "date-time"},
                },
            },
        },
    },
}


def status_event(change: ledger.StatusChange) -> bytes:
    """One ``status`` event of the stream."""
    data = StatusEvent(id=change.id, status=change.status, tries=change.tries, error=change.error, at=change.at)
    return f"event: status\ndata: {data.model_dump_json()}\n\n".encode()


async def _event_stream(items: AsyncIterator[Item]) -> AsyncIterator[bytes]:
    yield b"retry: 2000\n\n"
    async for item in items:
        yield b": ping\n\n" if item is None else status_event(item)


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    description=_EVENTS_DOC,
    responses={
        200: {"content": {"text/event-stream": {"schema": _EVENT_SCHEMA}}, "description": "The event stream"},
        404: {"description": "No such job"},
    },
)
async def job_status_events(job_id: JobIdDep, db: DbDep, events: JobEventsDep) -> StreamingResponse:
    """Follow a job's status as Server-Sent Events until it ends."""
    subscription: Subscription = events.subscribe(job_id)  # before the read: no change is missed
    try:
        current = await subscription.read(db)
        if current is None:
            raise NotFound(f"no job with id {job_id!r}")
    except BaseException:
        subscription.close()
        raise
    items = follow(db, subscription, current, keepalive_seconds=KEEPALIVE_SECONDS)
    return StreamingResponse(
        _event_stream(items),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
