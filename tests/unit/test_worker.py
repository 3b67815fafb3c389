"""The worker registers exactly the contract's jobs, and runs them with the JSON serializer."""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.contract import JOBS, JobDefinition, JobName, JobStatus, SendEmail, WriteLog
from services.core.serialization import deserialize, serialize
from services.core.settings import Settings
from services.jobs import execution as registry
from services.jobs import retries
from services.jobs.execution import REGISTRY, SCHEDULED
from services.jobs.loading import Loaded
from services.jobs.metrics import JobMetrics
from services.jobs.retries import RetryPolicy, check_retries_fit, retry_policy
from services.jobs.setup import (
    CRON_CLEANUP,
    CRON_PRUNE,
    CRON_PURGE_KEYS,
    new_worker_id,
    on_shutdown,
    on_startup,
    prune_ledger,
    purge_idempotency_keys,
    retention,
    worker_options,
)
from tests.support.ledger_jobs import insert_job


@pytest.fixture
def options() -> dict[str, Any]:
    settings = Settings(
        _env_file=None,
        redis_url="redis://127.0.0.1:6399/3",
        queue_name="afterword:test-queue",
        job_max_tries=7,
        job_timeout_seconds=30,
        worker_max_jobs=4,
        keep_result_seconds=120,
        heartbeat_seconds=2,
    )
    return worker_options(settings)


def test_registered_functions_are_exactly_the_contracts_jobs(options: dict[str, Any]) -> None:
    names = [f.name for f in options["functions"]]

    assert set(names) == {n.value for n in JobName}
    assert len(names) == len(set(names))
    assert set(REGISTRY) == set(JobName)


def test_each_function_runs_its_registered_coroutine(options: dict[str, Any]) -> None:
    for function in options["functions"]:
        name = JobName(function.name)
        assert function.coroutine is REGISTRY[name]
        assert function.max_tries == retry_policy(name, Settings(_env_file=None, job_max_tries=7)).tries
        # ARQ's backstop: the job's timeout (its own or the setting's), the wrapper's tries at writing
        # its end (three 9 s leases), 5 s.
        assert function.timeout_s == (JOBS[name].timeout or 30) + 27 + 5


def test_max_tries_follow_the_setting_unless_a_job_caps_them(options: dict[str, Any]) -> None:
    tries = {f.name: f.max_tries for f in options["functions"]}

    assert tries[JobName.send_email] == 7
    assert tries[JobName.write_log] == 7
    assert tries[JobName.update_user] == 7
    assert tries[JobName.cleanup_temp_files] == 1  # declared with tries=1: a cron's next run is its retry


def test_a_job_defines_its_own_tries_backoff_and_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "REGISTRY", {})
    monkeypatch.setattr(registry, "SCHEDULED", {})
    monkeypatch.setattr(retries, "RETRIES", {})
    monkeypatch.setattr(retries, "TIMEOUTS", {})
    settings = Settings(
        _env_file=None, job_max_tries=7, retry_base_delay_seconds=2, retry_max_delay_seconds=60, job_timeout_seconds=30
    )

    async def send(ctx: Any, payload: Any) -> dict[str, Any]:
        return {}

    def write(ctx: Any, payload: Any) -> dict[str, Any]:
        return {}

    registry.register(Loaded(JobDefinition(JobName.send_email, SendEmail, "m:send", tries=20, max_delay=900), send, ()))
    registry.register(
        Loaded(JobDefinition(JobName.write_log, WriteLog, "m:write", base_delay=0.5, timeout=5), write, (KeyError,))
    )

    assert retry_policy(JobName.send_email, settings) == RetryPolicy(tries=20, base_delay=2, max_delay=900)
    assert retry_policy(JobName.write_log, settings) == RetryPolicy(
        tries=7, base_delay=0.5, max_delay=60, permanent=(KeyError,)
    )
    assert retry_policy(JobName.update_user, settings) == RetryPolicy(tries=7, base_delay=2, max_delay=60)
    assert retries.job_timeout(JobName.write_log, settings) == 5
    assert retries.job_timeout(JobName.send_email, settings) == 30


def test_a_definition_is_checked_when_it_is_made() -> None:
    with pytest.raises(ValueError, match="tries must be positive"):
        JobDefinition(JobName.send_email, SendEmail, "m:send", tries=0)
    with pytest.raises(ValueError, match=r"package\.module:function"):
        JobDefinition(JobName.send_email, SendEmail, "send")


def test_retries_that_could_outlast_arqs_job_key_are_refused() -> None:
    check_retries_fit(Settings(_env_file=None))  # the defaults fit
    # 100 tries, 20 minutes apart at most: more than a day.
    too_long = Settings(_env_file=None, job_max_tries=100, retry_max_delay_seconds=1200)

    with pytest.raises(ValueError, match=r"retries of send_email could last .* JOB_MAX_TRIES"):
        worker_options(too_long)


def test_cron_cleanup(options: dict[str, Any]) -> None:
    crons = {c.name: c for c in options["cron_jobs"]}

    assert CRON_CLEANUP == "cron:cleanup_temp_files"
    cleanup = crons["cron:cleanup_temp_files"]
    assert cleanup.coroutine is SCHEDULED[JobName.cleanup_temp_files]  # no ledger row: not the tracked run
    assert [c.name for c in options["cron_jobs"] if c.coroutine is SCHEDULED[JobName.cleanup_temp_files]] == [
        "cron:cleanup_temp_files"
    ]


def test_cron_prune_runs_every_ten_minutes_unless_retention_is_off(
    options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    prune = {c.name: c for c in options["cron_jobs"]}[CRON_PRUNE]
    for name, definition in list(JOBS.items()):  # no job keeps its records for days of its own
        monkeypatch.setitem(JOBS, name, dataclasses.replace(definition, keep_days=None))
    kept_forever = worker_options(Settings(_env_file=None, job_retention_days=0))

    assert prune.coroutine is prune_ledger
    assert prune.minute == {0, 10, 20, 30, 40, 50}
    assert prune.second == 30
    assert CRON_PRUNE not in {c.name for c in kept_forever["cron_jobs"]}


async def test_prune_ledger_deletes_what_ended_before_the_retention(db_pool: asyncpg.Pool) -> None:
    old, recent = await insert_job(db_pool, JobStatus.queued), await insert_job(db_pool, JobStatus.queued)
    for job_id, days in ((old, 3), (recent, 1)):
        await db_pool.execute(
            "UPDATE jobs SET status = 'succeeded', finished_at = now() - make_interval(days => $2) WHERE id = $1",
            job_id,
            days,
        )
    ctx: dict[str, Any] = {"settings": Settings(_env_file=None, job_retention_days=2), "db": db_pool}

    try:
        result = await prune_ledger(ctx)
        left = await db_pool.fetch("SELECT id FROM jobs WHERE id = ANY($1::text[])", [old, recent])
    finally:
        await db_pool.execute("DELETE FROM jobs WHERE id = ANY($1::text[])", [old, recent])

    assert result["pruned"] >= 1
    assert [row["id"] for row in left] == [recent]


def test_cron_purge_of_idempotency_keys_runs_every_minute(options: dict[str, Any]) -> None:
    purge = {c.name: c for c in options["cron_jobs"]}[CRON_PURGE_KEYS]

    assert purge.coroutine is purge_idempotency_keys
    assert purge.minute is None  # every minute
    assert purge.second == 20


async def test_purge_idempotency_keys_deletes_what_is_older_than_a_day(db_pool: asyncpg.Pool) -> None:
    prefix = f"cron-purge-{uuid.uuid4()}"
    await db_pool.execute(
        "INSERT INTO idempotency_keys (scope, key, fingerprint, response_status, response_headers, response_body, "
        "created_at) SELECT '', $1 || '-' || n, 'f', 202, '[]', '', "
        "clock_timestamp() - CASE WHEN n <= 1200 THEN interval '25 hours' ELSE interval '23 hours' END "
        "FROM generate_series(1, 1203) AS n",
        prefix,
    )
    ctx: dict[str, Any] = {"settings": Settings(_env_file=None), "db": db_pool}

    try:
        result = await purge_idempotency_keys(ctx)
        left = await db_pool.fetchval("SELECT count(*) FROM idempotency_keys WHERE key LIKE $1 || '-%'", prefix)
    finally:
        await db_pool.execute("DELETE FROM idempotency_keys WHERE key LIKE $1 || '-%'", prefix)

    assert result["purged"] >= 1200
    assert left == 3


def test_cron_names_never_shadow_a_job(options: dict[str, Any]) -> None:
    cron_names = [c.name for c in options["cron_jobs"]]

    assert len(cron_names) == len(set(cron_names))
    assert all(name.startswith("cron:") for name in cron_names)
    assert not set(cron_names) & {f.name for f in options["functions"]}


def test_options_follow_the_settings(options: dict[str, Any]) -> None:
    assert options["job_serializer"] is serialize
    assert options["job_deserializer"] is deserialize
    assert options["queue_name"] == "afterword:test-queue"
    assert options["max_jobs"] == 4
    assert options["max_tries"] == 7
    assert options["keep_result"] == 120
    assert options["health_check_interval"] == 2
    assert options["on_startup"] is on_startup
    assert options["on_shutdown"] is on_shutdown
    redis_settings = options["redis_settings"]
    assert (redis_settings.host, redis_settings.port, redis_settings.database) == ("127.0.0.1", 6399, 3)
    ctx = options["ctx"]
    assert isinstance(ctx["settings"], Settings)
    assert ctx["settings"].queue_name == "afterword:test-queue"
    assert isinstance(ctx["worker_id"], str)


def test_worker_ids_are_unique() -> None:
    ids = {new_worker_id() for _ in range(50)}

    assert len(ids) == 50


def test_registered_coroutines_are_named_after_their_job() -> None:
    for name, coroutine in REGISTRY.items():
        assert coroutine.__name__ == name.value


async def test_the_scheduled_cleanup_runs_without_a_ledger_row(tmp_path: Path) -> None:
    old = tmp_path / "old.txt"
    old.write_text("x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    metrics = JobMetrics()
    ctx: dict[str, Any] = {
        "settings": Settings(_env_file=None, temp_dir=tmp_path, temp_max_age_seconds=3600),
        "metrics": metrics,
        "job_id": "cron:cleanup_temp_files:1",
        "job_try": 1,
        "score": None,
    }  # no db, no attempt book: the scheduled run must not need them

    result = await SCHEDULED[JobName.cleanup_temp_files](ctx)

    assert result == {"directory": str(tmp_path), "removed": 1}
    assert not old.exists()
    counted = metrics.registry.get_sample_value(
        "afterword_jobs_total", {"name": "cleanup_temp_files", "outcome": "succeeded"}
    )
    assert counted == 1


def test_a_jobs_own_keep_days_set_its_retention_apart_from_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    write_log = JOBS[JobName.write_log]
    monkeypatch.setitem(
        JOBS, JobName.write_log, JobDefinition(JobName.write_log, WriteLog, write_log.implementation, keep_days=2)
    )

    by_days = retention(Settings(_env_file=None, job_retention_days=30))
    groups = {days: names for names, days in by_days}
    kept_forever = {days: names for names, days in retention(Settings(_env_file=None, job_retention_days=0))}

    assert [days for _, days in by_days] == sorted(groups)
    assert groups[2] == kept_forever[2] == ["write_log"]
    assert set(groups[30]) >= {"send_email", "update_user", "cleanup_temp_files"}
    assert set(kept_forever[0]) >= {"send_email", "update_user", "cleanup_temp_files"}
    for name, definition in JOBS.items():  # the others: their own keep_days, else the setting's
        if name is not JobName.write_log and definition.keep_days is not None:
            assert name.value in groups[definition.keep_days]
            assert name.value in kept_forever[definition.keep_days]
    assert any(
        c.name == CRON_PRUNE for c in worker_options(Settings(_env_file=None, job_retention_days=0))["cron_jobs"]
    )
