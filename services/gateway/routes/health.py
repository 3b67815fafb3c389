"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.gateway.dependencies import DbDep, RedisDep, SettingsDep
from services.gateway.errors import why_unavailable
from services.queue.heartbeat import read_beats

router = APIRouter(tags=["health"])

_CHECK_TIMEOUT = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The gateway process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Something the gateway needs is down"}})
async def readyz(db: DbDep, redis: RedisDep, settings: SettingsDep) -> JSONResponse:
    """Postgres and Redis answer and at least one worker's heartbeat is fresh; else 503 naming what is down.

    Heartbeat entries that cannot be read are skipped and named in ``unreadable_heartbeats``.
    """
    checks: dict[str, Any] = {}
    unreadable: list[str] = []
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            await db.fetchval("SELECT 1")
        checks["postgres"] = "ok"
    except Exception as exc:
        reason = why_unavailable(exc)
        checks["postgres"] = f"down: {type(exc).__name__}" + ("" if reason is None else f" ({reason})")
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            await redis.ping()
            beats = await read_beats(redis, stale_after_seconds=settings.worker_stale_after_seconds)
        checks["redis"] = "ok"
        checks["workers"] = f"{len(beats.workers)} alive" if beats.workers else "down: no worker heartbeat"
        unreadable = beats.unreadable
    except Exception as exc:
        checks["redis"] = f"down: {type(exc).__name__}"
        checks["workers"] = "unknown: redis is down"
    down = [name for name, value in checks.items() if value != "ok" and not value.endswith("alive")]
    if down:
        body = {"status": "unavailable", "down": down, "checks": checks, "unreadable_heartbeats": unreadable}
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready", "checks": checks, "unreadable_heartbeats": unreadable})
