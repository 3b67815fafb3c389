"""A Server-Sent Events decoder: lines in, events out (the parsing rules of the HTML standard)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    """One dispatched event: its type (``message`` unless named) and its data."""

    event: str
    data: str


class Decoder:
    """Feed it the lines of a ``text/event-stream``, without their line ends; it returns each complete event.

    Comment lines (``: ping``) are skipped; a ``retry:`` field sets :attr:`retry_seconds`, the
    server's reconnection delay.
    """

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self.retry_seconds: float | None = None

    def feed(self, line: str) -> Event | None:
        """The event that ``line`` completes (a blank line dispatches), or None."""
        if line == "":
            event = Event(event=self._event or "message", data="\n".join(self._data)) if self._data else None
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_seconds = int(value) / 1000
        return None
