"""What the ledger reports of an attempt's start, for observability: the job's request id, and crash re-runs."""

from __future__ import annotations

import asyncpg

from services.contract import JobStatus
from tests.support.ledger_jobs import finish_attempt, insert_job, start_attempt


async def test_a_start_returns_the_jobs_request_id(db_pool: asyncpg.Pool) -> None:
    with_id = await insert_job(db_pool, request_id="req-42")
    without = await insert_job(db_pool, request_id=None)

    assert (await start_attempt(db_pool, job_id=with_id, worker="w1")).request_id == "req-42"
    assert (await start_attempt(db_pool, job_id=without, worker="w1")).request_id is None


async def test_a_start_after_a_dead_worker_is_a_crash_rerun(db_pool: asyncpg.Pool) -> None:
    job_id = await insert_job(db_pool, request_id="req-crash")

    first = await start_attempt(db_pool, job_id=job_id, worker="w1")
    # w1 dies: its attempt stays open, and another worker starts the job again.
    second = await start_attempt(db_pool, job_id=job_id, worker="w2")

    assert (first.attempt, first.crash_rerun) == (1, False)
    assert (second.attempt, second.crash_rerun, second.request_id) == (2, True, "req-crash")


async def test_a_start_after_a_recorded_interruption_is_no_crash_rerun(db_pool: asyncpg.Pool) -> None:
    job_id = await insert_job(db_pool, request_id=None)
    first = await start_attempt(db_pool, job_id=job_id, worker="w1")
    await finish_attempt(db_pool, job_id=job_id, attempt=first.attempt, status=JobStatus.queued)

    again = await start_attempt(db_pool, job_id=job_id, worker="w2")

    assert (again.attempt, again.crash_rerun) == (2, False)


async def test_a_job_already_ended_reports_its_request_id_and_is_not_run(db_pool: asyncpg.Pool) -> None:
    job_id = await insert_job(db_pool, request_id="req-done")
    started = await start_attempt(db_pool, job_id=job_id, worker="w1")
    await finish_attempt(db_pool, job_id=job_id, attempt=started.attempt, status=JobStatus.succeeded)

    late = await start_attempt(db_pool, job_id=job_id, worker="w2")

    assert not late.may_run
    assert (late.request_id, late.crash_rerun) == ("req-done", False)
