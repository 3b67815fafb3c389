"""A private Redis for development: ``redis-server`` on the loopback, its files under ``var/redis``.

Redis keeps its data in ``dump.rdb`` there (its built-in save points, and a save when it is
stopped), so the queue outlives a restart of ``make run``.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path
from urllib.parse import quote

from services.devstack.preflight import redis_answers
from services.devstack.processes import (
    DevServerError,
    newest_directory,
    on_path,
    start_owned,
    stop_leftover,
    stop_owned,
    wait_until_ready,
)

SEARCHED = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/bin", "/usr/local/bin", "/opt/homebrew/opt/redis*/bin")
"""Where ``redis-server`` is looked for when it is not on the PATH."""

INSTALL = (
    "install Redis (Debian/Ubuntu: `sudo apt-get install redis-server`; Fedora: `sudo dnf install redis`; "
    "macOS: `brew install redis`)"
)


def binary() -> Path:
    """The ``redis-server`` executable (not through its link: Debian's is one binary that reads its name)."""
    found = on_path("redis-server")
    if found is not None:
        return found
    directory = newest_directory(SEARCHED, holding=("redis-server",))
    if directory is None:
        raise DevServerError(f"no redis-server on the PATH or in {', '.join(SEARCHED)}: {INSTALL}")
    return directory / "redis-server"


class PrivateRedis:
    """``redis-server`` with its files in ``directory`` (``dump.rdb``, ``redis.pid``, ``server.log``)."""

    kind = "redis"

    def __init__(self, directory: Path, *, host: str, port: int, password: str | None = None) -> None:
        self.directory = directory
        self.log = directory / "server.log"
        self.host = host
        self.port = port
        self.password = password
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def start(self) -> None:
        """Start the server; return once it answers PING."""
        executable = binary()
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            str(executable),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.directory.resolve()),
            "--pidfile", str(self.directory.resolve() / "redis.pid"),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self._process = start_owned(args, log=self.log, parent_death_signal=signal.SIGTERM)
        wait_until_ready(self._process, self._answers, what=f"Redis ({executable})", log=self.log)

    def stop(self) -> None:
        """Stop the server (it saves ``dump.rdb``; SIGKILL after 30 s). Safe to call twice."""
        if self._process is not None:
            stop_owned(self._process, first=signal.SIGTERM, grace_seconds=30)
            self._process = None

    @staticmethod
    def stop_leftover(directory: Path) -> int | None:
        """Stop a server of ``directory`` that an earlier ``make run`` left running; its pid."""
        return stop_leftover(directory, directory / "redis.pid", command="redis", sig=signal.SIGTERM)

    def _answers(self) -> bool:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        try:
            asyncio.run(redis_answers(f"redis://{auth}{host}:{self.port}/0"))
        except Exception:
            return False
        return True
