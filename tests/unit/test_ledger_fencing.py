"""The ledger's writes fenced by attempt: a worker whose claim was superseded changes nothing.

Each claim of a job carries ARQ's try number (``job_try``, counted by the claim in Redis), which
only grows while the job lives in ARQ. A start records it with the attempt it opens; a start
whose try is not ahead of the running attempt's is refused. Ends and effects name their attempt,
and are written only while that attempt is the job's current, open one.
"""

from __future__ import annotations

import uuid

import asyncpg

from services import ledger
from services.contract import JobStatus
from tests.support.ledger_jobs import finish_attempt, insert_job, record_effect, start_attempt


async def _record(db: ledger.Executor, job_id: str) -> ledger.JobRecord:
    record = await ledger.get_job(db, job_id)
    assert record is not None
    return record


async def _attempts(db: ledger.Executor, job_id: str) -> list[tuple[int, str, str | None, str | None]]:
    return [(a.try_, a.worker, a.outcome, a.error) for a in await ledger.get_attempts(db, job_id)]


async def _taken_over(db: asyncpg.Pool) -> tuple[str, ledger.Started, ledger.Started]:
    """A job started by w1 (ARQ try 1) and taken over by w2 (try 2) after w1's lease ran out."""
    job_id = await insert_job(db)
    first = await start_attempt(db, job_id=job_id, worker="w1", job_try=1)
    second = await start_attempt(db, job_id=job_id, worker="w2", job_try=2)
    assert (first.attempt, second.attempt, second.crash_rerun) == (1, 2, True)
    return job_id, first, second


async def test_the_late_end_of_a_superseded_attempt_changes_nothing(db_pool: asyncpg.Pool) -> None:
    job_id, first, _ = await _taken_over(db_pool)
    before = await _record(db_pool, job_id)
    attempts_before = await _attempts(db_pool, job_id)

    written = await finish_attempt(
        db_pool, job_id=job_id, attempt=first.attempt, status=JobStatus.retrying, error="late", run_at=None
    )

    assert written is False
    assert await _record(db_pool, job_id) == before  # still in progress under the live attempt
    assert await _attempts(db_pool, job_id) == attempts_before
    assert attempts_before[0][2] == "interrupted"


async def test_a_late_end_after_the_live_attempt_ended_keeps_its_outcome(db_pool: asyncpg.Pool) -> None:
    job_id, first, second = await _taken_over(db_pool)
    assert await finish_attempt(
        db_pool, job_id=job_id, attempt=second.attempt, status=JobStatus.succeeded, result={"by": "w2"}
    )
    before = await _record(db_pool, job_id)

    written = await finish_attempt(db_pool, job_id=job_id, attempt=first.attempt, status=JobStatus.failed, error="late")

    assert written is False
    assert await _record(db_pool, job_id) == before
    assert before.result == {"by": "w2"}
    assert [(a[0], a[2]) for a in await _attempts(db_pool, job_id)] == [(1, "interrupted"), (2, "succeeded")]


async def test_the_same_end_written_again_is_taken_as_written(db_pool: asyncpg.Pool) -> None:
    """A worker that timed out on its end writes it again: the second write finds it there."""
    job_id = await insert_job(db_pool)
    started = await start_attempt(db_pool, job_id=job_id, worker="w1", job_try=1)

    for _ in range(2):
        assert await finish_attempt(
            db_pool, job_id=job_id, attempt=started.attempt, status=JobStatus.succeeded, result={"n": 1}
        )

    assert (await _record(db_pool, job_id)).status is JobStatus.succeeded
    assert [(a[0], a[2]) for a in await _attempts(db_pool, job_id)] == [(1, "succeeded")]


async def test_an_end_never_rewrites_an_attempt_already_closed(db_pool: asyncpg.Pool) -> None:
    job_id = await insert_job(db_pool)
    started = await start_attempt(db_pool, job_id=job_id, worker="w1", job_try=1)
    await ledger.settle(db_pool, job_id=job_id, status=JobStatus.cancelled, error="cancelled by request")

    written = await finish_attempt(
        db_pool, job_id=job_id, attempt=started.attempt, status=JobStatus.succeeded, result={"late": True}
    )

    assert written is False
    assert await _attempts(db_pool, job_id) == [(1, "w1", "cancelled", "cancelled by request")]


async def test_a_start_behind_the_running_attempt_is_refused(db_pool: asyncpg.Pool) -> None:
    """A claim's start that reaches the ledger after a later claim's start (delayed, paused) opens nothing."""
    job_id = await insert_job(db_pool)
    await start_attempt(db_pool, job_id=job_id, worker="live", job_try=2)
    before = await _record(db_pool, job_id)

    late = await start_attempt(db_pool, job_id=job_id, worker="stale", job_try=1)

    assert (late.attempt, late.superseded_by, late.may_run) == (0, 2, False)
    assert await _record(db_pool, job_id) == before
    assert await _attempts(db_pool, job_id) == [(1, "live", None, None)]


async def test_a_start_behind_a_retry_of_the_live_attempt_is_refused(db_pool: asyncpg.Pool) -> None:
    job_id = await insert_job(db_pool)
    live = await start_attempt(db_pool, job_id=job_id, worker="live", job_try=2)
    await finish_attempt(db_pool, job_id=job_id, attempt=live.attempt, status=JobStatus.retrying, error="451")

    late = await start_attempt(db_pool, job_id=job_id, worker="stale", job_try=2)

    assert (late.attempt, late.superseded_by, late.may_run) == (0, 2, False)
    assert (await _record(db_pool, job_id)).status is JobStatus.retrying
    assert await _attempts(db_pool, job_id) == [(1, "live", "retrying", "451")]


async def test_a_start_after_a_reset_of_the_try_count_goes_on_once_the_count_is_ahead(db_pool: asyncpg.Pool) -> None:
    """Redis lost the job (and its try count) while its worker was gone: the count restarts at 1.

    The first claim is refused and says which try it must get past; the next one starts.
    """
    job_id = await insert_job(db_pool)
    await start_attempt(db_pool, job_id=job_id, worker="gone", job_try=3)

    refused = await start_attempt(db_pool, job_id=job_id, worker="w", job_try=1)
    assert refused.superseded_by == 3
    started = await start_attempt(db_pool, job_id=job_id, worker="w", job_try=refused.superseded_by + 1)

    assert (started.attempt, started.crash_rerun, started.may_run, started.superseded_by) == (2, True, True, None)


async def test_a_start_without_a_try_number_closes_the_open_attempt_as_before(db_pool: asyncpg.Pool) -> None:
    job_id = await insert_job(db_pool)
    await start_attempt(db_pool, job_id=job_id, worker="w1", job_try=5)

    started = await start_attempt(db_pool, job_id=job_id, worker="w2")

    assert (started.attempt, started.crash_rerun) == (2, True)


async def test_an_effect_of_a_superseded_attempt_is_not_recorded(db_pool: asyncpg.Pool) -> None:
    job_id, first, second = await _taken_over(db_pool)

    refused = await record_effect(db_pool, job_id=job_id, effect="email", detail={"by": "w1"}, attempt=first.attempt)
    assert refused is False
    assert not await ledger.effect_done(db_pool, job_id=job_id, effect="email")

    assert await record_effect(db_pool, job_id=job_id, effect="email", detail={"by": "w2"}, attempt=second.attempt)
    assert await ledger.effect_done(db_pool, job_id=job_id, effect="email")


async def test_effects_noted_with_a_refused_end_are_refused_with_it(db_pool: asyncpg.Pool) -> None:
    job_id, first, _ = await _taken_over(db_pool)

    books = await ledger.keep_books(
        db_pool,
        effects=[ledger.Effect(job_id, "log_line", {"line": "late"}, attempt=first.attempt)],
        finishes=[ledger.Finish(job_id, first.attempt, JobStatus.succeeded)],
    )

    assert books.refused_ends == [(job_id, first.attempt)]
    assert books.refused_effects == [(job_id, "log_line")]
    assert not await ledger.effect_done(db_pool, job_id=job_id, effect="log_line")


async def test_a_fenced_end_in_a_batch_leaves_the_others_written(db_pool: asyncpg.Pool) -> None:
    stale_job, first, _ = await _taken_over(db_pool)
    fresh_job = await insert_job(db_pool)
    fresh = await start_attempt(db_pool, job_id=fresh_job, worker="w1", job_try=1)
    unknown = uuid.uuid4().hex

    books = await ledger.keep_books(
        db_pool,
        worker="w1",
        starts=[ledger.Start(unknown, job_try=1)],
        finishes=[
            ledger.Finish(stale_job, first.attempt, JobStatus.succeeded),
            ledger.Finish(fresh_job, fresh.attempt, JobStatus.succeeded),
        ],
    )

    assert books.refused_ends == [(stale_job, first.attempt)]
    assert [s.previous for s in books.started] == [None]
    assert (await _record(db_pool, fresh_job)).status is JobStatus.succeeded
    assert (await _record(db_pool, stale_job)).status is JobStatus.in_progress
