"""The processes of a bench run: servers under test, throwaway Redis servers and databases.

Everything the bench starts lives in its own work directory and on free ports, and is stopped
(databases dropped) at the end, so a run never disturbs anything else on the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from tests.support.database import create_database, drop_database
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer

__all__ = ["REPO", "Proc", "RedisServer", "create_database", "drop_database", "free_port", "wait_http"]

REPO = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Proc:
    """One child process with its output in ``<workdir>/<label>.log``."""

    def __init__(self, label: str, argv: Sequence[str], *, env: Mapping[str, str], workdir: Path) -> None:
        self.label = label
        self.argv = [sys.executable, *argv]
        self.env = {**os.environ, **env, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        self.workdir = workdir
        self.log_path = workdir / f"{label}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        """Start the process; return self."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # Not in the repo: a developer's .env must not configure what is measured.
            self.process = subprocess.Popen(self.argv, env=self.env, cwd=self.workdir, stdout=log, stderr=log)
        return self

    @property
    def pid(self) -> int:
        """The running process's id."""
        assert self.process is not None, f"{self.label} is not running"
        return self.process.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self) -> float:
        """User plus system CPU time used so far (``/proc/<pid>/stat``)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def peak_rss_mib(self) -> float:
        """The peak resident set size so far (``VmHWM`` of ``/proc/<pid>/status``), in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmHWM for {self.label}")

    def kill(self) -> None:
        """SIGKILL: no clean-up at all."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def output(self, tail: int = 3000) -> str:
        """The end of what the process printed."""
        return self.log_path.read_text(errors="replace")[-tail:] if self.log_path.exists() else ""


def wait_http(url: str, *, processes: Sequence[Proc] = (), timeout: float = 30) -> None:
    """Poll ``url`` until it answers 200; fail with the processes' output if it never does."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for process in processes:
            if process.process is not None and not process.alive():
                raise RuntimeError(f"{process.label} exited early:\n{process.output()}")
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.05)
    outputs = "\n".join(f"--- {p.label}\n{p.output()}" for p in processes)
    raise RuntimeError(f"{url} not ready after {timeout}s: {last}\n{outputs}")
