"""The worker registers exactly the contract's jobs, and runs them with the JSON serializer."""

from __future__ import annotations

from typing import Any

import pytest

from services.contract import JobName
from services.jobs.registry import REGISTRY, max_tries
from services.jobs.worker import CRON_CLEANUP, new_worker_id, on_shutdown, on_startup, worker_options
from services.serialization import deserialize, serialize
from services.settings import Settings


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
        assert function.max_tries == max_tries(name, 7)
        assert function.timeout_s == 35


def test_max_tries_follow_the_setting_unless_a_job_caps_them(options: dict[str, Any]) -> None:
    tries = {f.name: f.max_tries for f in options["functions"]}

    assert tries[JobName.send_email] == 7
    assert tries[JobName.write_log] == 7
    assert tries[JobName.update_user] == 7
    assert 1 <= tries[JobName.cleanup_temp_files] <= 7


def test_cron_cleanup(options: dict[str, Any]) -> None:
    crons = {c.name: c for c in options["cron_jobs"]}

    assert CRON_CLEANUP == "cron:cleanup_temp_files"
    cleanup = crons["cron:cleanup_temp_files"]
    assert cleanup.coroutine is REGISTRY[JobName.cleanup_temp_files]
    assert [c.name for c in options["cron_jobs"] if c.coroutine is REGISTRY[JobName.cleanup_temp_files]] == [
        "cron:cleanup_temp_files"
    ]


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
