"""The processes of a bench run: servers under test, throwaway Redis servers and databases.

Everything the bench starts lives in its own work directory and on free ports, and is stopped
(databases dropped) at the end, so a run never disturbs anything else on the machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from tests.support.database import create_database, drop_database
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.services import REPO, ServiceProcess

__all__ = ["REPO", "Proc", "RedisServer", "create_database", "drop_database", "free_port", "wait_http"]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Proc(ServiceProcess):
    """One child process of the bench (``python <argv>``) with its output in ``<workdir>/<label>.log``.

    The tests' :class:`~tests.support.services.ServiceProcess`, plus what the bench reads of it:
    whether it still runs, its CPU time and its peak memory.
    """

    def __init__(self, label: str, argv: Sequence[str], *, env: Mapping[str, str], workdir: Path) -> None:
        # Not in the repo: a developer's .env must not configure what is measured.
        super().__init__(label, env=env, workdir=workdir, label=label, argv=argv)

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

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` (a worker's grace is 20 s)."""
        super().stop(timeout)

    def output(self, tail: int = 3000) -> str:
        """The end of what the process printed."""
        return super().output()[-tail:]


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
