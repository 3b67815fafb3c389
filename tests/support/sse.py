"""A small Server-Sent Events reader for the tests of ``GET /jobs/{id}/events``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    """One dispatched event: its type and data (comments are not events)."""

    event: str
    data: str

    def json(self) -> dict[str, Any]:
        """The data, parsed as JSON."""
        value: dict[str, Any] = json.loads(self.data)
        return value


async def read_events(response: httpx.Response) -> AsyncIterator[Event]:
    """The events of a streamed ``text/event-stream`` response, as they arrive."""
    event = "message"
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield Event(event=event, data="\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)


def collapse(values: list[str]) -> list[str]:
    """``values`` without consecutive repeats."""
    return [value for i, value in enumerate(values) if i == 0 or values[i - 1] != value]
