"""What the gateway notes about every request, in one pure ASGI middleware: its id, metrics and log line.

For each HTTP request :class:`RequestObservationMiddleware`

* picks the request id (``services.gateway.middleware.request_id``: the client's ``X-Request-ID`` when
  acceptable, else a new one), puts it in ``scope["state"]`` for the routes, binds it in
  structlog's context variables for every line the request logs, and sends it back in the
  ``X-Request-ID`` header of every response, errors included;
* counts and times the request by method, route template and status
  (``services.gateway.metrics``);
* writes one access line (``event: "request"``; uvicorn's access log is off).

One middleware rather than two (the id, then the metrics and the line), each wrapping ``send``:
on the 202 path every layer is a few percent of the gateway's CPU time.
"""

from __future__ import annotations

import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.log_config import direct_logger
from services.gateway.metrics import METHODS, OTHER, GatewayMetrics, RouteTemplates, route_label
from services.gateway.middleware.request_id import HEADER, internal_error, request_id_from


class RequestObservationMiddleware:
    """Give each HTTP request an id, count and time it, and log one line for it."""

    def __init__(self, app: ASGIApp, *, metrics: GatewayMetrics, templates: RouteTemplates | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = templates
        self.access_log = direct_logger("gateway", "afterword.gateway.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = request_id_from(next((value for key, value in scope["headers"] if key == HEADER), None))
        scope.setdefault("state", {})["request_id"] = request_id
        header = (HEADER, request_id.encode("latin-1"))
        status = 500  # unless the app starts a response
        started = False

        async def send_observed(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        # Bound and reset by hand: structlog's bound_contextvars() also reads every bound variable.
        bound = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_observed)
        except Exception:
            # Starlette's ServerErrorMiddleware, further out, would answer this 500 without
            # the header: answer it here, and let the error go on to be logged.
            if not started:
                await internal_error(send, header)
            raise
        finally:
            self._observe(scope, status, time.perf_counter() - start)
            structlog.contextvars.reset_contextvars(**bound)

    def _observe(self, scope: Scope, status: int, duration: float) -> None:
        method = scope["method"] if scope["method"] in METHODS else OTHER
        route = route_label(scope, self.templates)
        self.metrics.observe_request(method=method, route=route, status=status, duration=duration)
        (self.access_log.error if status >= 500 else self.access_log.info)(
            "request",
            method=scope["method"],
            route=route,
            path=scope["path"],
            status=status,
            duration_ms=round(duration * 1000, 2),
        )
