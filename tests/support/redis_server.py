"""A throwaway redis-server on a free port, which tests can kill and restart."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool

from services.core.serialization import deserialize, serialize
from tests.support.ports import free_port


class RedisServer:
    """One ``redis-server`` process with its own directory; AOF persistence optional."""

    def __init__(self, directory: Path, *, appendonly: bool = False, port: int | None = None) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``redis://`` URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise
                time.sleep(0.05)
        finally:
            client.close()

    def arq_client(self, queue_name: str) -> ArqRedis:
        """An ARQ client on this server, speaking the services' JSON serialization."""
        return ArqRedis(
            ConnectionPool.from_url(self.url),
            job_serializer=serialize,
            job_deserializer=deserialize,
            default_queue_name=queue_name,
        )

    @asynccontextmanager
    async def fresh_arq_client(self, queue_name: str) -> AsyncIterator[ArqRedis]:
        """:meth:`arq_client` on an emptied server, closed with its connection pool afterwards."""
        client = self.arq_client(queue_name)
        await client.flushall()
        try:
            yield client
        finally:
            await client.aclose(close_connection_pool=True)

    def kill(self) -> None:
        """SIGKILL the server (what is not persisted is lost)."""
        self._stop(signal.SIGKILL)

    def stop(self) -> None:
        """Stop the server cleanly."""
        self._stop(signal.SIGTERM)

    def _stop(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)
        self.process = None
