"""A stack the fault tests can break: its own Postgres server, Redis (AOF on), SMTP sink, a gateway
and two workers, every piece of which a test may kill, stop and start again.

Each test leaves the stack whole again; :meth:`FaultStack.check_books` then proves that every job
answered with 202 ended, none is missing, and no effect happened twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from services.ledger.migrate import apply, discover
from services.queue.heartbeat import live_workers
from tests.support.jobs_client import wait_for_job
from tests.support.ports import free_port
from tests.support.postgres_server import PostgresServer
from tests.support.redis_server import RedisServer
from tests.support.services import ServiceProcess, wait_until_ready
from tests.support.smtp_sink import SmtpSink

QUEUE = "afterword:queue"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.faults)
            if os.environ.get("GATEWAY_URL"):
                item.add_marker(pytest.mark.skip(reason="fault tests break their own stack, not a running one"))


async def until(condition: Callable[[], Awaitable[bool]], *, within: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` if it does not within ``within`` s."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within}s: {what}")
        await asyncio.sleep(0.05)


class FaultStack:
    """The pieces, and the jobs accepted so far."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.postgres = PostgresServer()
        self.redis = RedisServer(workdir / "redis", appendonly=True)
        self.sink = SmtpSink()
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_file = workdir / "afterword.log"
        self.env: dict[str, str] = {}
        self.gateway: ServiceProcess | None = None
        self.workers: list[ServiceProcess] = []
        self._worker_count = 0
        self.accepted: dict[str, str] = {}  # job id -> job name
        self.cancelled: set[str] = set()  # jobs a test cancelled on purpose
        # Emails a test saw sent twice in the admitted window (250 received, effect not recorded).
        self.window_duplicates: set[str] = set()
        self.db: asyncpg.Pool
        self.http: httpx.AsyncClient
        self.redis_client: Redis

    async def start(self) -> None:
        """Bring every piece up."""
        self.postgres.init()
        self.postgres.start()
        admin = await asyncpg.connect(self.postgres.dsn())
        await admin.execute("CREATE DATABASE afterword")
        await admin.close()
        dsn = self.postgres.dsn("afterword")
        conn = await asyncpg.connect(dsn)
        await apply(conn, discover())
        await conn.close()
        self.redis.start()
        self.sink.start()
        self.env = {
            "ENVIRONMENT": "test",
            "DATABASE_URL": dsn,
            "REDIS_URL": self.redis.url,
            "QUEUE_NAME": QUEUE,
            "SMTP_HOST": self.sink.host,
            "SMTP_PORT": str(self.sink.port),
            "SMTP_TIMEOUT": "20",
            "LOG_FILE": str(self.log_file),
            "TEMP_DIR": str(self.workdir / "tmp"),
            "GATEWAY_PORT": str(self.port),
            "HEARTBEAT_SECONDS": "1",
            "RETRY_BASE_DELAY_SECONDS": "0.3",
            "RETRY_MAX_DELAY_SECONDS": "10",
            "JOB_MAX_TRIES": "10",
            "SHUTDOWN_GRACE_SECONDS": "15",
            "SWEEP_EVERY_SECONDS": "1",
            "SWEEP_IDLE_SECONDS": "2",
            "WORKER_METRICS_PORT": "0",  # two workers on one host: no metrics endpoint to clash on
        }
        # LEASE_SECONDS and JOB_TIMEOUT_SECONDS keep their defaults: the promise is about those.
        self.db = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        # Survives the server restarts the tests cause: a dead pooled connection is retried once.
        self.redis_client = Redis.from_url(
            self.redis.url, retry=Retry(NoBackoff(), 3), retry_on_error=[RedisConnectionError]
        )
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=15)
        self.gateway = ServiceProcess("services.gateway", env=self.env, workdir=self.workdir)
        self.gateway.start()
        self.add_worker()
        self.add_worker()
        await self.ready()

    def add_worker(self, env: dict[str, str] | None = None) -> ServiceProcess:
        """Start one more worker process (``env`` overrides the stack's settings for it)."""
        self._worker_count += 1
        worker = ServiceProcess(
            "services.jobs", env={**self.env, **(env or {})}, workdir=self.workdir, label=f"worker-{self._worker_count}"
        )
        worker.start()
        self.workers.append(worker)
        return worker

    def worker_by_id(self, worker_id: str) -> ServiceProcess:
        """The worker process whose ledger name (host:pid:suffix) is ``worker_id``."""
        pid = int(worker_id.split(":")[1])
        return next(w for w in self.workers if w.process is not None and w.pid == pid)

    def drop_worker(self, worker: ServiceProcess) -> None:
        """Forget a worker the test stopped or killed."""
        self.workers.remove(worker)

    async def restart_gateway(self) -> None:
        """Start the gateway again (after a test killed it) and wait until the stack is ready."""
        assert self.gateway is not None
        self.gateway.kill()  # a no-op when it is gone already
        self.gateway.start()
        await self.ready()

    async def ready(self) -> None:
        """Wait until the gateway answers /readyz (Postgres, Redis and a worker alive)."""
        processes = tuple(p for p in (self.gateway, *self.workers) if p is not None)
        await asyncio.to_thread(wait_until_ready, self.base_url, processes=processes)

    async def post(self, path: str, body: Any = None, *, expect: int = 202) -> dict[str, Any]:
        """POST to the gateway, record the jobs it accepted, return the answer."""
        response = await self.http.post(path, json=body)
        assert response.status_code == expect, response.text
        answer: dict[str, Any] = response.json()
        if expect == 202:
            for job in answer.get("jobs", [answer]):
                self.accepted[job["id"]] = job["name"]
        return answer

    async def job(self, job_id: str) -> dict[str, Any]:
        """The job's record from the gateway."""
        response = await self.http.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        record: dict[str, Any] = response.json()
        return record

    async def wait_in_progress(self, job_id: str, *, within: float = 15) -> dict[str, Any]:
        """Wait until the job runs; return its record."""

        async def running() -> bool:
            return bool((await self.job(job_id))["status"] == "in_progress")

        await until(running, within=within, what=f"job {job_id} in progress")
        return await self.job(job_id)

    async def email_in_flight(self, address: str, *, delay: float) -> tuple[dict[str, Any], ServiceProcess]:
        """Post an email job to a sink slowed by ``delay`` s; return it and its worker once its DATA is sent."""
        self.sink.slow_down(delay)
        waiting = self.sink.waiting
        accepted = await self.post(
            "/jobs", {"name": "send_email", "payload": {"to": address, "subject": "s", "body": "b"}}
        )
        running = await self.wait_in_progress(accepted["id"])

        async def in_data() -> bool:
            return self.sink.waiting > waiting

        await until(in_data, within=10, what="the email's DATA reached the server")
        return accepted, self.worker_by_id(running["attempts"][0]["worker"])

    def log_lines(self) -> list[dict[str, Any]]:
        """Every line of the log file, parsed (a broken line fails the test)."""
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines()]

    async def check_books(self, *, within: float = 60) -> None:
        """Every accepted job ended, and no effect happened twice."""
        for job_id in self.accepted:
            job = await wait_for_job(self.http, job_id, within=within)
            expected = {"cancelled"} if job_id in self.cancelled else {"succeeded", "failed"}
            assert job["status"] in expected, job
        lines = Counter(line["job_id"] for line in self.log_lines())
        doubled = {job_id: n for job_id, n in lines.items() if n > 1}
        assert not doubled, f"log lines written twice: {doubled}"
        with self.sink.lock:
            ids = Counter(r.message["Message-ID"].strip("<>").split("@")[0] for r in self.sink.received)
        doubled = {job_id: n for job_id, n in ids.items() if n > 1 and job_id not in self.window_duplicates}
        assert not doubled, f"emails delivered twice: {doubled}"
        missing = [i for i, n in self.accepted.items() if n == "write_log" and lines[i] == 0]
        succeeded = [i for i in missing if (await self.job(i))["status"] == "succeeded"]
        assert not succeeded, f"succeeded write_log jobs without a line: {succeeded}"

    async def heal(self) -> None:
        """Make every piece run again and keep two workers."""
        if not self.postgres.is_running():
            self.postgres.start()
        if self.redis.process is None:
            self.redis.start()
        self.sink.slow_down(0)
        if self.gateway is not None and (self.gateway.process is None or self.gateway.process.poll() is not None):
            self.gateway.kill()
            self.gateway.start()
        self.workers = [w for w in self.workers if w.process is not None and w.process.poll() is None]
        while len(self.workers) < 2:
            self.add_worker()
        await self.ready()
        await self.workers_beating()

    async def workers_beating(self) -> None:
        """Wait until every worker process beats: each is up, its signal handlers installed."""

        async def all_beating() -> bool:
            beating = {info.get("pid") for info in await live_workers(self.redis_client, stale_after_seconds=3)}
            return all(w.process is not None and w.pid in beating for w in self.workers)

        await until(all_beating, within=60, what="every worker process beats")

    async def close(self) -> None:
        """Stop everything and delete the server files."""
        for worker in self.workers:
            worker.stop()
        if self.gateway is not None:
            self.gateway.stop()
        await self.http.aclose()
        await self.redis_client.aclose()
        await self.db.close()
        self.sink.stop()
        self.redis.stop()
        self.postgres.destroy()

    def outputs(self) -> str:
        """The last lines each process printed, for failure messages."""
        processes = [p for p in (self.gateway, *self.workers) if p is not None]
        return "\n".join(f"--- {p.label}\n{p.output()[-2500:]}" for p in processes)


def worker_pid(worker_id: str) -> int:
    """The pid inside a worker's ledger name."""
    match = re.match(r"^[^:]+:(\d+):", worker_id)
    assert match is not None, worker_id
    return int(match.group(1))


@pytest.fixture(scope="session")
async def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FaultStack]:
    """The breakable stack, shared by the fault tests (each one heals it)."""
    stack = FaultStack(tmp_path_factory.mktemp("faults"))
    try:
        await stack.start()
        yield stack
    finally:
        await stack.close()


@pytest.fixture
async def stack(fault_stack: FaultStack) -> AsyncIterator[FaultStack]:
    """The breakable stack for one test: healed and its books checked afterwards."""
    await fault_stack.heal()
    yield fault_stack
    try:
        await fault_stack.heal()
        await fault_stack.check_books()
    except BaseException:
        print(fault_stack.outputs())
        raise


def kill(worker: ServiceProcess) -> None:
    """SIGKILL a worker: no clean-up of any kind."""
    worker.signal(signal.SIGKILL)
    worker.wait(timeout=10)
