"""A bench system whose start fails part way undoes what it started: no Redis server, no database left behind."""

from __future__ import annotations

import socket
from pathlib import Path

import asyncpg
import pytest

from bench.processes import Proc
from bench.systems import ArqSystem
from tests.support.database import ADMIN_DSN
from tests.support.ports import free_port


async def test_a_system_whose_gateway_never_starts_leaves_nothing_behind(tmp_path: Path) -> None:
    arq = ArqSystem(tmp_path, smtp_port=free_port())
    # The app exits at once, as the plain ARQ app did when its port was taken: after Redis and the
    # database are up.
    arq.gateway = Proc("arq-app", ["-c", "raise SystemExit(3)"], env={}, workdir=arq.workdir)

    with pytest.raises(RuntimeError, match="exited early"):
        await arq.start()
    database = arq.database_dsn.rpartition("/")[2]
    redis_port = arq.redis_server.port

    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        assert database.startswith("afterword_bench_arq")
        assert await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", database) == 0
    finally:
        await admin.close()
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", redis_port))
