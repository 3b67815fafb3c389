"""The stack under test: started here as real processes, or an already running one (GATEWAY_URL).

Started here: a throwaway redis-server on a free port, a throwaway migrated database, the test
process's SMTP sink, and the gateway and one jobs worker as ``python -m`` processes configured
through their environment.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from tests.support.observers import Observer
from tests.support.planting import PlantingRedis
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.services import ServiceProcess, wait_until_ready
from tests.support.smtp_sink import SmtpSink

QUEUE = "afterword:queue"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)


@dataclass
class LocalStack:
    """What the tests started, for tests that need to stop or restart a piece."""

    base_url: str
    env: dict[str, str]
    workdir: Path
    redis: RedisServer
    gateway: ServiceProcess
    worker: ServiceProcess
    worker_metrics_port: int

    @property
    def worker_metrics_url(self) -> str:
        """The worker's Prometheus endpoint."""
        return f"http://127.0.0.1:{self.worker_metrics_port}/metrics"


def stack_env(
    *, database_dsn: str, redis_url: str, sink: SmtpSink, workdir: Path, port: int, worker_metrics_port: int = 0
) -> dict[str, str]:
    """The environment of the gateway and worker processes under test (worker metrics off unless given a port)."""
    return {
        "ENVIRONMENT": "test",
        "API_KEYS": "",  # the shared stack is open, whatever the developer's shell exports
        "DATABASE_URL": database_dsn,
        "REDIS_URL": redis_url,
        "QUEUE_NAME": QUEUE,
        "SMTP_HOST": sink.host,
        "SMTP_PORT": str(sink.port),
        "LOG_FILE": str(workdir / "afterword.log"),
        "TEMP_DIR": str(workdir / "tmp"),
        "REPORTS_DIR": str(workdir / "reports"),
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "HEARTBEAT_SECONDS": "1",
        "RETRY_BASE_DELAY_SECONDS": "0.2",
        "RETRY_MAX_DELAY_SECONDS": "1",
        "JOB_MAX_TRIES": "3",
        "JOB_TIMEOUT_SECONDS": "10",
        "WORKER_METRICS_HOST": "127.0.0.1",
        "WORKER_METRICS_PORT": str(worker_metrics_port),
    }


@pytest.fixture(scope="session")
def local_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, smtp_sink: SmtpSink
) -> Iterator[LocalStack | None]:
    """Start Redis, the gateway and a worker unless GATEWAY_URL names a running stack."""
    if os.environ.get("GATEWAY_URL"):
        yield None
        return
    database_dsn: str = request.getfixturevalue("database_dsn")
    workdir = tmp_path_factory.mktemp("stack")
    redis = RedisServer(workdir / "redis")
    redis.start()
    port, metrics_port = free_port(), free_port()
    env = stack_env(
        database_dsn=database_dsn,
        redis_url=redis.url,
        sink=smtp_sink,
        workdir=workdir,
        port=port,
        worker_metrics_port=metrics_port,
    )
    gateway = ServiceProcess("services.gateway", env=env, workdir=workdir)
    worker = ServiceProcess("services.jobs", env=env, workdir=workdir, label="worker")
    try:
        gateway.start()
        worker.start()
        base_url = f"http://127.0.0.1:{port}"
        wait_until_ready(base_url, processes=(gateway, worker))
        yield LocalStack(
            base_url=base_url,
            env=env,
            workdir=workdir,
            redis=redis,
            gateway=gateway,
            worker=worker,
            worker_metrics_port=metrics_port,
        )
    finally:
        worker.stop()
        gateway.stop()
        redis.stop()


@pytest.fixture(scope="session")
def base_url(local_stack: LocalStack | None) -> str:
    """The gateway's URL."""
    return local_stack.base_url if local_stack is not None else os.environ["GATEWAY_URL"].rstrip("/")


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the gateway."""
    async with httpx.AsyncClient(base_url=base_url, timeout=15) as http:
        yield http


@pytest.fixture(scope="session")
async def observer(local_stack: LocalStack | None, smtp_sink: SmtpSink) -> AsyncIterator[Observer]:
    """Where the tests read the jobs' effects from."""
    if local_stack is not None:
        dsn = local_stack.env["DATABASE_URL"]
        redis_url = local_stack.redis.url
        log_file: Path | None = Path(local_stack.env["LOG_FILE"])
        reports_dir: Path | None = Path(local_stack.env["REPORTS_DIR"])
        sink: SmtpSink | None = smtp_sink
        mailpit = None
    else:
        dsn = os.environ.get("DATABASE_URL", "")
        redis_url = os.environ.get("REDIS_URL", "")
        log_file = Path(os.environ["LOG_FILE"]) if os.environ.get("LOG_FILE") else None
        reports_dir = Path(os.environ["REPORTS_DIR"]) if os.environ.get("REPORTS_DIR") else None
        sink = None
        mailpit = os.environ.get("MAILPIT_URL")  # compose: http://localhost:8025
    db = await asyncpg.create_pool(dsn, min_size=1, max_size=4) if dsn else None
    redis = Redis.from_url(redis_url) if redis_url else None
    try:
        yield Observer(
            sink=sink,
            mailpit_url=mailpit,
            log_file=log_file,
            reports_dir=reports_dir,
            db=db,
            db_dsn=dsn,
            redis=redis,
            queue_name=os.environ.get("QUEUE_NAME", QUEUE),
        )
    finally:
        if redis is not None:
            await redis.aclose()
        if db is not None:
            await db.close()


@pytest.fixture
def local_only_stack(local_stack: LocalStack | None) -> LocalStack:
    """The stack the tests started; skips against a running one (the test breaks or watches its processes)."""
    if local_stack is None:
        pytest.skip("needs the stack the tests started (it plants values in Redis and watches the worker)")
    return local_stack


@pytest.fixture
async def planting_redis(local_only_stack: LocalStack) -> AsyncIterator[PlantingRedis]:
    """A client on the stack's Redis; every key a test names with ``plant`` is deleted afterwards."""
    client = PlantingRedis.from_url(local_only_stack.redis.url)
    client.planted = []
    try:
        yield client
    finally:
        for key in client.planted:
            await client.delete(key)
        await client.aclose()
