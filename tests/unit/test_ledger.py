"""The jobs ledger against the session's migrated database.

Attempts are started and ended through ``keep_books``, the worker's one bookkeeping statement
(``tests.support.ledger_jobs`` sends one write alone). Those tests use the pool, each write
committing on its own, and a fresh job id each; the rest run in the rolled-back ``conn``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services import ledger
from services.contract import JobName, JobStatus
from services.ledger import NewJob
from services.ledger import jobs as ledger_jobs
from tests.support.ledger_jobs import finish_attempt, insert_job, new_job, record_effect, start_attempt


async def _record(db: ledger.Executor, job_id: str) -> ledger.JobRecord:
    record = await ledger.get_job(db, job_id)
    assert record is not None
    return record


# insert_jobs / get_job


async def test_insert_and_get_round_trip(conn: asyncpg.Connection) -> None:
    run_at = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    payload = {"to": "ada@example.com", "subject": "Zoë", "body": "line1\nline2", "mark_welcome_sent": True}
    job = NewJob(
        id=uuid.uuid4().hex,
        name=JobName.send_email,
        payload=payload,
        status=JobStatus.deferred,
        run_at=run_at,
        request_id="req-1",
    )

    await ledger.insert_jobs(conn, [job])

    record = await _record(conn, job.id)
    assert record.id == job.id
    assert record.name == "send_email"
    assert record.payload == payload
    assert record.status is JobStatus.deferred
    assert record.tries == 0
    assert record.result is None
    assert record.error is None
    assert record.request_id == "req-1"
    assert record.run_at == run_at
    assert record.enqueued_at is not None
    assert record.started_at is None
    assert record.finished_at is None


async def test_insert_many_at_once(conn: asyncpg.Connection) -> None:
    jobs = [new_job(), new_job(name=JobName.cleanup_temp_files, payload={}), new_job(JobStatus.deferred)]

    await ledger.insert_jobs(conn, jobs)

    for job in jobs:
        record = await _record(conn, job.id)
        assert (record.name, record.payload, record.status) == (job.name.value, job.payload, job.status)


async def test_get_unknown_job_is_none(conn: asyncpg.Connection) -> None:
    assert await ledger.get_job(conn, uuid.uuid4().hex) is None
    assert await ledger.get_attempts(conn, uuid.uuid4().hex) == []


async def test_insert_of_an_existing_id_is_refused(conn: asyncpg.Connection) -> None:
    job = new_job()
    await ledger.insert_jobs(conn, [job])

    with pytest.raises(asyncpg.UniqueViolationError):
        await ledger.insert_jobs(conn, [job])


# starting an attempt


async def test_start_attempt_moves_a_queued_job_in_progress(db_pool: asyncpg.Pool) -> None:
    job_id = await insert_job(db_pool)

    started = await start_attempt(db_pool, job_id=job_id, worker="w1")

    assert started == ledger.Started(previous=JobStatus.queued, attempt=1)
    assert started.may_run is True
    record = await _record(db_pool, job_id)
    assert record.status is JobStatus.in_progress
    assert record.tries == 1
    assert record.started_at is not None
    assert record.finished_at is None
    [attempt] = await ledger.get_attempts(db_pool, job_id)
    assert (attempt.try_, attempt.worker, attempt.outcome, attempt.finished_at, attempt.error) == (
        1,
        "w1",
        None,
        None,
        None,
    )


@pytest.mark.parametrize("status", [JobStatus.deferred, JobStatus.retrying])
async def test_start_attempt_of_a_waiting_job(db_pool: asyncpg.Pool, status: JobStatus) -> None:
    job_id = await insert_job(db_pool, status)

    started = await start_attempt(db_pool, job_id=job_id, worker="w1")

    assert started == ledger.Started(previous=status, attempt=1)
    assert (await _record(db_pool, job_id)).status is JobStatus.in_progress


async def test_start_attempt_of_unknown_job_writes_nothing(db_pool: asyncpg.Pool) -> None:
    job_id = uuid.uuid4().hex

    started = await start_attempt(db_pool, job_id=job_id, worker="w1")

    assert started == ledger.Started(previous=None, attempt=0)
    assert started.may_run is False  # the gateway never accepted it: planted in Redis
    assert await ledger.get_job(db_pool, job_id) is None
    assert await ledger.get_attempts(db_pool, job_id) == []


@pytest.mark.parametrize("final", [JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled])
async def test_start_attempt_leaves_a_final_job_alone(db_pool: asyncpg.Pool, final: JobStatus) -> None:
    job_id = await insert_job(db_pool)
    first = await start_attempt(db_pool, job_id=job_id, worker="w1")
    await finish_attempt(db_pool, job_id=job_id, attempt=first.attempt, status=final, result={"ok": 1}, error="e")
    before = await _record(db_pool, job_id)
    attempts_before = await ledger.get_attempts(db_pool, job_id)

    started = await start_attempt(db_pool, job_id=job_id, worker="w2")

    assert started == ledger.Started(previous=final, attempt=0)
    assert started.may_run is False
    assert await _record(db_pool, job_id) == before
    assert await ledger.get_attempts(db_pool, job_id) == attempts_before


async def test_start_attempt_after_a_retry_opens_the_next_attempt(db_pool: asyncpg.Pool) -> None:
    job_id = await insert_job(db_pool)
    first = await start_attempt(db_pool, job_id=job_id, worker="w1")
    await finish_attempt(db_pool, job_id=job_id, attempt=first.attempt, status=JobStatus.retrying, error="SMTP 451")

    second = await start_attempt(db_pool, job_id=job_id, worker="w2")

    assert second == ledger.Started(previous=JobStatus.retrying, attempt=2)
    record = await _record(db_pool, job_id)
    assert (record.status, record.tries, record.finished_at) == (JobStatus.in_progress, 2, None)
    attempts = await ledger.get_attempts(db_pool, job_id)
    assert [(a.try_, a.worker, a.outcome, a.error) for a in attempts] == [
        (1, "w1", "retrying", "SMTP 451"),
        (2, "w2", None, None),
    ]


async def test_each_attempt_records_the_due_time_it_started_against(db_pool: asyncpg.Pool) -> None:
    job_id = await insert_job(db_pool)
    first = await start_attempt(db_pool, job_id=job_id, worker="w1")
    await finish_attempt(db_pool, job_id=job_id, attempt=first.attempt, status=JobStatus.failed, error="e")
    first_due = (await _record(db_pool, job_id)).run_at
    rerun = await ledger.requeue_for_retry(db_pool, job_id=job_id)  # POST /jobs/{id}/retry: a new run_at
    assert rerun is not None
    assert rerun.run_at > first_due

    await start_attempt(db_pool, job_id=job_id, worker="w2")

    due = await db_pool.fetch("SELECT try, due_at FROM job_attempts WHERE job_id = $1 ORDER BY try", job_id)
    assert [(row["try"], row["due_at"]) for row in due] == [(1, first_due), (2, rerun.run_at)]


async def test_start_attempt_closes_an_attempt_a_dead_worker_left_open(db_pool: asyncpg.Pool) -> None:
    job_id = await insert_job(db_pool)
    await start_attempt(db_pool, job_id=job_id, worker="dead")

    started = await start_attempt(db_pool, job_id=job_id, worker="alive")

    assert started == ledger.Started(previous=JobStatus.in_progress, attempt=2, crash_rerun=True)
    first, second = await ledger.get_attempts(db_pool, job_id)
    assert (first.try_, first.worker, first.outcome) == (1, "dead", "interrupted")
    assert first.finished_at is not None
    assert first.error is not None
    assert (second.try_, second.worker, second.outcome, second.finished_at) == (2, "alive", None, None)


async def test_concurrent_starts_get_distinct_attempts(db_pool: asyncpg.Pool) -> None:
    job_id = await insert_job(db_pool)

    results = await asyncio.gather(*(start_attempt(db_pool, job_id=job_id, worker=f"w{i}") for i in range(5)))

    assert sorted(r.attempt for r in results) == [1, 2, 3, 4, 5]
    attempts = await ledger.get_attempts(db_pool, job_id)
    assert [a.try_ for a in attempts] == [1, 2, 3, 4, 5]
    assert [a.outcome for a in attempts] == ["interrupted"] * 4 + [None]
    assert (await _record(db_pool, job_id)).tries == 5


# ending an attempt


async def _started(pool: asyncpg.Pool) -> tuple[str, int]:
    job_id = await insert_job(pool)
    started = await start_attempt(pool, job_id=job_id, worker="w1")
    return job_id, started.attempt


async def test_finish_succeeded(db_pool: asyncpg.Pool) -> None:
    job_id, attempt = await _started(db_pool)
    at = datetime(2024, 1, 1, tzinfo=UTC)

    await finish_attempt(
        db_pool,
        job_id=job_id,
        attempt=attempt,
        status=JobStatus.succeeded,
        result={"sent": True, "at": at, "n": [1, 2]},
    )

    record = await _record(db_pool, job_id)
    assert record.status is JobStatus.succeeded
    assert record.result == {"sent": True, "at": str(at), "n": [1, 2]}
    assert record.error is None
    assert record.finished_at is not None
    assert record.started_at is not None
    assert record.finished_at >= record.started_at
    [row] = await ledger.get_attempts(db_pool, job_id)
    assert (row.outcome, row.error) == ("succeeded", None)
    assert row.finished_at is not None


async def test_finish_failed(db_pool: asyncpg.Pool) -> None:
    job_id, attempt = await _started(db_pool)

    await finish_attempt(
        db_pool, job_id=job_id, attempt=attempt, status=JobStatus.failed, error="PermanentError: SMTP 550"
    )

    record = await _record(db_pool, job_id)
    assert (record.status, record.result, record.error) == (JobStatus.failed, None, "PermanentError: SMTP 550")
    assert record.finished_at is not None
    [row] = await ledger.get_attempts(db_pool, job_id)
    assert (row.outcome, row.error) == ("failed", "PermanentError: SMTP 550")
    assert row.finished_at is not None


async def test_finish_retrying_is_not_final(db_pool: asyncpg.Pool) -> None:
    job_id, attempt = await _started(db_pool)

    await finish_attempt(db_pool, job_id=job_id, attempt=attempt, status=JobStatus.retrying, error="SMTP 451")

    record = await _record(db_pool, job_id)
    assert (record.status, record.error, record.finished_at) == (JobStatus.retrying, "SMTP 451", None)
    [row] = await ledger.get_attempts(db_pool, job_id)
    assert (row.outcome, row.error) == ("retrying", "SMTP 451")
    assert row.finished_at is not None


async def test_a_retry_s_due_time_becomes_the_job_s_run_at_and_its_next_attempt_s_due_time(
    db_pool: asyncpg.Pool,
) -> None:
    job_id, attempt = await _started(db_pool)
    first_due = (await _record(db_pool, job_id)).run_at
    next_try = datetime.now(UTC) + timedelta(minutes=10)

    await finish_attempt(
        db_pool, job_id=job_id, attempt=attempt, status=JobStatus.retrying, error="SMTP 451", run_at=next_try
    )

    assert (await _record(db_pool, job_id)).run_at == next_try
    second = await start_attempt(db_pool, job_id=job_id, worker="w1")
    due = await db_pool.fetch("SELECT try, due_at FROM job_attempts WHERE job_id = $1 ORDER BY try", job_id)
    assert [(row["try"], row["due_at"]) for row in due] == [(1, first_due), (2, next_try)]
    await finish_attempt(db_pool, job_id=job_id, attempt=second.attempt, status=JobStatus.succeeded)
    assert (await _record(db_pool, job_id)).run_at == next_try, "an end without a due time keeps the job's"


async def test_finish_queued_records_an_interrupted_attempt(db_pool: asyncpg.Pool) -> None:
    job_id, attempt = await _started(db_pool)

    await finish_attempt(db_pool, job_id=job_id, attempt=attempt, status=JobStatus.queued, error="stopped")

    record = await _record(db_pool, job_id)
    assert (record.status, record.finished_at) == (JobStatus.queued, None)
    [row] = await ledger.get_attempts(db_pool, job_id)
    assert (row.outcome, row.error) == ("interrupted", "stopped")
    assert row.finished_at is not None


@pytest.mark.parametrize("final", [JobStatus.cancelled, JobStatus.succeeded, JobStatus.failed])
@pytest.mark.parametrize("late", [JobStatus.succeeded, JobStatus.failed, JobStatus.retrying, JobStatus.queued])
async def test_finish_never_overwrites_a_final_job(db_pool: asyncpg.Pool, final: JobStatus, late: JobStatus) -> None:
    job_id, attempt = await _started(db_pool)
    async with db_pool.acquire() as conn:
        await conn.execute(
            "UPDATE jobs SET status = $2, result = '\"first\"', error = 'first', finished_at = clock_timestamp() "
            "WHERE id = $1",
            job_id,
            final.value,
        )
    before = await _record(db_pool, job_id)

    await finish_attempt(db_pool, job_id=job_id, attempt=attempt, status=late, result={"late": True}, error="late")

    assert await _record(db_pool, job_id) == before
    [row] = await ledger.get_attempts(db_pool, job_id)
    assert row.outcome == "cancelled"  # documented: the attempt of a job ended meanwhile
    assert row.finished_at is not None


async def test_get_attempts_is_ordered_by_try(conn: asyncpg.Connection) -> None:
    job = new_job()
    await ledger.insert_jobs(conn, [job])
    for job_try in (3, 1, 2):
        await conn.execute(
            "INSERT INTO job_attempts (job_id, try, worker) VALUES ($1, $2, $3)", job.id, job_try, f"w{job_try}"
        )

    attempts = await ledger.get_attempts(conn, job.id)

    assert [(a.try_, a.worker) for a in attempts] == [(1, "w1"), (2, "w2"), (3, "w3")]


async def test_a_whole_life_with_retries(db_pool: asyncpg.Pool) -> None:
    job_id = await insert_job(db_pool)
    for _ in range(2):
        started = await start_attempt(db_pool, job_id=job_id, worker="w")
        await finish_attempt(db_pool, job_id=job_id, attempt=started.attempt, status=JobStatus.retrying, error="x")
    started = await start_attempt(db_pool, job_id=job_id, worker="w")
    await finish_attempt(db_pool, job_id=job_id, attempt=started.attempt, status=JobStatus.succeeded)

    record = await _record(db_pool, job_id)
    assert (record.status, record.tries, record.error, record.result) == (JobStatus.succeeded, 3, None, None)
    attempts = await ledger.get_attempts(db_pool, job_id)
    assert [a.outcome for a in attempts] == ["retrying", "retrying", "succeeded"]
    assert all(a.finished_at is not None and a.finished_at >= a.started_at for a in attempts)
    assert attempts[0].started_at <= attempts[1].started_at <= attempts[2].started_at
    assert record.finished_at is not None
    assert record.finished_at >= attempts[2].started_at


# settle / requeue_for_retry


async def test_settle_ends_a_job_and_closes_its_open_attempt(db_pool: asyncpg.Pool) -> None:
    job_id, _attempt = await _started(db_pool)

    changed = await ledger.settle(db_pool, job_id=job_id, status=JobStatus.cancelled, error="cancelled by user")

    assert changed is True
    record = await _record(db_pool, job_id)
    assert (record.status, record.error) == (JobStatus.cancelled, "cancelled by user")
    assert record.finished_at is not None
    [row] = await ledger.get_attempts(db_pool, job_id)
    assert (row.outcome, row.error) == ("cancelled", "cancelled by user")
    assert row.finished_at is not None


async def test_settle_never_changes_a_final_job(conn: asyncpg.Connection) -> None:
    job = new_job(JobStatus.succeeded)
    await ledger.insert_jobs(conn, [job])
    before = await _record(conn, job.id)

    assert await ledger.settle(conn, job_id=job.id, status=JobStatus.failed, error="late") is False

    assert await _record(conn, job.id) == before


async def test_settle_keeps_an_earlier_result_when_given_none(conn: asyncpg.Connection) -> None:
    job = new_job()
    await ledger.insert_jobs(conn, [job])
    await conn.execute("UPDATE jobs SET result = '{\"partial\": 1}' WHERE id = $1", job.id)

    assert await ledger.settle(conn, job_id=job.id, status=JobStatus.failed, error="max tries") is True

    record = await _record(conn, job.id)
    assert (record.status, record.result, record.error) == (JobStatus.failed, {"partial": 1}, "max tries")


async def test_settle_of_an_unknown_job_is_false(conn: asyncpg.Connection) -> None:
    assert await ledger.settle(conn, job_id=uuid.uuid4().hex, status=JobStatus.failed) is False


async def test_requeue_for_retry_of_a_failed_job(db_pool: asyncpg.Pool) -> None:
    job_id, attempt = await _started(db_pool)
    await finish_attempt(db_pool, job_id=job_id, attempt=attempt, status=JobStatus.failed, error="boom")

    record = await ledger.requeue_for_retry(db_pool, job_id=job_id)

    assert record is not None
    assert (record.status, record.error, record.result, record.finished_at) == (JobStatus.queued, None, None, None)
    assert await _record(db_pool, job_id) == record
    started = await start_attempt(db_pool, job_id=job_id, worker="w2")
    assert started == ledger.Started(previous=JobStatus.queued, attempt=2)


@pytest.mark.parametrize("status", [JobStatus.queued, JobStatus.in_progress, JobStatus.retrying, JobStatus.succeeded])
async def test_requeue_for_retry_refuses_other_statuses(conn: asyncpg.Connection, status: JobStatus) -> None:
    job = new_job(status)
    await ledger.insert_jobs(conn, [job])
    before = await _record(conn, job.id)

    assert await ledger.requeue_for_retry(conn, job_id=job.id) is None

    assert await _record(conn, job.id) == before


# unsettled / list_jobs


async def test_unsettled_lists_idle_unfinished_jobs_only(conn: asyncpg.Connection) -> None:
    idle = [new_job(status) for status in (JobStatus.queued, JobStatus.deferred, JobStatus.retrying)]
    idle.append(new_job(JobStatus.in_progress))
    idle_final = [new_job(status) for status in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)]
    busy = new_job()
    await ledger.insert_jobs(conn, [*idle, *idle_final, busy])
    await conn.execute(
        "UPDATE jobs SET updated_at = clock_timestamp() - interval '1 hour' WHERE id = ANY($1::text[])",
        [j.id for j in idle + idle_final],
    )

    found = {record.id for record in await ledger.unsettled(conn, idle_seconds=600)}

    assert {j.id for j in idle} <= found
    assert not {j.id for j in idle_final} & found
    assert busy.id not in found


async def _insert_named(conn: asyncpg.Connection, name: str, rows: list[tuple[str, str, datetime]]) -> None:
    await conn.executemany(
        "INSERT INTO jobs (id, name, payload, status, enqueued_at) VALUES ($1, $2, '{}', $3, $4)",
        [(job_id, name, status, at) for job_id, status, at in rows],
    )


async def test_list_jobs_newest_first_filtered_and_paged(conn: asyncpg.Connection) -> None:
    name = f"test-{uuid.uuid4().hex}"
    base = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [(f"job-{i}", "failed" if i % 2 else "queued", base.replace(minute=i)) for i in range(5)]
    rows.append(("job-4b", "queued", base.replace(minute=4)))  # same time as job-4: ordered by id
    await _insert_named(conn, name, rows)

    every = await ledger.list_jobs(conn, status=None, name=name, limit=100, before=None)
    assert [r.id for r in every] == ["job-4b", "job-4", "job-3", "job-2", "job-1", "job-0"]

    failed = await ledger.list_jobs(conn, status=JobStatus.failed, name=name, limit=100, before=None)
    assert [r.id for r in failed] == ["job-3", "job-1"]

    first = await ledger.list_jobs(conn, status=None, name=name, limit=2, before=None)
    assert [r.id for r in first] == ["job-4b", "job-4"]
    last = first[-1]
    second = await ledger.list_jobs(conn, status=None, name=name, limit=2, before=(last.enqueued_at, last.id))
    assert [r.id for r in second] == ["job-3", "job-2"]


# effects


async def test_effect_done_after_record_effect(conn: asyncpg.Connection) -> None:
    job_id = uuid.uuid4().hex

    assert await ledger.effect_done(conn, job_id=job_id, effect="email") is False
    await record_effect(conn, job_id=job_id, effect="email", detail={"message_id": "<a@b>"})

    assert await ledger.effect_done(conn, job_id=job_id, effect="email") is True
    assert await ledger.effect_done(conn, job_id=job_id, effect="log_line") is False
    assert await ledger.effect_done(conn, job_id=uuid.uuid4().hex, effect="email") is False


async def test_record_effect_twice_keeps_the_first(conn: asyncpg.Connection) -> None:
    job_id = uuid.uuid4().hex
    await record_effect(conn, job_id=job_id, effect="email", detail={"n": 1})

    await record_effect(conn, job_id=job_id, effect="email", detail={"n": 2})

    rows = await conn.fetch("SELECT detail FROM job_effects WHERE job_id = $1", job_id)
    assert [r["detail"] for r in rows] == ['{"n": 1}']


async def test_write_bookkeeping_records_several_effects_in_one_statement(conn: asyncpg.Connection) -> None:
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    await record_effect(conn, job_id=first, effect="email", detail={"n": 0})

    await ledger.write_bookkeeping(
        conn,
        effects=[
            ledger.Effect(first, "email", {"n": 1}),  # already there: kept as it was
            ledger.Effect(first, "log_line", {"line": "a"}),
            ledger.Effect(second, "log_line", {"line": "b"}),
            ledger.Effect(second, "log_line", {"line": "b again"}),  # twice in one batch: the first wins
        ],
    )

    rows = await conn.fetch(
        "SELECT job_id, effect, detail FROM job_effects WHERE job_id = ANY($1::text[]) ORDER BY job_id, effect",
        [first, second],
    )
    found = {(r["job_id"], r["effect"]): json.loads(r["detail"]) for r in rows}
    assert found == {
        (first, "email"): {"n": 0},
        (first, "log_line"): {"line": "a"},
        (second, "log_line"): {"line": "b"},
    }


# write_bookkeeping / keep_books: several jobs in one statement


async def test_write_bookkeeping_starts_records_and_finishes_in_one_statement(db_pool: asyncpg.Pool) -> None:
    running, ending, fresh, other = [await insert_job(db_pool) for _ in range(4)]
    (first,) = await ledger.write_bookkeeping(db_pool, worker="w1", starts=[running])
    (second,) = await ledger.write_bookkeeping(db_pool, worker="w1", starts=[ending])
    unknown = uuid.uuid4().hex

    started = await ledger.write_bookkeeping(
        db_pool,
        worker="w2",
        starts=[other, unknown, fresh],
        effects=[ledger.Effect(running, "log_line", {"line": "x"})],
        finishes=[ledger.Finish(ending, second.attempt, JobStatus.succeeded, result={"ok": True})],
    )

    assert [(s.previous, s.attempt) for s in started] == [(JobStatus.queued, 1), (None, 0), (JobStatus.queued, 1)]
    assert first.attempt == 1
    assert await ledger.effect_done(db_pool, job_id=running, effect="log_line")
    for job_id in (other, fresh):
        job = await ledger.get_job(db_pool, job_id)
        assert job is not None
        assert job.status is JobStatus.in_progress
        assert [(a.worker, a.finished_at) for a in await ledger.get_attempts(db_pool, job_id)] == [("w2", None)]
    ended = await ledger.get_job(db_pool, ending)
    assert ended is not None
    assert (ended.status, ended.result) == (JobStatus.succeeded, {"ok": True})
    assert [a.outcome for a in await ledger.get_attempts(db_pool, ending)] == ["succeeded"]
    assert await ledger.get_job(db_pool, unknown) is None


async def test_write_bookkeeping_with_nothing_to_start(db_pool: asyncpg.Pool) -> None:
    job_id = await insert_job(db_pool)
    (started,) = await ledger.write_bookkeeping(db_pool, worker="w1", starts=[job_id])

    assert (
        await ledger.write_bookkeeping(
            db_pool, worker="w1", finishes=[ledger.Finish(job_id, started.attempt, JobStatus.failed, error="boom")]
        )
        == []
    )
    job = await ledger.get_job(db_pool, job_id)
    assert job is not None
    assert (job.status, job.error) == (JobStatus.failed, "boom")


async def test_starts_of_several_jobs_answer_in_the_order_asked(db_pool: asyncpg.Pool) -> None:
    queued, retrying = await insert_job(db_pool), await insert_job(db_pool, JobStatus.retrying)
    done = await insert_job(db_pool)
    await ledger.settle(db_pool, job_id=done, status=JobStatus.succeeded)
    unknown = uuid.uuid4().hex

    started = await ledger.write_bookkeeping(db_pool, worker="w1", starts=[retrying, unknown, done, queued])

    assert [s.previous for s in started] == [JobStatus.retrying, None, JobStatus.succeeded, JobStatus.queued]
    assert [s.attempt for s in started] == [1, 0, 0, 1]
    assert [s.may_run for s in started] == [True, False, False, True]
    for job_id in (queued, retrying):
        record = await _record(db_pool, job_id)
        assert (record.status, record.tries) == (JobStatus.in_progress, 1)
    assert (await _record(db_pool, done)).status is JobStatus.succeeded


async def test_ends_of_several_attempts_each_get_their_own_outcome(db_pool: asyncpg.Pool) -> None:
    ok, broken, cancelled = await insert_job(db_pool), await insert_job(db_pool), await insert_job(db_pool)
    await ledger.write_bookkeeping(db_pool, worker="w1", starts=[ok, broken, cancelled])
    await ledger.settle(db_pool, job_id=cancelled, status=JobStatus.cancelled, error="cancelled by request")

    books = await ledger.keep_books(
        db_pool,
        finishes=[
            ledger.Finish(ok, 1, JobStatus.succeeded, result={"written_now": True}),
            ledger.Finish(broken, 1, JobStatus.failed, error="ValueError: no"),
            ledger.Finish(cancelled, 1, JobStatus.succeeded, result={"late": True}),
        ],
    )

    assert (await _record(db_pool, ok)).result == {"written_now": True}
    assert (await _record(db_pool, broken)).error == "ValueError: no"
    assert (await _record(db_pool, cancelled)).status is JobStatus.cancelled
    outcomes = {
        job_id: [(a.outcome, a.error) for a in await ledger.get_attempts(db_pool, job_id)]
        for job_id in (ok, broken, cancelled)
    }
    assert outcomes == {
        ok: [("succeeded", None)],
        broken: [("failed", "ValueError: no")],
        cancelled: [("cancelled", "cancelled by request")],  # closed by the cancel: the late end changes nothing
    }
    assert books.refused_ends == [(cancelled, 1)]


# prune_ended


async def _ended(conn: asyncpg.Connection, status: JobStatus, *, days_ago: float) -> str:
    """A job that ended ``days_ago`` days ago with one attempt and one effect."""
    job_id = await insert_job(conn, JobStatus.queued)
    await conn.execute(
        "UPDATE jobs SET status = $2, tries = 1, finished_at = clock_timestamp() - make_interval(secs => $3) "
        "WHERE id = $1",
        job_id,
        status.value,
        days_ago * 86400,
    )
    await conn.execute(
        "INSERT INTO job_attempts (job_id, try, worker, finished_at, outcome) "
        "VALUES ($1, 1, 'w', clock_timestamp(), $2)",
        job_id,
        status.value,
    )
    await conn.execute("INSERT INTO job_effects (job_id, effect) VALUES ($1, 'log_line')", job_id)
    return job_id


async def _rows(conn: asyncpg.Connection, job_ids: list[str]) -> dict[str, tuple[int, int, int]]:
    """Per job id: its rows in jobs, job_attempts and job_effects."""
    counts = {}
    for job_id in job_ids:
        counts[job_id] = (
            await conn.fetchval("SELECT count(*) FROM jobs WHERE id = $1", job_id),
            await conn.fetchval("SELECT count(*) FROM job_attempts WHERE job_id = $1", job_id),
            await conn.fetchval("SELECT count(*) FROM job_effects WHERE job_id = $1", job_id),
        )
    return counts


async def test_prune_ended_deletes_jobs_ended_long_ago_with_their_attempts_and_effects(
    conn: asyncpg.Connection,
) -> None:
    old = [await _ended(conn, status, days_ago=40) for status in (JobStatus.succeeded, JobStatus.failed)]
    old.append(await _ended(conn, JobStatus.cancelled, days_ago=31))
    recent = await _ended(conn, JobStatus.succeeded, days_ago=29)
    waiting = await insert_job(conn, JobStatus.queued)
    await conn.execute("UPDATE jobs SET enqueued_at = now() - interval '90 days' WHERE id = $1", waiting)
    running = await insert_job(conn, JobStatus.in_progress)  # not ended, whatever its finished_at says
    await conn.execute("UPDATE jobs SET finished_at = now() - interval '90 days' WHERE id = $1", running)

    pruned = await ledger.prune_ended(conn, ended_before_seconds=30 * 86400)

    rows = await _rows(conn, [*old, recent, waiting, running])
    assert pruned >= 3  # the session's database may hold other tests' jobs, none of them 30 days old
    assert all(rows[job_id] == (0, 0, 0) for job_id in old)
    assert rows[recent] == (1, 1, 1)
    assert rows[waiting][0] == 1
    assert rows[running][0] == 1


async def test_prune_ended_goes_in_batches_and_the_next_call_goes_on(
    conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_jobs, "PRUNE_BATCH", 2)
    old = [await _ended(conn, JobStatus.succeeded, days_ago=400 + i) for i in range(5)]

    first = await ledger.prune_ended(conn, ended_before_seconds=365 * 86400, max_batches=2)
    left_after_first = [job_id for job_id, row in (await _rows(conn, old)).items() if row[0]]
    second = await ledger.prune_ended(conn, ended_before_seconds=365 * 86400, max_batches=2)

    assert first == 4
    assert left_after_first == [old[0]]  # oldest first: the most recently ended one is left
    assert second == 1
    assert all(row == (0, 0, 0) for row in (await _rows(conn, old)).values())


async def test_prune_ended_keeps_to_the_jobs_named(conn: asyncpg.Connection) -> None:
    # A job's own keep_days prunes its jobs alone (services.jobs.setup.retention groups them).
    logged = await _ended(conn, JobStatus.succeeded, days_ago=500)
    await conn.execute("UPDATE jobs SET name = 'write_log' WHERE id = $1", logged)
    emailed = await _ended(conn, JobStatus.succeeded, days_ago=500)
    await conn.execute("UPDATE jobs SET name = 'send_email' WHERE id = $1", emailed)

    pruned = await ledger.prune_ended(conn, ended_before_seconds=450 * 86400, names=["write_log"])

    rows = await _rows(conn, [logged, emailed])
    assert pruned >= 1
    assert rows[logged] == (0, 0, 0)
    assert rows[emailed] == (1, 1, 1)
