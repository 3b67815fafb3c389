"""Figures about the jobs, for ``GET /stats`` and the dashboard: counts, throughput, pickup latency.

Everything is computed in Postgres from the jobs ledger: the counts per status over the whole
ledger (a status with more jobs than a limit is estimated, see :func:`jobs_by_status`), the rest
over a window of whole minutes that ends with the current one. Pickup latency is the time from
when a job was due (its ``run_at``, which its first attempt records as ``due_at`` when it starts)
to the start of its first attempt; a negative latency (clocks of the gateway and Postgres a little
apart) counts as 0. First attempts started before migration 0007 have no ``due_at`` and are left
out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from services.contract import JobStatus
from services.heartbeat import live_workers
from services.ledger import Executor

PERCENTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class Minute:
    """Jobs that ended in one minute."""

    minute: datetime
    succeeded: int
    failed: int


@dataclass(frozen=True)
class Latency:
    """Pickup latency percentiles in milliseconds (None when no job started)."""

    p50: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True)
class LatencyMinute:
    """Pickup latency percentiles of the jobs whose first attempt started in one minute."""

    minute: datetime
    latency: Latency


@dataclass(frozen=True)
class Worker:
    """A live worker, from its heartbeat."""

    id: str
    host: str
    pid: int
    last_beat: datetime


_WINDOW_START = "date_trunc('minute', now()) - make_interval(mins => $1 - 1)"

_THROUGHPUT = f"""
SELECT b.minute, COALESCE(c.succeeded, 0) AS succeeded, COALESCE(c.failed, 0) AS failed
FROM generate_series({_WINDOW_START}, date_trunc('minute', now()), interval '1 minute') AS b (minute)
LEFT JOIN (
    SELECT date_trunc('minute', finished_at) AS minute,
           count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE status = 'failed') AS failed
    FROM jobs
    WHERE finished_at >= {_WINDOW_START} AND status IN ('succeeded', 'failed')
    GROUP BY 1
) AS c USING (minute)
ORDER BY b.minute
"""

_PICKUPS = f"""
SELECT started_at, greatest(0, extract(epoch FROM started_at - due_at) * 1000)::float8 AS ms
FROM job_attempts
WHERE try = 1 AND started_at >= {_WINDOW_START} AND due_at IS NOT NULL
"""

# The whole window and each minute in one pass over the pickups (two queries took twice as long or
# more). The row of the whole window is the one with GROUPING(...) = 1, sorted last; it is there
# even when no job started (its percentiles are then NULL).
_LATENCIES = f"""
SELECT GROUPING(date_trunc('minute', started_at)) = 1 AS whole, date_trunc('minute', started_at) AS minute,
       percentile_cont(ARRAY[0.5, 0.95, 0.99]::float8[]) WITHIN GROUP (ORDER BY ms) AS percentiles
FROM ({_PICKUPS}) AS p
GROUP BY GROUPING SETS ((), (date_trunc('minute', started_at)))
ORDER BY whole, minute
"""


def _latency(values: Sequence[float] | None) -> Latency:
    if not values:
        return Latency(p50=None, p95=None, p99=None)
    p50, p95, p99 = (round(value, 3) for value in values)
    return Latency(p50=p50, p95=p95, p99=p99)


@dataclass(frozen=True)
class StatusCounts:
    """Jobs of the ledger per status (every status named, 0 included), and which are estimates."""

    counts: dict[JobStatus, int]
    estimated: frozenset[JobStatus]


async def jobs_by_status(db: Executor, *, exact_limit: int) -> StatusCounts:
    """How many jobs of the ledger are in each status, without reading the whole ledger.

    A status that the planner expects to have at most ``exact_limit`` jobs is counted exactly
    (through the status index); a larger one gets the planner's estimate, from the statistics
    that autovacuum keeps (``migrations/0006_job_counts.sql``), and is named in ``estimated``.
    """
    statuses = [status.value for status in JobStatus]
    rows = await db.fetch("SELECT * FROM afterword_job_counts($1::text[], $2)", statuses, exact_limit)
    by_status = {JobStatus(row["status"]): row for row in rows}
    return StatusCounts(
        counts={status: int(by_status[status]["jobs"]) for status in JobStatus},
        estimated=frozenset(status for status in JobStatus if by_status[status]["estimated"]),
    )


async def throughput(db: Executor, *, minutes: int) -> list[Minute]:
    """Jobs succeeded and failed per minute over the last ``minutes`` minutes, oldest first."""
    rows = await db.fetch(_THROUGHPUT, minutes)
    return [Minute(minute=r["minute"], succeeded=r["succeeded"], failed=r["failed"]) for r in rows]


@dataclass(frozen=True)
class Pickups:
    """Pickup latency percentiles over a window, and per minute of it."""

    whole: Latency
    by_minute: list[LatencyMinute]
    """Minutes in which no job started are left out."""


async def pickup_latency(db: Executor, *, minutes: int) -> Pickups:
    """Pickup latency percentiles over the last ``minutes`` minutes, and per minute."""
    *per_minute, whole = await db.fetch(_LATENCIES, minutes)  # the whole window's row comes last
    return Pickups(
        whole=_latency(whole["percentiles"]),
        by_minute=[LatencyMinute(minute=r["minute"], latency=_latency(r["percentiles"])) for r in per_minute],
    )


async def queue_depth(redis: Redis, *, queue_name: str) -> int:
    """How many jobs wait on the ARQ queue (its sorted set), deferred ones included."""
    return int(await redis.zcard(queue_name))


async def workers(redis: Redis, *, stale_after_seconds: float) -> list[Worker]:
    """The live workers, from their heartbeats."""
    found: list[dict[str, Any]] = await live_workers(redis, stale_after_seconds=stale_after_seconds)
    return [
        Worker(
            id=str(info.get("id", "?")),
            host=str(info.get("host", "?")),
            pid=int(info.get("pid", 0)),
            last_beat=datetime.fromtimestamp(float(info["last_beat"]), UTC),
        )
        for info in found
        if "last_beat" in info
    ]
