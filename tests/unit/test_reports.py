"""The ``write_report`` job (docs/jobs.md's example): its payload, its file, its effect and its errors.

The implementation is a plain ``def``; it is called here as the worker calls it, in a worker
thread (``anyio.to_thread``), with the parts of ``ctx`` it uses: the settings, the job's id, a
real lease keeper and a real attempt book on the test database.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.to_thread
import asyncpg
import pytest
from arq.connections import ArqRedis
from pydantic import ValidationError

from services import ledger
from services.contract import JobName, JobStatus, WriteReport
from services.core.settings import Settings
from services.jobs.attempts import AttemptBook
from services.jobs.context import JobContext
from services.jobs.execution import JobResult
from services.jobs.implementations.reports import MAX_CELLS, ReportTooLarge, slug, write_report
from services.jobs.loading import load
from services.jobs.retries import RetryOverride, RetryPolicy, Verdict
from services.queue.fencing import Fenced
from services.queue.leases import LeaseKeeper
from tests.support.ledger_jobs import new_job
from tests.support.redis_server import RedisServer

REPORT = WriteReport(
    title="Signups by day",
    columns=["day", "signups", "note"],
    rows=[["2024-05-01", 12, None], ["2024-05-02", 9.5, 'said "hi", twice\nthen left']],
)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[ArqRedis]:
    async with redis_server.fresh_arq_client("afterword:test-reports") as client:
        yield client


def job_context(
    tmp_path: Path, redis: ArqRedis, db: asyncpg.Pool, *, job_id: str | None = None, leased: bool = True
) -> JobContext:
    """What ``write_report`` reads of ``ctx``, its lease held unless ``leased`` is false."""
    job_id = job_id or uuid.uuid4().hex
    leases = LeaseKeeper(redis, lease_seconds=9)
    if leased:
        leases.claimed(job_id)
    context = {
        "settings": Settings(_env_file=None, reports_dir=tmp_path / "reports"),
        "job_id": job_id,
        "attempt": 1,
        "leases": leases,
        "attempts": AttemptBook(db, worker_id="test-reports"),
    }
    return cast(JobContext, context)


async def run(ctx: JobContext, payload: WriteReport) -> JobResult:
    """Run the job as the worker runs a plain ``def``: in a worker thread."""
    return await anyio.to_thread.run_sync(write_report, ctx, payload)


def read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.reader(file))


async def test_a_report_is_its_columns_then_its_rows(tmp_path: Path, redis: ArqRedis, db_pool: asyncpg.Pool) -> None:
    ctx = job_context(tmp_path, redis, db_pool)

    result = await run(ctx, REPORT)

    path = tmp_path / "reports" / f"{ctx['job_id']}-signups-by-day.csv"
    assert result == {"file": str(path), "rows": 2}
    assert read_csv(path) == [
        ["day", "signups", "note"],
        ["2024-05-01", "12", ""],
        ["2024-05-02", "9.5", 'said "hi", twice\nthen left'],
    ]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left


async def test_a_report_written_again_is_the_same_file(tmp_path: Path, redis: ArqRedis, db_pool: asyncpg.Pool) -> None:
    """A run repeated after a crash (same job id) replaces the file with the same one."""
    ctx = job_context(tmp_path, redis, db_pool)
    first = await run(ctx, REPORT)
    content = await anyio.Path(first["file"]).read_bytes()

    again = await run(ctx, REPORT)

    assert again == first
    assert await anyio.Path(again["file"]).read_bytes() == content
    assert [p.name for p in (tmp_path / "reports").iterdir()] == [Path(first["file"]).name]


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Signups by day", "signups-by-day"),
        ("../../etc/passwd", "etc-passwd"),
        ("..", "report"),
        ("Relatório: março/2024", "relatorio-marco-2024"),
        ("日本語", "report"),
        ("x" * 100, "x" * 60),
    ],
)
def test_a_title_becomes_a_file_name_never_a_path(title: str, expected: str) -> None:
    assert slug(title) == expected


async def test_a_title_that_looks_like_a_path_writes_in_the_reports_directory(
    tmp_path: Path, redis: ArqRedis, db_pool: asyncpg.Pool
) -> None:
    ctx = job_context(tmp_path, redis, db_pool)

    result = await run(ctx, REPORT.model_copy(update={"title": "../../outside"}))

    assert Path(result["file"]).parent == tmp_path / "reports"
    assert Path(result["file"]).name == f"{ctx['job_id']}-outside.csv"


async def test_a_report_too_large_is_refused_before_anything_is_written(
    tmp_path: Path, redis: ArqRedis, db_pool: asyncpg.Pool
) -> None:
    columns = [f"c{i}" for i in range(50)]
    rows = [[0] * 50 for _ in range(MAX_CELLS // 50 + 1)]
    ctx = job_context(tmp_path, redis, db_pool)

    with pytest.raises(ReportTooLarge, match=f"10050 values: a report holds at most {MAX_CELLS}"):
        await run(ctx, WriteReport(title="big", columns=columns, rows=rows))

    assert not (tmp_path / "reports").exists()


def test_a_report_too_large_fails_the_job_at_once_because_its_definition_says_so() -> None:
    """An ``OSError`` is transient by default; the definition's ``permanent`` makes this one fail at once."""
    declared = load()[JobName.write_report].permanent
    settings_policy = RetryPolicy(tries=3, base_delay=1, max_delay=1)
    error = ReportTooLarge("too large")

    assert declared == (ReportTooLarge,)
    assert RetryOverride(permanent=declared).applied_to(settings_policy).decide(error, 1).verdict is Verdict.FAIL
    assert settings_policy.decide(error, 1).verdict is Verdict.RETRY  # what it would be, undeclared


async def test_a_run_that_lost_its_lease_writes_nothing(tmp_path: Path, redis: ArqRedis, db_pool: asyncpg.Pool) -> None:
    ctx = job_context(tmp_path, redis, db_pool, leased=False)

    with pytest.raises(Fenced):
        await run(ctx, REPORT)

    assert list((tmp_path / "reports").iterdir()) == []  # neither the report nor its temporary file


async def test_the_report_is_recorded_as_the_jobs_effect_with_its_end(
    tmp_path: Path, redis: ArqRedis, db_pool: asyncpg.Pool
) -> None:
    job = new_job(name=JobName.write_report, payload=REPORT.model_dump(mode="json"))
    await ledger.insert_jobs(db_pool, [job])
    ctx = job_context(tmp_path, redis, db_pool, job_id=job.id)
    started = await ctx["attempts"].start(job.id)

    result = await run(ctx, REPORT)
    assert not await ledger.effect_done(db_pool, job_id=job.id, effect="report")  # noted, not yet written
    await ctx["attempts"].finish(job_id=job.id, attempt=started.attempt, status=JobStatus.succeeded, result=result)

    detail = await db_pool.fetchval("SELECT detail FROM job_effects WHERE job_id = $1 AND effect = 'report'", job.id)
    assert json.loads(detail) == {"file": result["file"], "rows": 2}


def test_rows_of_the_wrong_length_are_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as refused:
        WriteReport(title="t", columns=["a", "b"], rows=[["1", "2"], ["3"]])

    (error,) = refused.value.errors()
    assert error["loc"] == ("rows",)
    assert "row 1 has 1 values, not one per column (2)" in error["msg"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"title": "t", "columns": [], "rows": []}, ("columns",)),
        ({"title": "t", "columns": ["c"] * 51, "rows": []}, ("columns",)),
        ({"title": "a\nb", "columns": ["c"], "rows": []}, ("title",)),
        ({"title": "", "columns": ["c"], "rows": []}, ("title",)),
        ({"title": "t", "columns": ["c"], "rows": [[True]]}, ("rows", 0, 0)),
        ({"title": "t", "columns": ["c"], "rows": [[{"x": 1}]]}, ("rows", 0, 0)),
        ({"title": "t", "columns": ["c"], "rows": [[float("inf")]]}, ("rows", 0, 0)),
        ({"title": "t", "columns": ["c"], "rows": [["nul \x00"]]}, ("rows", 0, 0)),
        ({"title": "t", "columns": ["c"], "rows": [["x" * 1_001]]}, ("rows", 0, 0)),
        ({"title": "t", "columns": ["c"], "rows": [[1]] * 1_001}, ("rows",)),
    ],
)
def test_a_payload_out_of_bounds_is_refused_naming_the_field(payload: dict[str, Any], field: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as refused:
        WriteReport.model_validate(payload)

    assert [error["loc"] for error in refused.value.errors()] == [field]
