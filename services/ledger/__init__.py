"""The jobs ledger in Postgres: one row per accepted job, one per attempt, one per side effect.

The gateway writes a job's row before it acknowledges the job; the worker records every attempt
and the outcome. ``GET /jobs/{id}`` answers from here, so a job's record outlives ARQ's result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.contract import JobName, JobStatus
from services.core.serialization import json_bytes
from services.ledger import idempotency as idempotency_keys
from services.ledger.idempotency import KeyRecord

Executor = asyncpg.Connection | asyncpg.Pool | PoolConnectionProxy
"""Anything that runs a query: a pool, or a connection inside a transaction."""


@dataclass(frozen=True)
class NewJob:
    """A job the gateway is about to acknowledge."""

    id: str
    name: JobName
    payload: dict[str, Any]
    status: JobStatus
    run_at: datetime
    request_id: str | None = None


@dataclass(frozen=True)
class Attempt:
    """One start of a job and how it ended (``outcome`` is None while it runs)."""

    try_: int
    worker: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    error: str | None


@dataclass(frozen=True)
class JobRecord:
    """A job's row of the ledger."""

    id: str
    name: str
    payload: dict[str, Any]
    status: JobStatus
    tries: int
    result: Any
    error: str | None
    request_id: str | None
    enqueued_at: datetime
    run_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


_JOB_COLUMNS = (
    "id, name, payload, status, tries, result, error, request_id, enqueued_at, run_at, started_at, finished_at"
)


def _record(row: asyncpg.Record) -> JobRecord:
    return JobRecord(
        id=row["id"],
        name=row["name"],
        payload=json.loads(row["payload"]),
        status=JobStatus(row["status"]),
        tries=row["tries"],
        result=None if row["result"] is None else json.loads(row["result"]),
        error=row["error"],
        request_id=row["request_id"],
        enqueued_at=row["enqueued_at"],
        run_at=row["run_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


async def insert_jobs(
    db: Executor, jobs: Sequence[NewJob], *, keyed: Sequence[tuple[KeyRecord, Sequence[NewJob]]] = ()
) -> list[bool]:
    """Record newly accepted jobs, all of them or none, in one statement (one round trip).

    ``keyed`` are the requests that carried an Idempotency-Key: each key's row (with its
    response) and that request's jobs are written by the same statement, so they commit together.
    A key another request already recorded (and that has not expired) is not written, and neither
    are its jobs. Returns, for each of ``keyed``, whether it was written.

    Outside a transaction the statement commits on its own; the 202 may follow when it returns.
    """
    every = [*jobs, *(job for _, request_jobs in keyed for job in request_jobs)]
    arguments: list[Any] = [
        [j.id for j in every],
        [j.name.value for j in every],
        [json_bytes(j.payload).decode() for j in every],
        [j.status.value for j in every],
        [j.run_at for j in every],
        [j.request_id for j in every],
    ]
    if not keyed:
        await db.execute(f"INSERT INTO jobs {_NEW_JOBS} SELECT * FROM unnest({_NEW_JOB_ARRAYS})", *arguments)
        return []
    keys = [key for key, _ in keyed]
    # Each job's key (NULL for a job without one), to keep the jobs whose key was not written out.
    arguments += [
        [None] * len(jobs) + [key.scope for key, request_jobs in keyed for _ in request_jobs],
        [None] * len(jobs) + [key.key for key, request_jobs in keyed for _ in request_jobs],
        *idempotency_keys.insert_arguments(keys),
    ]
    rows = await db.fetch(
        f"WITH written AS ({idempotency_keys.insert_keys(9)}), "
        f"inserted AS (INSERT INTO jobs {_NEW_JOBS} SELECT t.id, t.name, t.payload, t.status, t.run_at, t.request_id "
        f"FROM unnest({_NEW_JOB_ARRAYS}, $7::text[], $8::text[]) "
        "AS t(id, name, payload, status, run_at, request_id, scope, key) "
        "WHERE t.key IS NULL OR (t.scope, t.key) IN (SELECT scope, key FROM written)) "
        "SELECT scope, key FROM written",
        *arguments,
    )
    written = {(row["scope"], row["key"]) for row in rows}
    return [(key.scope, key.key) in written for key in keys]


_NEW_JOBS = "(id, name, payload, status, run_at, request_id)"
_NEW_JOB_ARRAYS = "$1::text[], $2::text[], $3::jsonb[], $4::text[], $5::timestamptz[], $6::text[]"


async def get_job(db: Executor, job_id: str) -> JobRecord | None:
    """The ledger row of one job, or None."""
    row = await db.fetchrow(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = $1", job_id)
    return None if row is None else _record(row)


async def get_attempts(db: Executor, job_id: str) -> list[Attempt]:
    """Every attempt of a job, oldest first."""
    rows = await db.fetch(
        "SELECT try, worker, started_at, finished_at, outcome, error FROM job_attempts WHERE job_id = $1 ORDER BY try",
        job_id,
    )
    return [
        Attempt(
            try_=r["try"],
            worker=r["worker"],
            started_at=r["started_at"],
            finished_at=r["finished_at"],
            outcome=r["outcome"],
            error=r["error"],
        )
        for r in rows
    ]


async def time_since_attempt_started(db: Executor, *, job_id: str, attempt: int) -> timedelta | None:
    """How long ago (by Postgres' clock, which wrote it) a job's attempt started; None if it has no such attempt."""
    since: timedelta | None = await db.fetchval(
        "SELECT clock_timestamp() - started_at FROM job_attempts WHERE job_id = $1 AND try = $2", job_id, attempt
    )
    return since


@dataclass(frozen=True)
class Started:
    """What :func:`start_attempt` found: the status before this start, and this attempt's number.

    ``request_id`` is the one stored with the job; ``crash_rerun`` is True when this start closed
    an attempt that a dead worker had left open. ``superseded_by`` is set when the start was
    refused because a later claim holds the job (migration 0011): ARQ's try number of that claim.
    """

    previous: JobStatus | None
    attempt: int
    request_id: str | None = None
    crash_rerun: bool = False
    superseded_by: int | None = None

    @property
    def may_run(self) -> bool:
        """False when the ledger does not know the job, it already ended (succeeded, failed or
        cancelled meanwhile), or a later claim holds it."""
        return self.superseded_by is None and self.previous is not None and not self.previous.is_final


@dataclass(frozen=True)
class Start:
    """A claim's start of its job: the job's id and ARQ's try number of the claim (None: not known).

    The try number fences the start (migration 0011): a start whose try is not ahead of the
    running attempt's came from a claim that lost its lease before the start got here.
    """

    job_id: str
    job_try: int | None = None


async def start_attempt(db: Executor, *, job_id: str, worker: str, job_try: int | None = None) -> Started:
    """Mark a job in progress and open its next attempt, in one round trip.

    An attempt left open by a worker that died is closed as ``interrupted`` first. For a job the
    ledger does not know (one the gateway never accepted) ``previous`` is None and nothing is
    written; for a job already in a final state nothing is written either. The caller must run
    neither (``may_run`` is False). With ``job_try`` (ARQ's try number of the claim) a start
    behind the running attempt's claim is refused (``superseded_by``) and writes nothing.
    """
    books = await keep_books(db, worker=worker, starts=[Start(job_id, job_try)])
    return books.started[0]


async def start_attempts(db: Executor, *, job_ids: Sequence[str], worker: str) -> list[Started]:
    """:func:`start_attempt` for several jobs in one statement (one commit); results in order.

    Each job's statements run server-side under its row's lock (migration 0004,
    ``afterword_start_attempt``); the rows are locked in id order.
    """
    return await write_bookkeeping(db, worker=worker, starts=job_ids)


def _started(row: asyncpg.Record) -> Started:
    if row["previous"] is None:
        return Started(previous=None, attempt=0)
    return Started(
        previous=JobStatus(row["previous"]),
        attempt=row["attempt"],
        request_id=row["request_id"],
        crash_rerun=row["crash_rerun"],
        superseded_by=row["superseded_by"],
    )


@dataclass(frozen=True)
class Finish:
    """How an attempt ended: the job's new status, and its result or error.

    ``run_at``, given with ``retrying``, is when the next try is due: it becomes the job's
    ``run_at``, which the next attempt records as its due time and the recovery sweep puts the
    job back at if Redis lost it.
    """

    job_id: str
    attempt: int
    status: JobStatus
    result: Any = None
    error: str | None = None
    run_at: datetime | None = None


async def finish_attempt(
    db: Executor,
    *,
    job_id: str,
    attempt: int,
    status: JobStatus,
    result: Any = None,
    error: str | None = None,
    run_at: datetime | None = None,
) -> bool:
    """Record how an attempt ended and the job's resulting status, in one statement.

    ``status`` is the job's new status: ``succeeded``/``failed`` end it, ``retrying`` means ARQ
    will run it again (at ``run_at``, which the job's row then holds), ``queued`` means it was
    interrupted and handed back. A job already final (cancelled meanwhile) keeps its status; its
    attempt is then recorded as ``cancelled``.

    Fenced: the end is written only while ``attempt`` is the job's current, open attempt. Returns
    False when it was refused (a later attempt started, or the attempt was closed already with
    another outcome): then nothing changed. The same end written twice is written once, and True.
    """
    refused = await finish_attempts(db, [Finish(job_id, attempt, status, result, error, run_at)])
    return not refused


async def finish_attempts(db: Executor, finishes: Sequence[Finish]) -> list[tuple[str, int]]:
    """:func:`finish_attempt` for several attempts in one statement (one commit); the refused ends' (job, attempt)."""
    return (await keep_books(db, finishes=finishes)).refused_ends


def _finish_ctes(first: int) -> str:
    # Fenced by attempt: the job's row changes only while the attempt is its current one (``tries``)
    # and the job runs; the attempt's row only while it is open and current. The conditions are on
    # the rows updated, so an end that waited for a start's row lock sees the start's row.
    p = [f"${first + i}" for i in range(8)]
    return (
        "input AS ("
        f"  SELECT * FROM unnest({p[0]}::text[], {p[1]}::int[], {p[2]}::text[], {p[3]}::text[], {p[4]}::jsonb[], "
        f"  {p[5]}::text[], {p[6]}::bool[], {p[7]}::timestamptz[]) "
        "  AS t(id, try, status, outcome, result, error, final, run_at)"
        "), job AS ("
        "  UPDATE jobs j SET status = i.status, result = i.result, error = i.error, updated_at = clock_timestamp(), "
        "  finished_at = CASE WHEN i.final THEN clock_timestamp() ELSE NULL END, run_at = COALESCE(i.run_at, j.run_at) "
        "  FROM input i WHERE j.id = i.id AND j.tries = i.try AND j.status = 'in_progress' "
        "  AND EXISTS (SELECT 1 FROM job_attempts o WHERE o.job_id = i.id AND o.try = i.try AND o.outcome IS NULL) "
        "  RETURNING j.id"
        "), attempt AS ("
        "  UPDATE job_attempts a SET finished_at = clock_timestamp(), error = i.error, "
        "  outcome = CASE WHEN i.id IN (SELECT id FROM job) THEN i.outcome ELSE 'cancelled' END "
        "  FROM input i JOIN jobs c ON c.id = i.id "
        "  WHERE a.job_id = i.id AND a.try = i.try AND a.outcome IS NULL AND c.tries = i.try "
        "  RETURNING a.job_id, a.try"
        ")"
    )


_REFUSED_ENDS = (
    # Neither written now nor there already (the same end, written by an earlier try of this write).
    "SELECT 'end' AS kind, i.id, NULL::text AS previous, NULL::text AS request_id, i.try AS attempt, "
    "NULL::bool AS crash_rerun, NULL::int AS superseded_by FROM input i "
    "WHERE NOT EXISTS (SELECT 1 FROM attempt w WHERE w.job_id = i.id AND w.try = i.try) "
    "AND NOT EXISTS (SELECT 1 FROM job_attempts a JOIN jobs c ON c.id = a.job_id "
    "  WHERE a.job_id = i.id AND a.try = i.try AND c.tries = a.try AND a.outcome = i.outcome)"
)


def _finish_arguments(finishes: Sequence[Finish]) -> list[Any]:
    return [
        [f.job_id for f in finishes],
        [f.attempt for f in finishes],
        [f.status.value for f in finishes],
        ["interrupted" if f.status is JobStatus.queued else f.status.value for f in finishes],
        [None if f.result is None else json.dumps(f.result, default=str) for f in finishes],
        [f.error for f in finishes],
        [f.status.is_final for f in finishes],
        [f.run_at for f in finishes],
    ]


@dataclass(frozen=True)
class Effect:
    """A side effect a job did (``email``, ``log_line``), with what identifies it.

    With ``attempt`` it is recorded only while that attempt is the job's current one (fenced);
    without, always.
    """

    job_id: str
    effect: str
    detail: dict[str, Any]
    attempt: int | None = None


@dataclass(frozen=True)
class Books:
    """What :func:`keep_books` did: the starts' results, and the fenced writes it refused."""

    started: list[Started]
    refused_ends: list[tuple[str, int]]
    """(job id, attempt) of each end refused: its attempt is no longer the job's current, open one."""
    refused_effects: list[tuple[str, str]]
    """(job id, effect) of each effect refused: its attempt is no longer the job's current one."""


async def write_bookkeeping(
    db: Executor,
    *,
    worker: str = "",
    starts: Sequence[str | Start] = (),
    effects: Sequence[Effect] = (),
    finishes: Sequence[Finish] = (),
) -> list[Started]:
    """:func:`keep_books`, returning only the starts' results."""
    return (await keep_books(db, worker=worker, starts=starts, effects=effects, finishes=finishes)).started


async def keep_books(
    db: Executor,
    *,
    worker: str = "",
    starts: Sequence[str | Start] = (),
    effects: Sequence[Effect] = (),
    finishes: Sequence[Finish] = (),
) -> Books:
    """Start attempts (for ``worker``), record effects and finish attempts, in one statement.

    One round trip and one commit for all of them; the starts' results come back in the order
    of ``starts`` (a job id alone is a start with no try number). A job's start may not share a
    statement with its effects or its end (they follow it); its effects and its end may (they
    write different tables). :func:`start_attempts`, :func:`record_effect` and
    :func:`finish_attempts` are this with one kind of write. Ends, and effects that name their
    attempt, are fenced: those whose attempt is no longer the job's current one are refused and
    listed in the result.
    """
    ctes: list[str] = []
    selects: list[str] = []
    arguments: list[Any] = []
    wanted = [start if isinstance(start, Start) else Start(start) for start in starts]
    if wanted:
        if not worker:
            raise ValueError("starting attempts needs the worker's id")
        first: dict[str, Start] = {}
        for start in wanted:
            first.setdefault(start.job_id, start)
        ordered = sorted(first.values(), key=lambda start: start.job_id)
        ctes.append(
            "started AS (SELECT j.id, s.* FROM unnest($1::text[], $3::int[]) AS j(id, job_try), "
            "LATERAL afterword_start_attempt(j.id, $2, j.job_try) AS s ORDER BY j.id)"
        )
        selects.append(
            "SELECT 'start' AS kind, id, previous, request_id, attempt, crash_rerun, superseded_by FROM started"
        )
        arguments += [[start.job_id for start in ordered], worker, [start.job_try for start in ordered]]
    if effects:  # only then: a statement without effects takes no lock on job_effects
        n = len(arguments)
        ctes.append(
            f"effect_input AS (SELECT e.*, e.attempt IS NULL OR EXISTS (SELECT 1 FROM jobs c "
            f"WHERE c.id = e.job_id AND c.tries = e.attempt) AS current FROM "
            f"unnest(${n + 1}::text[], ${n + 2}::text[], ${n + 3}::jsonb[], ${n + 4}::int[]) "
            "AS e(job_id, effect, detail, attempt)), "
            "effects AS (INSERT INTO job_effects (job_id, effect, detail) SELECT job_id, effect, detail "
            "FROM effect_input WHERE current ON CONFLICT DO NOTHING RETURNING 1)"
        )
        selects.append(
            "SELECT 'effect' AS kind, job_id AS id, effect AS previous, NULL::text AS request_id, attempt, "
            "NULL::bool AS crash_rerun, NULL::int AS superseded_by FROM effect_input WHERE NOT current"
        )
        arguments += [
            [e.job_id for e in effects],
            [e.effect for e in effects],
            [json.dumps(e.detail) for e in effects],
            [e.attempt for e in effects],
        ]
    if finishes:
        ctes.append(_finish_ctes(len(arguments) + 1))
        selects.append(_REFUSED_ENDS)
        arguments += _finish_arguments(finishes)
    if not ctes:
        return Books(started=[], refused_ends=[], refused_effects=[])
    rows = await db.fetch(f"WITH {', '.join(ctes)} {' UNION ALL '.join(selects)}", *arguments)
    by_id = {row["id"]: row for row in rows if row["kind"] == "start"}
    return Books(
        started=[_started(by_id[start.job_id]) for start in wanted],
        refused_ends=[(row["id"], row["attempt"]) for row in rows if row["kind"] == "end"],
        refused_effects=[(row["id"], row["previous"]) for row in rows if row["kind"] == "effect"],
    )


async def settle(db: Executor, *, job_id: str, status: JobStatus, result: Any = None, error: str | None = None) -> bool:
    """Set a job's status from outside a run (sweep, cancel); never changes a job already final.

    Returns True when the row changed. Open attempts are closed with the same outcome.
    """
    changed = await db.fetchval(
        "UPDATE jobs SET status = $2, result = COALESCE($3, result), error = $4, updated_at = clock_timestamp(), "
        "finished_at = CASE WHEN $5 THEN clock_timestamp() ELSE finished_at END "
        "WHERE id = $1 AND status NOT IN ('succeeded', 'failed', 'cancelled') RETURNING 1",
        job_id,
        status.value,
        None if result is None else json.dumps(result, default=str),
        error,
        status.is_final,
    )
    if changed and status.is_final:
        await db.execute(
            "UPDATE job_attempts SET finished_at = clock_timestamp(), outcome = $2, error = $3 "
            "WHERE job_id = $1 AND outcome IS NULL",
            job_id,
            status.value,
            error,
        )
    return bool(changed)


async def requeue_for_retry(db: Executor, *, job_id: str) -> JobRecord | None:
    """Put a failed or cancelled job back to ``queued`` (POST /jobs/{id}/retry); None if it is not one."""
    row = await db.fetchrow(
        "UPDATE jobs SET status = 'queued', error = NULL, result = NULL, finished_at = NULL, "
        "run_at = clock_timestamp(), updated_at = clock_timestamp() "
        f"WHERE id = $1 AND status IN ('failed', 'cancelled') RETURNING {_JOB_COLUMNS}",
        job_id,
    )
    return None if row is None else _record(row)


async def unsettled(db: Executor, *, idle_seconds: float, limit: int = 500) -> list[JobRecord]:
    """Jobs not yet ended whose row has not changed for ``idle_seconds`` (what the sweep checks)."""
    rows = await db.fetch(
        f"SELECT {_JOB_COLUMNS} FROM jobs "
        "WHERE status IN ('queued', 'deferred', 'retrying', 'in_progress') "
        "AND updated_at < clock_timestamp() - make_interval(secs => $1) "
        "ORDER BY updated_at LIMIT $2",
        idle_seconds,
        limit,
    )
    return [_record(row) for row in rows]


async def list_jobs(
    db: Executor,
    *,
    status: JobStatus | None,
    name: str | None,
    limit: int,
    before: tuple[datetime, str] | None,
) -> list[JobRecord]:
    """Jobs newest first, optionally filtered, paginated by ``(enqueued_at, id)`` keyset."""
    rows = await db.fetch(
        f"SELECT {_JOB_COLUMNS} FROM jobs "
        "WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR name = $2) "
        "AND ($3::timestamptz IS NULL OR (enqueued_at, id) < ($3, $4)) "
        "ORDER BY enqueued_at DESC, id DESC LIMIT $5",
        None if status is None else status.value,
        name,
        None if before is None else before[0],
        None if before is None else before[1],
        limit,
    )
    return [_record(row) for row in rows]


PRUNE_BATCH = 1000
"""Jobs deleted per statement by :func:`prune_ended`: each statement's locks stay short."""


async def prune_ended(db: Executor, *, ended_before_seconds: float, max_batches: int = 100) -> int:
    """Delete jobs that ended more than ``ended_before_seconds`` ago; return how many.

    Only ``succeeded``, ``failed`` and ``cancelled`` jobs go, with their attempts (the foreign key
    cascades) and their effects, oldest first, :data:`PRUNE_BATCH` per statement (each commits on
    its own) and at most ``max_batches`` statements per call: the next call goes on. A row locked
    by someone else (a retry putting a failed job back) is skipped, not waited for.
    """
    pruned = 0
    for _ in range(max_batches):
        deleted = await db.fetchval(
            "WITH doomed AS ("
            "  SELECT id FROM jobs WHERE finished_at < clock_timestamp() - make_interval(secs => $1) "
            "  AND status IN ('succeeded', 'failed', 'cancelled') "
            "  ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED"
            "), effects AS (DELETE FROM job_effects e USING doomed d WHERE e.job_id = d.id), "
            "gone AS (DELETE FROM jobs j USING doomed d WHERE j.id = d.id RETURNING 1) "
            "SELECT count(*) FROM gone",
            ended_before_seconds,
            PRUNE_BATCH,
        )
        pruned += deleted
        if deleted < PRUNE_BATCH:
            break
    return pruned


async def effect_done(db: Executor, *, job_id: str, effect: str) -> bool:
    """True when this job already did this side effect (a re-run must skip it)."""
    found = await db.fetchval("SELECT 1 FROM job_effects WHERE job_id = $1 AND effect = $2", job_id, effect)
    return found is not None


async def record_effect(
    db: Executor, *, job_id: str, effect: str, detail: dict[str, Any], attempt: int | None = None
) -> bool:
    """Remember that this job did this side effect; with ``attempt``, only while it is the job's current one.

    Returns False when it was refused (a later attempt started): then nothing was written.
    """
    books = await keep_books(db, effects=[Effect(job_id, effect, detail, attempt)])
    return not books.refused_effects


@dataclass(frozen=True)
class StatusChange:
    """A job's status at one moment: what GET /jobs/{id}/events sends, one per change.

    ``at`` is the row's ``updated_at``, which only grows for a given job, so of two changes the
    later one has the larger ``at``.
    """

    id: str
    status: JobStatus
    tries: int
    error: str | None
    at: datetime


async def status_of(db: Executor, job_id: str) -> StatusChange | None:
    """The job's current status, tries, error and the time its row last changed; None if unknown."""
    row = await db.fetchrow("SELECT id, status, tries, error, updated_at FROM jobs WHERE id = $1", job_id)
    return None if row is None else _status_change(row)


async def watch_status(db: Executor, job_id: str, *, watch_id: str, listener_pid: int) -> StatusChange | None:
    """Register a watch on the job (its changes are announced from now on), then read its status.

    The read waits for any writer that changed the job without seeing the watch (migration 0008),
    so a change is either in what this returns or announced afterwards. None if the job is
    unknown; the watch is registered all the same.
    """
    row = await db.fetchrow(
        "SELECT id, status, tries, error, updated_at FROM afterword_watch_job($1, $2, $3)",
        job_id,
        watch_id,
        listener_pid,
    )
    return None if row is None else _status_change(row)


def _status_change(row: asyncpg.Record) -> StatusChange:
    return StatusChange(
        id=row["id"], status=JobStatus(row["status"]), tries=row["tries"], error=row["error"], at=row["updated_at"]
    )
