"""A gateway on a database and Redis of its own, with no worker: jobs it accepts just wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from tests.support.database import create_database, drop_database
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.services import ServiceProcess


async def wait_until_healthy(base_url: str, process: ServiceProcess, *, within: float = 30) -> None:
    """Poll ``/healthz`` until it answers 200; fail with the process's output if it never does."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as http:
        while time.monotonic() < deadline:
            if process.process is not None and process.process.poll() is not None:
                raise RuntimeError(f"{process.label} exited early:\n{process.output()}")
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{process.label} not healthy after {within}s:\n{process.output()[-3000:]}")


@asynccontextmanager
async def lone_gateway(
    workdir: Path,
    *,
    api_keys: str,
    label: str,
    database_dsn: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[str, ServiceProcess]]:
    """Start the gateway with ``API_KEYS=api_keys``; yield its URL and process; remove it all after.

    It gets a database of its own, or ``database_dsn`` (migrated; left for the caller to drop),
    and ``extra_env`` on top of its environment.
    """
    dsn = database_dsn or await create_database()
    redis = RedisServer(workdir / "redis")
    port = free_port()
    env = {
        "ENVIRONMENT": "test",
        "DATABASE_URL": dsn,
        "REDIS_URL": redis.url,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "LOG_FILE": str(workdir / "afterword.log"),
        "TEMP_DIR": str(workdir / "tmp"),
        "API_KEYS": api_keys,
        **(extra_env or {}),
    }
    gateway = ServiceProcess("services.gateway", env=env, workdir=workdir, label=label)
    try:
        redis.start()
        gateway.start()
        base_url = f"http://127.0.0.1:{port}"
        await wait_until_healthy(base_url, gateway)
        yield base_url, gateway
    finally:
        gateway.stop()
        redis.stop()
        if database_dsn is None:
            await drop_database(dsn)
