"""The gateway's app factory."""

from __future__ import annotations

from fastapi import FastAPI

from services.gateway import errors
from services.gateway.body_limit import BodyLimitMiddleware
from services.gateway.routes import health, jobs, seed
from services.gateway.state import lifespan_for
from services.settings import Settings

DESCRIPTION = """
Durable background jobs for FastAPI. Every endpoint that starts work records the job in the jobs
ledger, queues it for the jobs service and answers **202** at once with the job ids and their
status URLs; `GET /jobs/{id}` tells how each one went.
"""


def create_app(settings: Settings) -> FastAPI:
    """Build the gateway for ``settings``; its pools open in the lifespan."""
    app = FastAPI(
        title="Afterword gateway",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan_for(settings),
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    errors.install(app)
    app.include_router(seed.router)
    app.include_router(jobs.router)
    app.include_router(health.router)
    return app
