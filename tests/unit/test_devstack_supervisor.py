"""Under ``make run``, the output names the process that stopped first and why: an exit code, a signal, Ctrl-C.

honcho runs a small Procfile for real, in a process of its own (it takes over SIGINT and
SIGTERM), through :func:`services.devstack.supervisor.run_procfile`.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
from honcho.printer import Message, Printer  # type: ignore[import-untyped]

from services.devstack.supervisor import StopReasonPrinter, describe_exit, exit_status

ROOT = Path(__file__).resolve().parents[2]
RUNNER = (
    "import os, sys; from pathlib import Path; from services.devstack.supervisor import run_procfile; "
    "sys.exit(run_procfile(Path(sys.argv[1]), dict(os.environ)))"
)


class Run:
    """A running ``run_procfile``: its process and the lines it printed so far."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []

    def started(self, *names: str) -> dict[str, int]:
        """Read lines until honcho said each of ``names`` started (in any order); their pids."""
        assert self.process.stdout is not None
        pids: dict[str, int] = {}
        for line in self.process.stdout:
            self.lines.append(_text(line))
            if match := re.fullmatch(r"system +\| (\S+) started \(pid=(\d+)\)", self.lines[-1]):
                pids[match[1]] = int(match[2])
            if set(names) <= set(pids):
                return pids
        raise AssertionError(f"output ended before {names} all started: {self.lines}")

    def finish(self) -> tuple[int, list[str]]:
        """The exit status and every line printed."""
        out, _ = self.process.communicate(timeout=30)
        self.lines += [_text(line) for line in out.splitlines()]
        return self.process.returncode, self.lines


def _text(line: str) -> str:
    return re.sub(r"^\d\d:\d\d:\d\d ", "", line.rstrip("\n"))


@contextmanager
def running(tmp_path: Path, procfile: str) -> Iterator[Run]:
    """``run_procfile`` on ``procfile`` in a process of its own."""
    path = tmp_path / "Procfile"
    path.write_text(procfile)
    with subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            yield Run(process)
        finally:
            process.kill()


def test_a_process_that_exits_with_a_code_is_named_with_it(tmp_path: Path) -> None:
    with running(tmp_path, "idle: exec sleep 30\ncrash: sleep 0.5; exit 3\n") as run:
        status, lines = run.finish()
    assert status == 3
    assert "system | crash stopped on its own: exited with code 3; stopping the others" in lines
    assert "system | idle stopped on the SIGTERM make run sent it" in lines
    assert lines[-1] == "system | make run stopped because crash stopped on its own: exited with code 3; exit status 3"


def test_a_killed_process_is_named_with_its_signal(tmp_path: Path) -> None:
    with running(tmp_path, "victim: exec sleep 30\nidle: exec sleep 30\n") as run:
        os.kill(run.started("victim", "idle")["victim"], signal.SIGKILL)
        status, lines = run.finish()
    assert status == 128 + signal.SIGKILL
    assert "system | victim stopped on its own: killed by signal SIGKILL (9); stopping the others" in lines
    assert "system | idle stopped on the SIGTERM make run sent it" in lines
    assert lines[-1] == (
        "system | make run stopped because victim stopped on its own: killed by signal SIGKILL (9); exit status 137"
    )


def test_ctrl_c_is_named_as_the_cause(tmp_path: Path) -> None:
    with running(tmp_path, "one: exec sleep 30\ntwo: exec sleep 30\n") as run:
        run.started("one", "two")
        run.process.send_signal(signal.SIGINT)
        status, lines = run.finish()
    assert status == 130
    assert "system | SIGINT received (Ctrl-C): stopping every process" in lines
    assert "system | one stopped on the SIGTERM make run sent it" in lines
    assert lines[-1] == "system | make run stopped on SIGINT (Ctrl-C); exit status 130"


@pytest.mark.parametrize(
    ("returncode", "described", "status"),
    [
        (0, "exited with code 0", 0),
        (3, "exited with code 3", 3),
        (-9, "killed by signal SIGKILL (9)", 137),
        (-15, "killed by signal SIGTERM (15)", 143),
        (137, "exited with code 137 (128 + 9: killed by SIGKILL)", 137),
        (200, "exited with code 200", 200),
    ],
)
def test_exits_are_described_in_words(returncode: int, described: str, status: int) -> None:
    assert describe_exit(returncode) == described
    assert exit_status(returncode) == status


def test_lines_of_other_shapes_pass_unchanged() -> None:
    output = io.StringIO()
    printer = StopReasonPrinter(Printer(output, colour=False))
    printer.width = 6
    now = datetime(2026, 1, 2, 3, 4, 5)
    for name, data in [("system", "web started (pid=12)\n"), ("web", "web stopped (rc=3)\n")]:
        printer.write(Message(type="line", data=data, time=now, name=name, colour=None))
    assert output.getvalue() == "03:04:05 system | web started (pid=12)\n03:04:05 web    | web stopped (rc=3)\n"
    assert printer.first_stop is None
