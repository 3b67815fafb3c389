"""``GET /stats``: the dashboard's figures.

From the ledger: jobs per status, throughput and pickup latency per minute; from Redis: the queue's
depth and the live workers. Either part may be missing when its backend is away.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from services.contract import JobStatus
from services.core.failures import REDIS_FAILED
from services.gateway.dependencies import DbDep, RedisDep, SettingsDep, SettledMinutesDep
from services.gateway.schemas import LatencyMinute, Percentiles, StatsView, ThroughputMinute, WorkerView
from services.ledger import stats

router = APIRouter(tags=["live"])
log = logging.getLogger("afterword.gateway")


@router.get("/stats", response_model=StatsView)
async def job_stats(
    db: DbDep,
    redis: RedisDep,
    settings: SettingsDep,
    settled: SettledMinutesDep,
    minutes: Annotated[
        int, Query(ge=1, le=stats.MAX_WINDOW_MINUTES, description="The window of the per-minute figures.")
    ] = 15,
) -> StatsView:
    """Queue depth, jobs per status, throughput and pickup latency per minute, and the live workers."""
    by_status, window = await asyncio.gather(
        stats.jobs_by_status(db, exact_limit=settings.stats_exact_count_limit),
        settled.window(db, minutes=minutes),
    )
    per_minute, pickups = window.throughput, window.pickups
    depth: int | None = None
    alive: list[stats.Worker] = []
    unreadable: list[str] = []
    try:
        depth = await stats.queue_depth(redis, queue_name=settings.queue_name)
    except REDIS_FAILED as exc:  # away, or the queue key is not a sorted set
        log.warning("could not read the queue's depth for /stats: %s", type(exc).__name__)
    try:
        alive, unreadable = await stats.workers(redis, stale_after_seconds=settings.worker_stale_after_seconds)
    except REDIS_FAILED as exc:
        log.warning("could not read the heartbeats for /stats: %s", type(exc).__name__)
    return StatsView(
        now=datetime.now(UTC),
        minutes=minutes,
        queue_depth=depth,
        jobs_by_status=by_status.counts,
        jobs_by_status_estimated=[status for status in JobStatus if status in by_status.estimated],
        throughput=[ThroughputMinute(minute=m.minute, succeeded=m.succeeded, failed=m.failed) for m in per_minute],
        pickup_latency_ms=Percentiles(p50=pickups.whole.p50, p95=pickups.whole.p95, p99=pickups.whole.p99),
        pickup_latency_by_minute=[
            LatencyMinute(minute=m.minute, p50=m.latency.p50, p95=m.latency.p95, p99=m.latency.p99)
            for m in pickups.by_minute
        ],
        workers=[WorkerView(id=w.id, host=w.host, pid=w.pid, last_beat=w.last_beat) for w in alive],
        unreadable_heartbeats=unreadable,
    )
