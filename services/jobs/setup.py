"""The jobs service's set-up: what the worker runs, and the resources its jobs share.

``worker_options(settings)`` builds the keyword arguments of the worker
(``services.queue.worker.QueueWorker``): the job functions, the cron runs (the recovery sweep,
the ledger's pruning, the purge of expired Idempotency-Keys, the temp-file cleaner), and
``on_startup``/``on_shutdown``, which open and close the pools, the effects' resources and the
relay of transactional enqueues (``services.jobs.relay``).
``python -m services.jobs`` uses it.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any, cast

from services.contract import JOBS, JobName
from services.core.database import create_pool
from services.core.serialization import deserialize, serialize
from services.core.settings import Settings
from services.jobs import metrics as job_metrics
from services.jobs.attempts import AttemptBook
from services.jobs.context import WorkerContext
from services.jobs.effects.log_writer import LogWriter
from services.jobs.effects.mailer import Mailer
from services.jobs.effects.users import UserRepository
from services.jobs.execution import REGISTRY, SCHEDULED, end_retry_seconds, install
from services.jobs.loading import load
from services.jobs.relay import Relay
from services.jobs.retries import check_retries_fit, job_timeout, retry_policy
from services.jobs.sweeper import sweep
from services.ledger import job_kinds, prune_ended
from services.ledger.idempotency import purge_expired
from services.queue import RedisSettings, WorkerCoroutine, job_function, scheduled
from services.queue.heartbeat import Heartbeat
from services.queue.leases import LeaseKeeper
from services.queue.timeouts import call_timeout

CRON_CLEANUP = "cron:" + JobName.cleanup_temp_files
CRON_SWEEP = "cron:recovery_sweep"
CRON_PRUNE = "cron:prune_ledger"
CRON_PURGE_KEYS = "cron:purge_idempotency_keys"
log = logging.getLogger("afterword.jobs")

CLIENT_CHECK_MS = 1000
"""How often Postgres checks, during a worker's statement, that the worker is still connected."""


def new_worker_id() -> str:
    """A name for this worker process, unique across hosts and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def on_startup(ctx: dict[str, Any]) -> None:
    """Open the worker's resources and start its heartbeat."""
    settings: Settings = ctx["settings"]
    db = await create_pool(
        settings.database_dsn,
        min_size=1,
        max_size=settings.worker_max_jobs + 2,
        # A worker that dies mid-statement (SIGKILL, OOM) takes its statement with it: Postgres
        # checks every second that the worker is still there, rather than finishing (and
        # committing) a write it waits on, a lock say, for a run that no longer exists.
        server_settings={"client_connection_check_interval": str(CLIENT_CHECK_MS)},
        # A worker cut off from Postgres gives up on a statement (or a connection) in a third of
        # a lease instead of waiting for the network (services.queue.timeouts).
        command_timeout=call_timeout(settings.lease_seconds),
        timeout=call_timeout(settings.lease_seconds),
    )
    ctx.update(
        db=db,
        mailer=Mailer.from_settings(settings),
        log_writer=LogWriter(settings.log_file),
        users=UserRepository(db),
        attempts=AttemptBook(db, worker_id=ctx["worker_id"]),  # attempt starts/ends, batched
    )
    await job_kinds.sync(db)  # the jobs this worker runs are the ones afterword_enqueue accepts
    # Prometheus metrics: recorded by the job wrapper, served on WORKER_METRICS_PORT (0: off).
    ctx["metrics"] = job_metrics.JobMetrics()
    ctx["metrics_server"] = metrics_server = await job_metrics.serve(
        ctx["metrics"],
        ctx["redis"],
        queue_name=settings.queue_name,
        host=settings.worker_metrics_host,
        port=settings.worker_metrics_port,
    )
    heartbeat = Heartbeat(
        ctx["redis"],
        worker_id=ctx["worker_id"],
        info={
            "id": ctx["worker_id"],
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queue": settings.queue_name,
            "metrics_port": None if metrics_server is None else metrics_server.port,
        },
        interval=settings.heartbeat_seconds,
    )
    await heartbeat.start()
    ctx["heartbeat"] = heartbeat
    leases = LeaseKeeper(ctx["redis"], lease_seconds=settings.lease_seconds)
    await leases.start()
    ctx["leases"] = leases
    # Jobs enqueued in applications' transactions: queued as they commit. What it could miss while
    # not listening is either in its catch-up or old enough for the recovery sweep.
    relay = Relay(
        settings.database_dsn,
        ctx["redis"],
        queue_name=settings.queue_name,
        catch_up_seconds=settings.sweep_idle_seconds + settings.sweep_every_seconds,
        call_seconds=call_timeout(settings.lease_seconds),
    )
    await relay.start()
    ctx["relay"] = relay


async def on_shutdown(ctx: dict[str, Any]) -> None:
    """Close what ``on_startup`` opened."""
    context = cast(WorkerContext, ctx)
    if "relay" in context:
        await context["relay"].stop()
    if "leases" in context:
        await context["leases"].stop()
    if "heartbeat" in context:
        await context["heartbeat"].stop()
    if "db" in context:
        await context["db"].close()
    if "mailer" in context:
        await context["mailer"].close()
    metrics_server = ctx.pop("metrics_server", None)  # popped: stopped once, whoever calls on_shutdown again
    if metrics_server is not None:
        await metrics_server.stop()


async def recovery_sweep(ctx: dict[str, Any]) -> dict[str, int]:
    """Cron: reconcile unfinished ledger rows with what Redis knows (see services.jobs.sweeper)."""
    context = cast(WorkerContext, ctx)
    settings = context["settings"]
    report = await sweep(
        db=context["db"],
        redis=context["redis"],
        queue_name=settings.queue_name,
        idle_seconds=settings.sweep_idle_seconds,
    )
    return {
        "checked": report.checked,
        "requeued": len(report.requeued),
        "restored": len(report.restored),
        "settled": len(report.settled),
    }


async def prune_ledger(ctx: dict[str, Any]) -> dict[str, int]:
    """Cron: delete the jobs that ended longer ago than they are kept (``keep_days``, else ``JOB_RETENTION_DAYS``)."""
    context = cast(WorkerContext, ctx)
    pruned = 0
    for names, days in retention(context["settings"]):
        if days > 0:
            gone = await prune_ended(context["db"], ended_before_seconds=days * 86400, names=names)
            if gone:
                log.info("pruned %d %s job(s) that ended more than %g day(s) ago", gone, "/".join(names), days)
            pruned += gone
    return {"pruned": pruned}


def retention(settings: Settings) -> list[tuple[list[str], float]]:
    """The jobs' names grouped by how many days an ended job is kept (0: forever)."""
    groups: dict[float, list[str]] = {}
    for name, definition in JOBS.items():
        days = settings.job_retention_days if definition.keep_days is None else definition.keep_days
        groups.setdefault(days, []).append(name.value)
    return [(names, days) for days, names in sorted(groups.items())]


async def purge_idempotency_keys(ctx: dict[str, Any]) -> dict[str, int]:
    """Cron: delete every Idempotency-Key older than 24 hours, in batches, however many there are."""
    context = cast(WorkerContext, ctx)
    purged = await purge_expired(context["db"])
    if purged:
        log.info("purged %d expired Idempotency-Key(s)", purged)
    return {"purged": purged}


def worker_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of the worker for these settings.

    Every job's implementation is loaded first (``services.jobs.loading``): a job defined without
    one, or implemented without a definition, raises ``JobCatalogError`` naming it.
    """
    install(load())
    check_retries_fit(settings)

    # ARQ's own timeout is a backstop: the job wrapper stops a job at its timeout and records it
    # (trying again for a while to write its end), so ARQ never has to kill one unrecorded.
    def backstop_of(name: JobName) -> float:
        return job_timeout(name, settings) + end_retry_seconds(settings) + 5

    backstop = max(backstop_of(name) for name in JobName)
    functions = [
        job_function(
            cast(WorkerCoroutine, REGISTRY[name]),
            name=name.value,
            timeout=backstop_of(name),
            max_tries=retry_policy(name, settings).tries,
        )
        for name in JobName
    ]
    every = set(range(0, 60, settings.sweep_every_seconds))
    cron_jobs = [
        scheduled(
            cast(WorkerCoroutine, SCHEDULED[JobName.cleanup_temp_files]),
            name=CRON_CLEANUP,
            second=0,
            timeout=backstop_of(JobName.cleanup_temp_files),
        ),
        scheduled(recovery_sweep, name=CRON_SWEEP, second=every, timeout=60, keep_result=0),
        # Every minute (several workers: ARQ runs each tick once); one run deletes all that expired.
        scheduled(purge_idempotency_keys, name=CRON_PURGE_KEYS, second=20, timeout=300, keep_result=0),
    ]
    if any(days > 0 for _, days in retention(settings)):  # every 10 minutes; several workers: ARQ runs each tick once
        prune_ticks = set(range(0, 60, 10))
        cron_jobs.append(
            scheduled(prune_ledger, name=CRON_PRUNE, minute=prune_ticks, second=30, timeout=300, keep_result=0)
        )
    return {
        "functions": functions,
        "cron_jobs": cron_jobs,
        "redis_settings": RedisSettings.from_dsn(str(settings.redis_url)),
        "queue_name": settings.queue_name,
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "max_jobs": settings.worker_max_jobs,
        "job_timeout": backstop,
        "keep_result": settings.keep_result_seconds,
        "max_tries": settings.job_max_tries,
        "health_check_interval": settings.heartbeat_seconds,
        "allow_abort_jobs": True,
        "job_completion_wait": settings.shutdown_grace_seconds,
        "ctx": {"settings": settings, "worker_id": new_worker_id()},
    }
