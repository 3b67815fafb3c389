"""The jobs ledger in Postgres: one row per accepted job, one per attempt, one per side effect.

The gateway writes a job's row before it acknowledges the job; the worker records every attempt
and the outcome. ``GET /jobs/{id}`` answers from here, so a job's record outlives ARQ's result.
Every statement about the ledger's tables is in this package, one module per table:

* ``jobs`` (:mod:`~services.ledger.jobs`): written by the gateway (:func:`insert_jobs`, the cancel
  and retry routes), by the worker through its attempts, and by the recovery sweep and the
  pruning cron (:func:`settle`, :func:`prune_ended`);
* ``job_attempts`` (:mod:`~services.ledger.attempts`): written by the worker, the starts,
  effects and ends of a batch of jobs in one statement (:func:`keep_books`); :func:`settle`
  closes the open attempt of a job it ends;
* ``job_effects`` (:mod:`~services.ledger.effects`): the side effects each job did, written with
  its attempts, read by a re-run before it repeats one (:func:`effect_done`);
* ``idempotency_keys`` (:mod:`~services.ledger.idempotency`): written by the gateway in the
  statement of the request's jobs, purged by a worker cron;
* ``job_watchers`` (:mod:`~services.ledger.events`): the gateway's watches on the jobs its live
  routes wait for, which make Postgres announce their status changes.

The figures of ``GET /stats`` are read in :mod:`~services.ledger.stats`. Statuses are
:class:`services.contract.JobStatus`'s, never spelled out: statements name them through
:mod:`~services.ledger.statuses` (``tests/unit/test_status_literals.py`` checks). The targets
of the jobs' effects are no part of the ledger: the example application's ``users`` table is
written by ``services/jobs/effects/users.py``.

The schema is built by the migrations, ``migrations/NNNN_name.sql``, applied in order by
:mod:`services.ledger.migrate` (``make migrate``); ``migrations/schema.sql`` shows the schema
they build, in one file, rewritten by ``make schema`` (:mod:`services.ledger.schema_dump`).
"""

from __future__ import annotations

from services.ledger.attempts import (
    Attempt,
    Books,
    Finish,
    Start,
    Started,
    get_attempts,
    keep_books,
    time_since_attempt_started,
    write_bookkeeping,
)
from services.ledger.effects import Effect, effect_done
from services.ledger.events import StatusChange, parse_notification, status_of, sweep_watches, unwatch, watch_status
from services.ledger.executor import Executor
from services.ledger.jobs import (
    PRUNE_BATCH,
    JobRecord,
    NewJob,
    get_job,
    insert_jobs,
    list_jobs,
    prune_ended,
    requeue_for_retry,
    settle,
    unsettled,
)

__all__ = [
    "PRUNE_BATCH",
    "Attempt",
    "Books",
    "Effect",
    "Executor",
    "Finish",
    "JobRecord",
    "NewJob",
    "Start",
    "Started",
    "StatusChange",
    "effect_done",
    "get_attempts",
    "get_job",
    "insert_jobs",
    "keep_books",
    "list_jobs",
    "parse_notification",
    "prune_ended",
    "requeue_for_retry",
    "settle",
    "status_of",
    "sweep_watches",
    "time_since_attempt_started",
    "unsettled",
    "unwatch",
    "watch_status",
    "write_bookkeeping",
]
