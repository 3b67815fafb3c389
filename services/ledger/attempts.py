"""The ``job_attempts`` table: one row per start of a job, and how it ended.

The worker writes every attempt through :func:`keep_books`: it starts attempts (the job's row
goes ``in_progress`` and its attempt opens, server-side in ``afterword_start_attempt``, migrations
0004, 0009 and 0011), records effects (:mod:`services.ledger.effects`) and ends attempts (the
job's new status with the attempt's outcome), in one statement and one commit for a whole batch.
Starts and ends are fenced by attempt: a claim that lost its lease writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.contract import JobStatus
from services.ledger import statuses
from services.ledger.effects import REFUSED_EFFECTS, Effect, effect_arguments, effect_ctes
from services.ledger.executor import Executor


@dataclass(frozen=True)
class Attempt:
    """One start of a job and how it ended (``outcome`` is None while it runs)."""

    try_: int
    worker: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    error: str | None


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
    """What a start found (:func:`keep_books`): the status before this start, and this attempt's number.

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


INTERRUPTED = "interrupted"
"""An attempt's outcome when it ended without an outcome of its own: its end handed the job back
(the job's status ``queued``), or the next start closed it after its worker died (as
``afterword_start_attempt`` does, migration 0011). Every other outcome is the job's status."""

_IN_PROGRESS = statuses.literal(JobStatus.in_progress)
_CANCELLED = statuses.literal(JobStatus.cancelled)


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
        f"  FROM input i WHERE j.id = i.id AND j.tries = i.try AND j.status = {_IN_PROGRESS} "
        "  AND EXISTS (SELECT 1 FROM job_attempts o WHERE o.job_id = i.id AND o.try = i.try AND o.outcome IS NULL) "
        "  RETURNING j.id"
        "), attempt AS ("
        "  UPDATE job_attempts a SET finished_at = clock_timestamp(), error = i.error, "
        f"  outcome = CASE WHEN i.id IN (SELECT id FROM job) THEN i.outcome ELSE {_CANCELLED} END "
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
        [INTERRUPTED if f.status is JobStatus.queued else f.status.value for f in finishes],
        [None if f.result is None else json.dumps(f.result, default=str) for f in finishes],
        [f.error for f in finishes],
        [f.status.is_final for f in finishes],
        [f.run_at for f in finishes],
    ]


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
    write different tables). Ends, and effects that name their attempt, are fenced: those whose
    attempt is no longer the job's current one are refused and listed in the result.

    A start marks its job in progress and opens its next attempt, server-side under the job row's
    lock (``afterword_start_attempt``; the rows are locked in id order). An attempt left open by a
    worker that died is closed as ``interrupted`` first. For a job the ledger does not know (one
    the gateway never accepted) ``previous`` is None and nothing is written; for a job already in
    a final state nothing is written either: the caller must run neither (``may_run`` is False).
    With a try number, a start behind the running attempt's claim is refused (``superseded_by``)
    and writes nothing.

    An end (:class:`Finish`) records how the attempt ended and the job's resulting status:
    ``succeeded``/``failed`` end the job, ``retrying`` means ARQ will run it again (at ``run_at``,
    which the job's row then holds), ``queued`` means it was interrupted and handed back. A job
    already final (cancelled meanwhile) keeps its status; its attempt is then recorded as
    ``cancelled``. An end is written only while its attempt is the job's current, open one; it is
    refused when a later attempt started or the attempt was closed already with another outcome.
    The same end written twice is written once, and not refused.
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
        ctes.append(effect_ctes(len(arguments) + 1))
        selects.append(REFUSED_EFFECTS)
        arguments += effect_arguments(effects)
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
