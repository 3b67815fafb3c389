"""Browser security headers on every response, in one pure ASGI middleware.

Every response carries

* ``Content-Security-Policy``: scripts, styles and connections from the gateway's own origin
  only (no inline script, no ``eval``), no plugins, and ``frame-ancestors 'none'``: no other
  page may frame the dashboard and click its buttons with the key it keeps;
* ``X-Frame-Options: DENY``, the same for browsers that predate ``frame-ancestors``;
* ``X-Content-Type-Options: nosniff``: a response is only ever what its content type says;
* ``Referrer-Policy: no-referrer``: the gateway's URLs (job ids) are never sent to other sites.

A response that sets its own ``Content-Security-Policy`` keeps it (the API docs pages do: ReDoc
and Swagger UI need a little more than the dashboard); the other headers are always set.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
"""The policy of every response that brings none of its own: what the dashboard needs, no more."""

_CSP = b"content-security-policy"
_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
_HEADERS_AND_CSP = [*_HEADERS, (_CSP, CONTENT_SECURITY_POLICY.encode())]


class SecurityHeadersMiddleware:
    """Add the security headers to every HTTP response (ASGI header names are lower case)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                extra = _HEADERS if any(name == _CSP for name, _ in headers) else _HEADERS_AND_CSP
                message = {**message, "headers": [*headers, *extra]}
            await send(message)

        await self.app(scope, receive, send_secured)
