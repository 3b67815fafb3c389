"""The gateway and the jobs worker run as real processes, the way `make run` starts them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

import httpx

REPO = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """One ``python -m <module>`` process (``python <argv>`` when ``argv`` is given) with its output in a log file."""

    def __init__(
        self,
        module: str,
        *,
        env: Mapping[str, str],
        workdir: Path,
        label: str | None = None,
        argv: Sequence[str] | None = None,
    ) -> None:
        self.module = module
        self.argv = [sys.executable, *(argv if argv is not None else ["-m", module])]
        self.label = label or module.rpartition(".")[2]
        self.env = {**os.environ, **env, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        # Run outside the repo so a developer's .env never leaks into the tests.
        self.workdir = workdir
        self.log_path = workdir / f"{self.label}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        """Start the process (it keeps running until stopped); return it."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(self.argv, env=self.env, cwd=self.workdir, stdout=log, stderr=log)
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        """The running process's id."""
        assert self.process is not None, f"{self.label} is not running"
        return self.process.pid

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process."""
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; return its status."""
        assert self.process is not None
        code = self.process.wait(timeout=timeout)
        self.process = None
        return code

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout``."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: no clean-up at all."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=5)
            self.process = None

    def output(self) -> str:
        """What the process printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_until_ready(base_url: str, *, timeout: float = 30, processes: tuple[ServiceProcess, ...] = ()) -> None:
    """Poll ``/readyz`` until it answers 200; fail with the processes' output if it never does."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for process in processes:
            if process.process is not None and process.process.poll() is not None:
                raise RuntimeError(f"{process.label} exited early:\n{process.output()}")
        try:
            response = httpx.get(f"{base_url}/readyz", timeout=2)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    outputs = "\n".join(f"--- {p.label}\n{p.output()[-3000:]}" for p in processes)
    raise RuntimeError(f"stack not ready after {timeout}s: {last}\n{outputs}")
