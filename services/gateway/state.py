"""The gateway's lifespan: the pools it opens at start-up and closes at shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

import asyncpg
from fastapi import FastAPI
from redis.asyncio import ConnectionPool

from services.core.database import create_pool
from services.core.serialization import deserialize, serialize
from services.core.settings import Settings
from services.gateway.intake import Intake
from services.gateway.live.job_events import JobEvents
from services.gateway.metrics import GatewayMetrics
from services.gateway.middleware.idempotency_locks import KeyLocks
from services.gateway.settled_minutes import SettledMinutes
from services.queue import QueueRedis

CLIENT_CHECK_MS = 1000
"""How often Postgres checks, during a gateway's statement, that the gateway is still connected."""


class State(TypedDict):
    """What the lifespan yields; handlers read it from ``request.state``."""

    settings: Settings
    db: asyncpg.Pool
    redis: QueueRedis
    events: JobEvents
    metrics: GatewayMetrics
    intake: Intake
    idempotency_locks: KeyLocks
    settled_minutes: SettledMinutes


def lifespan_for(settings: Settings, *, metrics: GatewayMetrics | None = None):  # type: ignore[no-untyped-def]
    """The lifespan of an app built with ``settings``.

    Both pools connect lazily: the gateway starts while Postgres or Redis is away, and
    ``/readyz`` says which. ``metrics`` (the app's Prometheus metrics) is handed to the routes.
    """
    metrics = metrics or GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        db = await create_pool(
            settings.database_dsn,
            min_size=0,
            max_size=10,
            timeout=5,
            command_timeout=10,
            # A gateway that dies mid-statement (SIGKILL, OOM) takes its statement with it: Postgres
            # checks every second that the gateway is still there, rather than finishing (and
            # committing) jobs that wait on a lock for a request no one will answer.
            server_settings={"client_connection_check_interval": str(CLIENT_CHECK_MS)},
        )
        redis = QueueRedis(
            ConnectionPool.from_url(
                str(settings.redis_url), socket_connect_timeout=2, socket_timeout=5, max_connections=64
            ),
            job_serializer=serialize,
            job_deserializer=deserialize,
            default_queue_name=settings.queue_name,
        )
        events = JobEvents(settings.database_dsn)  # one LISTEN connection, for the live status routes
        await events.start()
        settled_minutes = SettledMinutes()  # GET /stats's figures of minutes that are over
        locks = KeyLocks(settings.database_dsn)  # Idempotency-Keys in use: its session connects on first use
        try:
            yield {
                "settings": settings,
                "db": db,
                "redis": redis,
                "events": events,
                "metrics": metrics,
                # Ledger rows, then the queue, batched across requests.
                "intake": Intake(db=db, redis=redis, metrics=metrics),
                "idempotency_locks": locks,
                "settled_minutes": settled_minutes,
            }
        finally:
            await locks.close()
            await settled_minutes.close()
            await events.stop()
            await redis.aclose(close_connection_pool=True)
            await db.close()

    return lifespan
