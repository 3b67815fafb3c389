"""The gateway's HTTP/1.1 protocol: uvicorn's httptools protocol with a bound on the request head.

uvicorn bounds a request head only for its h11 protocol (``h11_max_incomplete_event_size``);
with httptools, the one the gateway runs, the parser gathers a header of any size (it appends
each piece it receives to the header's value before uvicorn sees it). :func:`bounded_protocol`
makes a protocol class that counts the bytes of each request head (the request line and the
headers) as they arrive and, once they pass the limit with the head still not complete, answers
``431 Request Header Fields Too Large`` and closes the connection: no more than the limit and
one network read is ever held for a head.

After the 431 the connection lingers for :data:`LINGER_SECONDS` (its sending side shut), reading
and dropping whatever the client still sends: closing at once with unread bytes would make the
kernel reset the connection, and the client would then lose the 431 before it reads it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger("afterword.gateway")

LINGER_SECONDS = 2.0
"""How long a refused connection reads and drops what the client still sends before it is closed."""


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head over :attr:`max_head_bytes` with 431."""

    max_head_bytes = 32 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_open = True  # a request head is being read (or the next one is awaited)
        self._head_bytes = 0
        self._heads_read = 0
        self._linger: asyncio.TimerHandle | None = None  # set once the connection is refused

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._linger is not None:
            return  # refused: dropped unread
        if not self._head_open:
            super().data_received(data)
            return
        allowance = self.max_head_bytes - self._head_bytes
        if len(data) <= allowance:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        # Parse what the limit allows: the head may end in it, and what follows is then its body
        # or the next request, whose head is counted from its own start.
        heads_read = self._heads_read
        super().data_received(data[:allowance])
        if self.transport.is_closing() or self._linger is not None:
            return
        if self._heads_read == heads_read:
            self._refuse()
            return
        self.data_received(data[allowance:])

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._heads_read += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_open = True
        self._head_bytes = 0

    def _refuse(self) -> None:
        log.warning("request head over %d bytes refused with 431", self.max_head_bytes)
        body = f"request line and headers larger than {self.max_head_bytes} bytes".encode()
        content = [STATUS_LINE[431]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger = self.loop.call_later(LINGER_SECONDS, self.transport.close)


def bounded_protocol(max_head_bytes: int) -> type[BoundedHeadProtocol]:
    """A protocol class for ``uvicorn.run(http=...)`` that refuses request heads over ``max_head_bytes``."""
    return type("BoundedHeadProtocol", (BoundedHeadProtocol,), {"max_head_bytes": max_head_bytes})
