"""Every request gets a request id, as a pure ASGI middleware.

The id is the client's ``X-Request-ID`` when that is printable and at most 200 characters, else
a new uuid4 hex. It is sent back in the ``X-Request-ID`` response header of every response,
errors included; it is bound in structlog's context variables for the log lines the request
writes; and routes read it (``RequestIdDep``) to store it with the jobs the request creates.
"""

from __future__ import annotations

import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
MAX_LENGTH = 200


def request_id_from(value: bytes | None) -> str:
    """The client's id when acceptable (printable, 1 to 200 characters), else a new one."""
    if value is not None:
        text = value.decode("latin-1")
        if 0 < len(text) <= MAX_LENGTH and text.isprintable():
            return text
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Give each HTTP request an id: in ``request.state.request_id``, the log context and the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = next((value for key, value in scope["headers"] if key == HEADER), None)
        request_id = request_id_from(sent)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (HEADER, request_id.encode("latin-1"))
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                # Starlette's ServerErrorMiddleware, further out, would answer this 500 without
                # the header: answer it here, and let the error go on to be logged.
                if not started:
                    await _internal_error(send, header)
                raise


async def _internal_error(send: Send, header: tuple[bytes, bytes]) -> None:
    body = b"Internal Server Error"
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        header,
    ]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body})
