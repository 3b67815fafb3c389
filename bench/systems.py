"""The systems under test: our stack, the seed (FastAPI tutorial) and plain ARQ.

Each one runs on resources of its own: a throwaway ``redis-server`` on a free port, and for the
systems that keep users or a ledger a throwaway database on the local Postgres. A system can
start its gateway and its workers, accept jobs over HTTP, and tell when each job started and
finished, which is all the measures need.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import httpx
from arq.constants import in_progress_key_prefix, result_key_prefix
from redis.asyncio import Redis

from bench.processes import Proc, RedisServer, create_database, drop_database, free_port, wait_http
from services.queue.heartbeat import live_workers


@dataclass(frozen=True)
class Timing:
    """When a job started and finished (seconds since the epoch)."""

    started: float
    finished: float


async def _post_many(
    base_url: str, paths: Sequence[tuple[str, dict[str, Any] | None]], *, concurrency: int = 32
) -> list[dict[str, Any]]:
    """POST every (path, json body), ``concurrency`` at a time; return the JSON answers in order."""
    answers: list[dict[str, Any]] = [{} for _ in paths]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(paths)):
        queue.put_nowait(index)

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            index = queue.get_nowait()
            path, body = paths[index]
            response = await client.post(path, json=body)
            if response.status_code not in (200, 202):
                raise RuntimeError(f"POST {path}: {response.status_code} {response.text}")
            answers[index] = response.json()

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    return answers


class _Stoppable(Protocol):
    async def stop(self) -> None: ...


@contextlib.asynccontextmanager
async def _stopped_on_failure(system: _Stoppable) -> AsyncIterator[None]:
    """Around a system's start: if a step fails, stop what the steps before it started, then raise."""
    try:
        yield
    except BaseException:
        await system.stop()
        raise


def signup_bodies(count: int, *, tag: str) -> list[tuple[str, dict[str, Any] | None]]:
    """``count`` distinct POST /signup requests."""
    return [("/signup", {"email": f"user{i}-{tag}@example.com", "name": f"User {i}"}) for i in range(count)]


class SeedSystem:
    """Baseline A: the FastAPI tutorial, one uvicorn process writing its log in background tasks."""

    name = "seed"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir / "seed"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.gateway = Proc(
            "seed-app",
            ["-m", "bench.baselines.seed_app"],
            env={"PORT": str(self.port), "LOG_FILE": str(self.workdir / "log.txt")},
            workdir=self.workdir,
        )

    async def start(self) -> None:
        """Start the app and wait until it answers; stop it if it never does."""
        async with _stopped_on_failure(self):
            self.gateway.start()
            await asyncio.to_thread(wait_http, f"{self.base_url}/healthz", processes=[self.gateway])

    async def stop(self) -> None:
        """Stop the app."""
        self.gateway.stop()


class ArqSystem:
    """Baseline B: a FastAPI app enqueuing on an ARQ pool, and plain ARQ workers, at ARQ's defaults."""

    name = "arq"
    health_key = "arq:queue:health-check"

    def __init__(self, workdir: Path, *, smtp_port: int) -> None:
        self.workdir = workdir / "arq"
        self.smtp_port = smtp_port
        self.redis_server = RedisServer(self.workdir / "redis")
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.database_dsn = ""
        self.gateway = Proc(
            "arq-app",
            ["-m", "bench.baselines.arq_app"],
            env={"PORT": str(self.port), "REDIS_URL": self.redis_server.url},
            workdir=self.workdir,
        )
        self.workers: list[Proc] = []
        self.redis: Redis
        self._worker_count = 0

    async def start(self) -> None:
        """Start Redis, create the users database, start the app; undo it all if a step fails."""
        async with _stopped_on_failure(self):
            self.redis_server.start()
            self.database_dsn = await create_database("afterword_bench_arq")
            self.redis = Redis.from_url(self.redis_server.url)
            self.gateway.start()
            await asyncio.to_thread(wait_http, f"{self.base_url}/healthz", processes=[self.gateway])

    async def stop(self) -> None:
        """Stop everything, drop the database; also after a start that failed part way."""
        self.stop_workers()
        self.gateway.stop()
        if hasattr(self, "redis"):
            await self.redis.aclose()
        self.redis_server.stop()
        if self.database_dsn:
            await drop_database(self.database_dsn)

    def pickup_file(self) -> Path:
        """Where the timed jobs write their pickup latency (emptied whenever workers start)."""
        return self.workdir / "pickup.txt"

    async def start_workers(self, count: int, *, poll_delay: float, smtp_port: int | None = None) -> list[Proc]:
        """Start ``count`` ARQ workers (``python -m arq ...WorkerSettings``) and wait until they poll."""
        await self.redis.delete(self.health_key)
        self.pickup_file().unlink(missing_ok=True)
        for _ in range(count):
            self._worker_count += 1
            env = {
                "REDIS_URL": self.redis_server.url,
                "DATABASE_URL": self.database_dsn,
                "ARQ_POLL_DELAY": str(poll_delay),
                "LOG_FILE": str(self.workdir / "log.txt"),
                "PICKUP_FILE": str(self.pickup_file()),
                "SMTP_HOST": "127.0.0.1",
                "SMTP_PORT": str(smtp_port or self.smtp_port),
            }
            argv = ["-m", "arq", "bench.baselines.arq_worker.WorkerSettings"]
            label = f"arq-worker-{self._worker_count}"
            self.workers.append(Proc(label, argv, env=env, workdir=self.workdir).start())
        deadline = time.monotonic() + 30
        while True:
            started = all("Starting worker" in w.output(100_000) for w in self.workers)
            if started and await self.redis.exists(self.health_key):
                break
            for worker in self.workers:
                if not worker.alive():
                    raise RuntimeError(f"{worker.label} exited:\n{worker.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError("ARQ workers did not start")
            await asyncio.sleep(0.05)
        return self.workers

    def stop_workers(self) -> None:
        """Stop every worker."""
        for worker in self.workers:
            worker.stop()
        self.workers = []

    async def reset(self) -> None:
        """Empty Redis between measures (the queue, results, keys): nothing else uses it."""
        await self.redis.flushdb()

    # --- Jobs ----------------------------------------------------------------------------------

    async def accept_timed(self, client: httpx.AsyncClient) -> str:
        """Queue one job that records its pickup latency; return its id."""
        response = await client.post(f"{self.base_url}/process/timed")
        response.raise_for_status()
        job_id: str = response.json()["job_id"]
        return job_id

    async def pickups_ms(self, job_ids: Sequence[str]) -> list[float]:
        """The pickup latencies the timed jobs recorded since the workers started (one per job)."""
        path = self.pickup_file()
        return [float(line) for line in path.read_text().split()] if path.exists() else []

    async def preload(self, kind: str, count: int, *, tag: str) -> list[str]:
        """Queue ``count`` requests' jobs (``process`` or ``signup``); return the job ids."""
        if kind == "process":
            answers = await _post_many(self.base_url, [("/process", None)] * count)
            return [a["job_id"] for a in answers]
        answers = await _post_many(self.base_url, signup_bodies(count, tag=tag))
        return [job_id for a in answers for job_id in a["job_ids"]]

    async def drained(self) -> bool:
        """True when the queue is empty (ARQ keeps a running job in it until it ends)."""
        return bool(await self.redis.zcard("arq:queue") == 0)

    async def timings(self, job_ids: Sequence[str]) -> list[Timing]:
        """Start and finish of each job, from ARQ's results (pickled, ARQ's default)."""
        timings = []
        for chunk in _chunks(job_ids, 1000):
            for raw in await self.redis.mget([result_key_prefix + job_id for job_id in chunk]):
                result = pickle.loads(raw)  # noqa: S301 (our own throwaway Redis)
                if not result["s"]:
                    raise RuntimeError(f"a plain ARQ job failed: {result['r']!r}")
                timings.append(Timing(started=result["st"] / 1000, finished=result["ft"] / 1000))
        return timings

    async def in_progress_ttl(self, job_id: str) -> float | None:
        """Seconds until ARQ's in-progress key of ``job_id`` expires; None when there is none."""
        ttl = await self.redis.pttl(in_progress_key_prefix + job_id)
        return None if ttl < 0 else ttl / 1000


class OurSystem:
    """Our stack: the gateway (ledger, then queue) and the jobs workers, every guarantee on."""

    name = "ours"

    def __init__(self, workdir: Path, *, smtp_port: int, lease_seconds: float | None = None) -> None:
        self.workdir = workdir / "ours"
        self.smtp_port = smtp_port
        self.lease_seconds = lease_seconds
        self.redis_server = RedisServer(self.workdir / "redis")
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.database_dsn = ""
        self.gateway: Proc
        self.workers: list[Proc] = []
        self.redis: Redis
        self.db: asyncpg.Pool
        self._worker_count = 0

    def env(self, *, smtp_port: int | None = None) -> dict[str, str]:
        """The environment of the gateway and the workers."""
        env = {
            "ENVIRONMENT": "test",
            "API_KEYS": "",  # no keys: the auth dependency is not installed, the middlewares are
            "DATABASE_URL": self.database_dsn,
            "REDIS_URL": self.redis_server.url,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp_port or self.smtp_port),
            "SMTP_TIMEOUT": "60",
            "LOG_FILE": str(self.workdir / "afterword.log"),
            "TEMP_DIR": str(self.workdir / "tmp"),
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.port),
        }
        if self.lease_seconds is not None:
            env["LEASE_SECONDS"] = str(self.lease_seconds)
        return env

    async def start(self) -> None:
        """Start Redis, create and migrate the database, start the gateway; undo it all if a step fails."""
        async with _stopped_on_failure(self):
            self.redis_server.start()
            self.database_dsn = await create_database("afterword_bench")
            self.redis = Redis.from_url(self.redis_server.url)
            self.db = await asyncpg.create_pool(self.database_dsn, min_size=1, max_size=2)
            self.gateway = Proc("gateway", ["-m", "services.gateway"], env=self.env(), workdir=self.workdir).start()
            await asyncio.to_thread(wait_http, f"{self.base_url}/healthz", processes=[self.gateway])

    async def stop(self) -> None:
        """Stop everything, drop the database; also after a start that failed part way."""
        self.stop_workers()
        if hasattr(self, "gateway"):
            self.gateway.stop()
        if hasattr(self, "redis"):
            await self.redis.aclose()
        if hasattr(self, "db"):
            await self.db.close()
        self.redis_server.stop()
        if self.database_dsn:
            await drop_database(self.database_dsn)

    async def start_workers(self, count: int, *, smtp_port: int | None = None) -> list[Proc]:
        """Start ``count`` jobs workers and wait until each one's heartbeat is in."""
        env = self.env(smtp_port=smtp_port)
        new = []
        for _ in range(count):
            self._worker_count += 1
            worker_env = {**env, "WORKER_METRICS_PORT": str(free_port())}
            label = f"worker-{self._worker_count}"
            new.append(Proc(label, ["-m", "services.jobs"], env=worker_env, workdir=self.workdir).start())
        self.workers.extend(new)
        pids = {w.pid for w in new}
        deadline = time.monotonic() + 30
        while True:
            alive = await live_workers(self.redis, stale_after_seconds=60)
            if pids <= {info["pid"] for info in alive}:
                return new
            for worker in new:
                if not worker.alive():
                    raise RuntimeError(f"{worker.label} exited:\n{worker.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError("jobs workers did not start")
            await asyncio.sleep(0.05)

    def stop_workers(self) -> None:
        """Stop every worker."""
        for worker in self.workers:
            worker.stop()
        self.workers = []

    # --- Jobs ----------------------------------------------------------------------------------

    async def accept_timed(self, client: httpx.AsyncClient) -> str:
        """Queue one ``write_log`` through POST /process; return its id."""
        response = await client.post(f"{self.base_url}/process")
        response.raise_for_status()
        job_id: str = response.json()["jobs"][0]["id"]
        return job_id

    async def accept_in_transaction(self, client: httpx.AsyncClient) -> str:
        """Queue one ``write_log`` in a transaction of our own (``afterword_enqueue``); its id (``client``: unused)."""
        async with self.db.acquire() as conn, conn.transaction():
            job_id: str = await conn.fetchval(
                "SELECT afterword_enqueue('write_log', '{\"message\": \"bench: enqueued in a transaction\"}')"
            )
        return job_id

    async def pickups_ms(self, job_ids: Sequence[str]) -> list[float]:
        """From acceptance (the ledger row's ``enqueued_at``, in a transaction before its commit) to the first
        attempt's start, in ms."""
        rows = await self.db.fetch(
            "SELECT extract(epoch FROM a.started_at - j.enqueued_at) * 1000 AS ms FROM jobs j "
            "JOIN job_attempts a ON a.job_id = j.id AND a.try = 1 WHERE j.id = ANY($1::text[])",
            list(job_ids),
        )
        return [float(row["ms"]) for row in rows]

    async def preload(self, kind: str, count: int, *, tag: str) -> list[str]:
        """Queue ``count`` requests' jobs (``process`` or ``signup``); return the job ids."""
        if kind == "process":
            answers = await _post_many(self.base_url, [("/process", None)] * count)
        else:
            answers = await _post_many(self.base_url, signup_bodies(count, tag=tag))
        return [job["id"] for a in answers for job in a["jobs"]]

    async def drained(self) -> bool:
        """True when no job of the ledger is left to run."""
        left = await self.db.fetchval(
            "SELECT count(*) FROM jobs WHERE status IN ('queued', 'deferred', 'in_progress', 'retrying')"
        )
        return bool(left == 0)

    async def timings(self, job_ids: Sequence[str]) -> list[Timing]:
        """Start and finish of each job's last attempt, from the ledger."""
        rows = await self.db.fetch(
            "SELECT j.status, a.started_at, a.finished_at FROM jobs j JOIN job_attempts a "
            "ON a.job_id = j.id AND a.try = j.tries WHERE j.id = ANY($1::text[])",
            list(job_ids),
        )
        failed = [row for row in rows if row["status"] != "succeeded"]
        if failed:
            raise RuntimeError(f"{len(failed)} of our jobs did not succeed")
        return [Timing(started=_epoch(row["started_at"]), finished=_epoch(row["finished_at"])) for row in rows]

    async def attempt(self, job_id: str, try_: int) -> tuple[str, float] | None:
        """The worker and start time of attempt ``try_`` of a job, once it started."""
        row = await self.db.fetchrow(
            "SELECT worker, started_at FROM job_attempts WHERE job_id = $1 AND try = $2", job_id, try_
        )
        return None if row is None else (row["worker"], _epoch(row["started_at"]))


def _epoch(value: datetime) -> float:
    return value.timestamp()


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
