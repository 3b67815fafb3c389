"""The jobs worker's Prometheus metrics, and the small HTTP endpoint that serves them.

``on_startup`` puts a :class:`JobMetrics` (with a registry of its own) into the worker's ``ctx``;
the job wrapper (``services.jobs.execution``) opens a :class:`JobRun` per run and ends it with the
run's outcome. The queue gauges are read from Redis when the endpoint is scraped.

The endpoint is a plain ``asyncio.start_server`` on ``WORKER_METRICS_PORT`` that answers any GET
with the metrics: no thread (unlike ``prometheus_client.start_http_server``), so ``on_shutdown``
closes it for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from redis.asyncio import Redis

from services.contract import JobName, JobStatus
from services.ledger import attempts as ledger_attempts
from services.queue import RetryLater, inspection
from services.queue.fencing import WRITES, Fenced

log = logging.getLogger("afterword.jobs.metrics")

SUCCEEDED, FAILED, RETRYING = JobStatus.succeeded.value, JobStatus.failed.value, JobStatus.retrying.value
"""A run's outcome: the job's status after the run, as the ledger records it..."""
INTERRUPTED = ledger_attempts.INTERRUPTED
"""...or, for a run cut short (the worker stopped, the job was aborted), its attempt's outcome in the ledger."""
OUTCOMES = (SUCCEEDED, FAILED, RETRYING, INTERRUPTED)
SKIPPED = "skipped"
"""A run that found its job already ended and did nothing: logged, not counted."""
REFUSED = "refused"
"""A run refused because the ledger does not know its job (planted in Redis): counted apart."""
FENCED = "fenced"
"""A run that lost its claim on the job and stopped: logged, counted in ``afterword_fenced_writes``."""

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
PICKUP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
OLDEST_SCAN = 100
"""How many of the queue's due jobs are checked for the oldest one that is not running."""


class JobMetrics:
    """The worker's metrics, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.jobs = Counter(
            "afterword_jobs", "Job runs ended, by job name and outcome.", ["name", "outcome"], registry=self.registry
        )
        self.duration = Histogram(
            "afterword_job_duration_seconds",
            "How long a run took, ledger bookkeeping included, by job name.",
            ["name"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.pickup = Histogram(
            "afterword_job_pickup_latency_seconds",
            "From the time a run was due (enqueue, defer or retry time) to its start, by job name.",
            ["name"],
            buckets=PICKUP_BUCKETS,
            registry=self.registry,
        )
        self.retries = Counter(
            "afterword_job_retries",
            "Runs that ended in a retry being scheduled, by job name.",
            ["name"],
            registry=self.registry,
        )
        self.crash_reruns = Counter(
            "afterword_job_crash_reruns",
            "Starts that found an attempt left open by a dead worker, by job name.",
            ["name"],
            registry=self.registry,
        )
        self.refused = Counter(
            "afterword_jobs_refused",
            "Jobs refused without running because the ledger does not know them (written to Redis by something "
            "other than the gateway), by job name.",
            ["name"],
            registry=self.registry,
        )
        self.handed_over = Counter(
            "afterword_jobs_handed_over",
            "Jobs the enqueue handed to this worker as it waited, with no claim (services/queue/handoff.py).",
            registry=self.registry,
        )
        self.fenced = Counter(
            "afterword_fenced_writes",
            "Writes and actions of a worker refused because its claim on the job was superseded "
            "(its lease lost: paused, cut off or stalled past it), by write (services/queue/fencing.py).",
            ["write"],
            registry=self.registry,
        )
        for write in WRITES:
            self.fenced.labels(write=write)
        self.in_progress = Gauge(
            "afterword_jobs_in_progress", "Jobs this worker is running now.", registry=self.registry
        )
        self.queue_depth = Gauge(
            "afterword_queue_depth",
            "Entries in the ARQ queue: waiting, deferred and running jobs (read at scrape time).",
            registry=self.registry,
        )
        self.oldest_age = Gauge(
            "afterword_oldest_queued_job_age_seconds",
            "How long the oldest due job that no worker runs yet has been waiting; 0 when none (read at scrape time).",
            registry=self.registry,
        )
        for name in JobName:  # every series exists from the start, at 0
            for outcome in OUTCOMES:
                self.jobs.labels(name=name.value, outcome=outcome)
            for metric in (self.duration, self.pickup, self.retries, self.crash_reruns, self.refused):
                metric.labels(name=name.value)

    def start(self, name: JobName, *, due_ms: float | None) -> JobRun:
        """A run of ``name`` begins; ``due_ms`` is ARQ's score, the time it was due (ms since the epoch)."""
        return JobRun(self, name.value, due_ms=due_ms)

    async def refresh_queue(self, redis: Redis, queue_name: str) -> None:
        """Read the queue gauges from the ARQ queue's sorted set."""
        found = await inspection.depth(redis, queue_name=queue_name, scan=OLDEST_SCAN)
        self.queue_depth.set(found.entries)
        self.oldest_age.set(found.oldest_waiting_seconds)

    def render(self) -> bytes:
        """Every metric in Prometheus' text exposition format."""
        return generate_latest(self.registry)


class JobRun:
    """One run of a job: counted in progress from :meth:`JobMetrics.start` to :meth:`end`."""

    def __init__(self, metrics: JobMetrics, name: str, *, due_ms: float | None) -> None:
        self._metrics = metrics
        self.name = name
        self._started = time.perf_counter()
        self._skipped = False
        self._refused = False
        self.pickup_seconds: float | None = None
        if due_ms is not None:
            self.pickup_seconds = max(0.0, time.time() - due_ms / 1000)
            metrics.pickup.labels(name=name).observe(self.pickup_seconds)
        metrics.in_progress.inc()

    @property
    def elapsed(self) -> float:
        """Seconds since the run began."""
        return time.perf_counter() - self._started

    def crash_rerun(self) -> None:
        """This start found an attempt a dead worker had left open."""
        self._metrics.crash_reruns.labels(name=self.name).inc()

    def skip(self) -> None:
        """The job had already ended: this run does nothing and is not counted."""
        self._skipped = True

    def refuse(self) -> None:
        """The ledger does not know the job: it is not run, and counted as refused only."""
        self._refused = True

    def end(self, error: BaseException | None) -> str:
        """Count the run's outcome, from how it ended (``error`` is what it raised), and return it."""
        self._metrics.in_progress.dec()
        if self._skipped:
            return SKIPPED
        if self._refused:
            self._metrics.refused.labels(name=self.name).inc()
            return REFUSED
        if isinstance(error, Fenced):
            return FENCED
        if error is None:
            outcome = SUCCEEDED
        elif isinstance(error, RetryLater):
            outcome = RETRYING
            self._metrics.retries.labels(name=self.name).inc()
        elif isinstance(error, asyncio.CancelledError):
            outcome = INTERRUPTED
        else:
            outcome = FAILED
        self._metrics.jobs.labels(name=self.name, outcome=outcome).inc()
        self._metrics.duration.labels(name=self.name).observe(self.elapsed)
        return outcome


Render = Callable[[], Awaitable[bytes]]

_READ_TIMEOUT = 10.0
_MAX_HEADER_LINES = 100


class MetricsServer:
    """A minimal HTTP/1.1 server: any GET (or HEAD) gets ``render()``'s body, anything else 405."""

    def __init__(self, render: Render, *, host: str, port: int) -> None:
        self._render = render
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        """The port it listens on (the one the OS chose when started with port 0)."""
        if self._server is None:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen; raises OSError when the port is taken."""
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def stop(self) -> None:
        """Stop listening and close the connections still open."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for writer in list(self._connections):
            writer.close()
        await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                request_line = await reader.readline()
                for _ in range(_MAX_HEADER_LINES):
                    if (await reader.readline()) in (b"\r\n", b"\n", b""):
                        break
            method = request_line.split(b" ", 1)[0]
            if method in (b"GET", b"HEAD"):
                body = await self._render()
                head = _head(200, "OK", CONTENT_TYPE_PLAIN_0_0_4, len(body))
                writer.write(head if method == b"HEAD" else head + body)
            else:
                message = b"only GET is served here\n"
                writer.write(_head(405, "Method Not Allowed", "text/plain; charset=utf-8", len(message)) + message)
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError):  # a slow, gone or garbled client
            pass
        except Exception:
            log.exception("the metrics endpoint failed to answer")
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _head(status: int, reason: str, content_type: str, length: int) -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


async def serve(metrics: JobMetrics, redis: Redis, *, queue_name: str, host: str, port: int) -> MetricsServer | None:
    """Start the worker's metrics endpoint; None when ``port`` is 0 or already taken.

    A taken port is logged as an error and the worker runs on without metrics: several workers on
    one host each need their own ``WORKER_METRICS_PORT``.
    """
    if port == 0:
        return None

    async def render() -> bytes:
        try:
            async with asyncio.timeout(2):
                await metrics.refresh_queue(redis, queue_name)
        except Exception as exc:  # the queue gauges keep their last values
            log.warning("could not read the queue for the metrics: %s", type(exc).__name__)
        return metrics.render()

    server = MetricsServer(render, host=host, port=port)
    try:
        await server.start()
    except OSError as exc:
        log.error(
            "metrics endpoint not started on %s:%d (%s): give each worker on a host its own WORKER_METRICS_PORT, "
            "or 0 to turn it off",
            host,
            port,
            exc.strerror or exc,
        )
        return None
    log.info("metrics endpoint on http://%s:%d/metrics", host, server.port)
    return server
