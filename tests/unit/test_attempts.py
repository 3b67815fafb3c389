"""The worker's attempt book against the session's migrated database: shared commits, early starts."""

from __future__ import annotations

import asyncio

import asyncpg

from services import ledger
from services.contract import JobStatus
from services.jobs.attempts import AttemptBook, Operation, Written
from tests.support.ledger_jobs import insert_job


async def _status(pool: asyncpg.Pool, job_id: str) -> JobStatus:
    job = await ledger.get_job(pool, job_id)
    assert job is not None
    return job.status


class CountingBook(AttemptBook):
    """An attempt book that counts its statements (one per batch, one commit each)."""

    statements = 0

    async def _write(self, operations: list[Operation]) -> list[Written]:
        self.statements += 1
        return await super()._write(operations)


async def test_concurrent_starts_effects_and_ends_share_commits(db_pool: asyncpg.Pool) -> None:
    book = CountingBook(db_pool, worker_id="w-book")
    ids = [await insert_job(db_pool) for _ in range(6)]

    async def run(job_id: str) -> None:
        started = await book.start(job_id)
        await book.record_effect(job_id=job_id, effect="log_line", detail={"line": job_id})
        await book.finish(job_id=job_id, attempt=started.attempt, status=JobStatus.succeeded, result={"ok": 1})

    await asyncio.gather(*(run(job_id) for job_id in ids))

    for job_id in ids:
        assert await _status(db_pool, job_id) is JobStatus.succeeded
        assert await ledger.effect_done(db_pool, job_id=job_id, effect="log_line")
    # 18 writes (a start, an effect and an end for each job), in far fewer statements: a batch
    # takes whatever waits, starts, effects and ends alike.
    assert 3 <= book.statements <= 6, book.statements


async def test_a_begun_start_is_the_one_the_job_gets(db_pool: asyncpg.Pool) -> None:
    book = AttemptBook(db_pool, worker_id="w-early")
    job_id = await insert_job(db_pool)

    book.begin(job_id)
    book.begin(job_id)  # a second claim of the same job sends nothing more
    started = await book.start(job_id)

    assert (started.previous, started.attempt) == (JobStatus.queued, 1)
    assert [a.worker for a in await ledger.get_attempts(db_pool, job_id)] == ["w-early"]
    await book.abandon(job_id)  # taken up by the job: nothing to hand back
    assert await _status(db_pool, job_id) is JobStatus.in_progress


async def test_a_begun_start_the_job_never_took_is_handed_back(db_pool: asyncpg.Pool) -> None:
    book = AttemptBook(db_pool, worker_id="w-early")
    job_id = await insert_job(db_pool)

    book.begin(job_id)
    await book.abandon(job_id)

    assert await _status(db_pool, job_id) is JobStatus.queued
    (attempt,) = await ledger.get_attempts(db_pool, job_id)
    assert attempt.outcome == "interrupted"
    assert attempt.finished_at is not None
    # The next start is a plain one, not a crash re-run.
    again = await book.start(job_id)
    assert (again.attempt, again.crash_rerun) == (2, False)


async def test_abandoning_a_final_job_changes_nothing(db_pool: asyncpg.Pool) -> None:
    book = AttemptBook(db_pool, worker_id="w-early")
    job_id = await insert_job(db_pool)
    await ledger.settle(db_pool, job_id=job_id, status=JobStatus.cancelled)

    book.begin(job_id)
    await book.abandon(job_id)

    assert await _status(db_pool, job_id) is JobStatus.cancelled
    assert await ledger.get_attempts(db_pool, job_id) == []


async def test_a_noted_effect_is_written_in_the_statement_of_the_end(db_pool: asyncpg.Pool) -> None:
    book = CountingBook(db_pool, worker_id="w-note")
    job_id = await insert_job(db_pool)
    started = await book.start(job_id)

    book.note_effect(job_id=job_id, effect="log_line", detail={"line": "noted"})
    assert not await ledger.effect_done(db_pool, job_id=job_id, effect="log_line")  # nothing written yet
    before = book.statements
    await book.finish(job_id=job_id, attempt=started.attempt, status=JobStatus.succeeded, result={"ok": 1})

    assert book.statements == before + 1
    assert await ledger.effect_done(db_pool, job_id=job_id, effect="log_line")
    assert await _status(db_pool, job_id) is JobStatus.succeeded


async def test_a_noted_effect_goes_with_any_end_and_only_once(db_pool: asyncpg.Pool) -> None:
    book = AttemptBook(db_pool, worker_id="w-note")
    retried, other = await insert_job(db_pool), await insert_job(db_pool)
    first = await book.start(retried)
    await book.start(other)

    book.note_effect(job_id=retried, effect="email", detail={"message_id": "<m@x>"})
    await book.finish(job_id=retried, attempt=first.attempt, status=JobStatus.retrying, error="SMTP 451")
    book.note_effect(job_id=other, effect="email", detail={"message_id": "<n@x>"})
    await book.abandon(other)  # the run is over without an end: its noted effect is dropped
    second = await book.start(retried)
    await book.finish(job_id=retried, attempt=second.attempt, status=JobStatus.succeeded)

    assert await ledger.effect_done(db_pool, job_id=retried, effect="email")  # with the retrying end
    assert not await ledger.effect_done(db_pool, job_id=other, effect="email")
    assert await _status(db_pool, retried) is JobStatus.succeeded
