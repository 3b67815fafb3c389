"""Each job's implementation is found at start-up; a mismatch with the definitions stops the worker, naming it."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.contract import JOBS, JobDefinition, JobName, SendEmail, WriteLog
from services.jobs import loading
from services.jobs.loading import JobCatalogError, implements, load

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _implemented_kept() -> Iterator[None]:
    importlib.import_module("services.jobs.implementations.builtin")  # marked once, when first imported
    before = dict(loading.IMPLEMENTED)
    yield
    loading.IMPLEMENTED.clear()
    loading.IMPLEMENTED.update(before)


def marked(ctx: Any, payload: Any) -> dict[str, Any]:
    return {}


def unmarked(ctx: Any, payload: Any) -> dict[str, Any]:
    return {}


NOT_AN_ERROR = 42


def test_every_defined_job_loads_with_its_implementation() -> None:
    loaded = load()

    assert set(loaded) == set(JobName) == set(JOBS)
    for name, job in loaded.items():
        assert f"{job.function.__module__}:{job.function.__qualname__}" == JOBS[name].implementation


def test_a_job_defined_without_an_implementation_is_named() -> None:
    jobs = {**JOBS, JobName.write_log: JobDefinition(JobName.write_log, WriteLog, f"{__name__}:nowhere")}

    with pytest.raises(
        JobCatalogError, match=rf"job write_log: its implementation {__name__}:nowhere: .* has no nowhere"
    ):
        load(jobs)


def test_an_implementation_without_a_definition_is_named() -> None:
    implements("test_marked")(marked)

    with pytest.raises(
        JobCatalogError, match=rf"{__name__}:marked implements job 'test_marked', which has no JobDefinition"
    ):
        load()


def test_a_function_not_marked_as_the_jobs_implementation_is_named() -> None:
    jobs = {**JOBS, JobName.write_log: JobDefinition(JobName.write_log, WriteLog, f"{__name__}:unmarked")}

    with pytest.raises(JobCatalogError, match=r"job write_log: .*:unmarked is not marked @implements\('write_log'\)"):
        load(jobs)


def test_a_job_implemented_twice_is_refused_when_the_second_is_marked() -> None:
    with pytest.raises(JobCatalogError, match=r"job send_email is implemented twice"):
        implements(JobName.send_email)(unmarked)


def test_a_permanent_error_that_is_not_an_exception_class_is_named() -> None:
    send = JOBS[JobName.send_email]
    jobs = {
        **JOBS,
        JobName.send_email: JobDefinition(
            JobName.send_email, SendEmail, send.implementation, permanent=(f"{__name__}:NOT_AN_ERROR",)
        ),
    }

    with pytest.raises(JobCatalogError, match=rf"job send_email: its permanent error {__name__}:NOT_AN_ERROR is not"):
        load(jobs)


def test_every_problem_is_listed_at_once() -> None:
    implements("test_marked")(marked)
    jobs = {**JOBS, JobName.write_log: JobDefinition(JobName.write_log, WriteLog, f"{__name__}:unmarked")}

    with pytest.raises(JobCatalogError) as raised:
        load(jobs)

    assert "job write_log" in str(raised.value)
    assert "test_marked" in str(raised.value)


def test_the_worker_stops_at_start_up_naming_a_job_without_a_definition(database_dsn: str) -> None:
    # The real start-up path (python -m services.jobs's main), with one implementation planted
    # that no definition names: the worker exits before it connects to anything.
    code = (
        "from services.jobs import loading\n"
        "loading.implements('resize_image')(lambda ctx, payload: {})\n"
        "from services.jobs.__main__ import main\n"
        "main()\n"
    )
    env = {**os.environ, "DATABASE_URL": database_dsn, "REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 2, done.stderr
    said = done.stdout + done.stderr
    assert "the jobs worker cannot start" in said
    assert "implements job 'resize_image', which has no JobDefinition" in said
