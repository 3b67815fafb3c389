"""The gateway app in the test's own process, on real Postgres and Redis, driven through httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.types import Receive, Scope, Send

from services.core.settings import Settings
from services.gateway.app import create_app


@asynccontextmanager
async def in_process_gateway(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client on ``create_app(settings)``, its lifespan run around it; a 500 is answered, not raised."""
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
            await app({**scope, "state": dict(state or {})}, receive, send)

        transport = httpx.ASGITransport(app=with_state, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=15) as http:
            yield http
