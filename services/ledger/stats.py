"""Figures about the jobs, for ``GET /stats`` and the dashboard: counts, throughput, pickup latency.

Everything is computed in Postgres from the jobs ledger: the counts per status over the whole
ledger (a status with more jobs than a limit is estimated, see :func:`jobs_by_status`), the rest
minute by minute (:func:`minute_figures`), put together into a window of whole minutes that
ends with the current one (:func:`window_of`; the gateway keeps the minutes that are over, see
``services.gateway.settled_minutes``). Pickup latency is the time from
when a job was due (its ``run_at``, which its first attempt records as ``due_at`` when it starts)
to the start of its first attempt; a negative latency (clocks of the gateway and Postgres a little
apart) counts as 0. First attempts started before migration 0007 have no ``due_at`` and are left
out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from services.contract import JobStatus
from services.ledger import latency_buckets as latency_histogram
from services.ledger import statuses
from services.ledger.executor import Executor
from services.ledger.latency_buckets import Histogram
from services.queue.heartbeat import read_beats

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


MAX_WINDOW_MINUTES = 1440
"""The longest window ``GET /stats`` gives figures for: a day."""

_ENDED = f"""
SELECT date_trunc('minute', finished_at) AS minute,
       count(*) FILTER (WHERE status = {statuses.literal(JobStatus.succeeded)}) AS succeeded_jobs,
       count(*) FILTER (WHERE status = {statuses.literal(JobStatus.failed)}) AS failed_jobs
FROM jobs
WHERE finished_at >= $1 AND finished_at < $2 AND status IN ({statuses.listed((JobStatus.succeeded, JobStatus.failed))})
GROUP BY 1
"""

# Each minute's percentiles and its histogram of pickups from one pass over the first attempts
# (the CTE is read twice, so Postgres computes it once).
_PICKUPS = f"""
WITH p AS (
    SELECT date_trunc('minute', started_at) AS minute,
           greatest(0, extract(epoch FROM started_at - due_at) * 1000)::float8 AS ms
    FROM job_attempts
    WHERE try = 1 AND started_at >= $1 AND started_at < $2 AND due_at IS NOT NULL
)
SELECT minute, l.percentiles, h.buckets, h.counts
FROM (
    SELECT minute, percentile_cont($3::float8[]) WITHIN GROUP (ORDER BY ms) AS percentiles FROM p GROUP BY minute
) AS l
JOIN (
    SELECT minute, array_agg(bucket ORDER BY bucket) AS buckets, array_agg(n ORDER BY bucket) AS counts
    FROM (SELECT minute, {latency_histogram.bucket_sql("ms")} AS bucket, count(*) AS n FROM p GROUP BY 1, 2) AS b
    GROUP BY minute
) AS h USING (minute)
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
    every = [status.value for status in JobStatus]
    rows = await db.fetch("SELECT * FROM afterword_job_counts($1::text[], $2)", every, exact_limit)
    by_status = {JobStatus(row["status"]): row for row in rows}
    return StatusCounts(
        counts={status: int(by_status[status]["jobs"]) for status in JobStatus},
        estimated=frozenset(status for status in JobStatus if by_status[status]["estimated"]),
    )


@dataclass(frozen=True)
class Pickups:
    """Pickup latency percentiles over a window, and per minute of it."""

    whole: Latency
    by_minute: list[LatencyMinute]
    """Minutes in which no job started are left out."""


@dataclass(frozen=True)
class MinuteFigures:
    """One minute's figures: the jobs that ended in it, and the pickups of the first attempts started in it."""

    minute: datetime
    succeeded: int
    failed: int
    latency: Latency
    """Exact: ``percentile_cont`` over the minute's pickups."""
    pickups: Histogram
    """The minute's pickups counted per bucket: merged with other minutes', a window's percentiles."""


@dataclass(frozen=True)
class Window:
    """The figures of a window of whole minutes, the current one last."""

    throughput: list[Minute]
    """Every minute of the window."""
    pickups: Pickups


MINUTE = timedelta(minutes=1)


def minutes_between(first: datetime, end: datetime) -> list[datetime]:
    """Each minute from ``first`` up to ``end``, excluded (both whole minutes)."""
    return [first + k * MINUTE for k in range(max(0, (end - first) // MINUTE))]


async def minute_figures(db: Executor, first: datetime, end: datetime) -> list[MinuteFigures]:
    """The figures of each minute from ``first`` up to ``end``, excluded, oldest first; 0 for a minute with none."""
    ended = {row["minute"]: row for row in await db.fetch(_ENDED, first, end)}
    started = {row["minute"]: row for row in await db.fetch(_PICKUPS, first, end, list(PERCENTILES))}
    figures = []
    for minute in minutes_between(first, end):
        counts, pickups = ended.get(minute), started.get(minute)
        figures.append(
            MinuteFigures(
                minute=minute,
                succeeded=counts["succeeded_jobs"] if counts else 0,
                failed=counts["failed_jobs"] if counts else 0,
                latency=_latency(pickups["percentiles"] if pickups else None),
                pickups=Histogram.of(pickups["buckets"], pickups["counts"]) if pickups else Histogram.of([], []),
            )
        )
    return figures


def window_of(figures: Sequence[MinuteFigures], *, pickups: Counter[int]) -> Window:
    """The window made of ``figures``, one per minute, oldest first, and ``pickups``, their histograms merged.

    Its pickup percentiles come from that merge, within 1 % of ``percentile_cont`` over every
    pickup (``services.ledger.latency_buckets``).
    """
    return Window(
        throughput=[Minute(minute=f.minute, succeeded=f.succeeded, failed=f.failed) for f in figures],
        pickups=Pickups(
            whole=_latency(latency_histogram.percentiles(pickups, PERCENTILES)),
            by_minute=[LatencyMinute(minute=f.minute, latency=f.latency) for f in figures if f.pickups],
        ),
    )


async def queue_depth(redis: Redis, *, queue_name: str) -> int:
    """How many jobs wait on the ARQ queue (its sorted set), deferred ones included."""
    return int(await redis.zcard(queue_name))


async def workers(redis: Redis, *, stale_after_seconds: float) -> tuple[list[Worker], list[str]]:
    """The live workers, from their heartbeats, and the ids of the heartbeats that could not be read."""
    beats = await read_beats(redis, stale_after_seconds=stale_after_seconds)
    alive, unreadable = [], list(beats.unreadable)
    for info in beats.workers:
        try:
            last_beat = datetime.fromtimestamp(info["last_beat"], UTC)
        except (OverflowError, OSError, ValueError):  # a time no datetime holds
            unreadable.append(str(info.get("id", "?")))
            continue
        alive.append(
            Worker(
                id=str(info.get("id", "?")),
                host=str(info.get("host", "?")),
                pid=info.get("pid", 0),
                last_beat=last_beat,
            )
        )
    return alive, unreadable
