"""The gateway's app factory."""

from __future__ import annotations

from fastapi import FastAPI

from services.core.settings import Settings
from services.gateway import auth, errors
from services.gateway.metrics import GatewayMetrics, RouteTemplates
from services.gateway.middleware.body_limit import BodyLimitMiddleware
from services.gateway.middleware.idempotency import IdempotencyMiddleware
from services.gateway.middleware.observation import RequestObservationMiddleware
from services.gateway.middleware.security_headers import SecurityHeadersMiddleware
from services.gateway.routes import dashboard, docs, health, job_types, jobs, live, seed, stats
from services.gateway.routes import metrics as metrics_route
from services.gateway.state import lifespan_for

DESCRIPTION = """
Durable background jobs for FastAPI. Every endpoint that starts work records the job in the jobs
ledger, queues it for the jobs service and answers **202** at once with the job ids and their
status URLs; `GET /jobs/{id}` tells how each one went.

Every POST takes an optional `Idempotency-Key` header: the same key with the same request answers
the first response again and starts nothing.

When API keys are configured, every operation needs `Authorization: Bearer <key>` or
`X-API-Key: <key>`, but for `/healthz`, `/readyz` and `/metrics` (unless `OPEN_ENDPOINTS` says
otherwise): a full key (`API_KEYS`) for all of them, or a read key (`API_READ_KEYS`) for the GETs;
a POST or DELETE with a read key gets 403. Each operation's security requirement names the kind
of key it takes (`read` or `full`).
"""


def create_app(settings: Settings) -> FastAPI:
    """Build the gateway for ``settings``; its pools open in the lifespan."""
    otel = settings.opentelemetry
    metrics = GatewayMetrics()  # a registry per app, not prometheus_client's global one
    app = FastAPI(
        title="Afterword gateway",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan_for(settings, metrics=metrics),
        # Served by routes.docs from the gateway's own files, not FastAPI's pages on a CDN.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        dependencies=auth.dependencies(settings),
        # FastAPI otherwise looks up the global OpenTelemetry providers on every request (three
        # environment reads), a cost on the 202 path that buys nothing when no provider is set.
        telemetry={"tracing": otel, "metrics": otel, "logs": otel},
    )
    auth.document(app, settings)
    app.add_middleware(IdempotencyMiddleware)  # inside the body limit, which bounds what it reads
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    # Every response is counted, logged and carries X-Request-ID, 413s and replays included.
    app.add_middleware(
        RequestObservationMiddleware, metrics=metrics, templates=RouteTemplates(lambda: app.openapi()["paths"])
    )
    app.add_middleware(SecurityHeadersMiddleware)  # outside the others: their own answers get the headers too
    errors.install(app)
    app.include_router(seed.router)
    app.include_router(jobs.router)
    app.include_router(job_types.router)
    app.include_router(health.router)
    app.include_router(metrics_route.router)
    app.include_router(live.router)
    app.include_router(stats.router)
    app.include_router(dashboard.router)
    app.mount(dashboard.STATIC_PATH, dashboard.static_files(), name="dashboard_static")
    app.include_router(docs.router)
    app.mount(docs.STATIC_PATH, docs.static_files(), name="docs_static")
    return app
