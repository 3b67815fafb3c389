"""Request ids: which one a request gets, and the 500 that carries it.

The id is the client's ``X-Request-ID`` when that is printable and at most 200 characters, else
a new uuid4 hex. ``services.gateway.middleware.observation`` gives it to every request: it is sent back in
the ``X-Request-ID`` response header of every response, errors included; it is bound in
structlog's context variables for the log lines the request writes; and routes read it
(``RequestIdDep``) to store it with the jobs the request creates.
"""

from __future__ import annotations

from starlette.types import Send

from services.gateway.identifiers import new_id

HEADER = b"x-request-id"
MAX_LENGTH = 200


def request_id_from(value: bytes | None) -> str:
    """The client's id when acceptable (printable, 1 to 200 characters), else a new one."""
    if value is not None:
        text = value.decode("latin-1")
        if 0 < len(text) <= MAX_LENGTH and text.isprintable():
            return text
    return new_id()


async def internal_error(send: Send, header: tuple[bytes, bytes]) -> None:
    """Answer 500 with the request id header (the app failed before it started a response)."""
    body = b"Internal Server Error"
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        header,
    ]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body})
