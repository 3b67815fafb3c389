"""What ARQ hands every job: the resources ``on_startup`` opened, plus the job's own ids."""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

import asyncpg

from services.core.settings import Settings
from services.jobs.attempts import AttemptBook
from services.jobs.effects.log_writer import LogWriter
from services.jobs.effects.mailer import Mailer
from services.jobs.effects.users import UserRepository
from services.jobs.metrics import JobMetrics, MetricsServer
from services.jobs.relay import Relay
from services.queue import QueueRedis
from services.queue.heartbeat import Heartbeat
from services.queue.leases import LeaseKeeper


class WorkerContext(TypedDict):
    """The worker's ``ctx`` after ``on_startup``; closed again by ``on_shutdown``."""

    redis: QueueRedis
    settings: Settings
    worker_id: str
    db: asyncpg.Pool
    mailer: Mailer
    log_writer: LogWriter
    users: UserRepository
    heartbeat: Heartbeat
    leases: LeaseKeeper
    attempts: AttemptBook
    metrics: JobMetrics
    metrics_server: MetricsServer | None
    relay: Relay


class JobContext(WorkerContext):
    """The ``ctx`` of one run of a job."""

    job_id: str
    job_try: int
    attempt: int
    enqueue_time: datetime
    score: int
