"""``Procfile.dev`` under honcho, saying which process stopped first and why.

honcho stops every process once one stops, and prints ``jobs.1 stopped (rc=-9)`` for each: the
one that stopped on its own and the ones it then stopped look alike, and a signal is a negative
number. :class:`StopReasonPrinter` sits between honcho's Manager and its Printer and rewrites
those lines: ``jobs stopped on its own: killed by signal SIGKILL (9); stopping the others``, then
``gateway stopped on the SIGTERM make run sent it``. :func:`run_procfile`
ends with one line that names the cause, and returns an exit status a shell understands
(128 + the signal's number for a process killed by a signal).

The rewriting reads honcho's own system lines (three shapes, pinned by
``tests/unit/test_devstack_supervisor.py``); a line of any other shape is printed as honcho
wrote it.
"""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from honcho.environ import parse_procfile  # type: ignore[import-untyped]
from honcho.manager import SYSTEM_PRINTER_NAME, Manager  # type: ignore[import-untyped]
from honcho.printer import Message, Printer  # type: ignore[import-untyped]

_STOPPED = re.compile(r"(?P<name>\S+) stopped \(rc=(?P<rc>-?\d+)\)")
_SENDING = re.compile(r"sending (?P<signal>SIG[A-Z]+) to (?P<name>\S+) \(pid \d+\)")
_RECEIVED = re.compile(r"(?P<signal>SIG[A-Z]+) received")


def describe_exit(returncode: int) -> str:
    """How a process ended, from its return code as ``subprocess`` reports it (negative: a signal)."""
    if returncode < 0:
        return f"killed by signal {_signal_name(-returncode)} ({-returncode})"
    if returncode > 128 and _signal_name(returncode - 128, default="") != "":
        # A shell whose command was killed reports 128 + the signal's number.
        return f"exited with code {returncode} (128 + {returncode - 128}: killed by {_signal_name(returncode - 128)})"
    return f"exited with code {returncode}"


def _signal_name(number: int, default: str | None = None) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}" if default is None else default


def exit_status(returncode: int | None) -> int:
    """The exit status for a shell: ``returncode``, or 128 + the signal's number for a negative one."""
    if returncode is None:
        return 0
    return 128 - returncode if returncode < 0 else returncode


class StopReasonPrinter:
    """A honcho printer that names why each process stopped, and remembers which stopped first.

    It wraps honcho's :class:`Printer` (which it hands every line to) rather than subclassing it.
    """

    def __init__(self, printer: Any) -> None:
        self._printer = printer
        self.first_stop: tuple[str, int] | None = None
        """The process that stopped on its own before anything else ended, and its return code."""
        self.received: str | None = None
        """The signal (SIGINT: Ctrl-C) that told make run to stop, if one did."""
        self._sent: dict[str, str] = {}

    @property
    def width(self) -> int:
        """The width of the name column (honcho's Manager sets it)."""
        return int(self._printer.width)

    @width.setter
    def width(self, value: int) -> None:
        self._printer.width = value

    def write(self, message: Any) -> None:
        """Print ``message``, its system lines about stops reworded."""
        if message.type == "line" and message.name == SYSTEM_PRINTER_NAME and isinstance(message.data, str):
            line = message.data.rstrip("\n")
            reworded = self._reworded(line)
            if reworded != line:
                message = message._replace(data=reworded + "\n")
        self._printer.write(message)

    def system(self, text: str) -> None:
        """Print ``text`` as a line of honcho's ``system``."""
        self._printer.write(
            Message(type="line", data=text + "\n", time=datetime.now(), name=SYSTEM_PRINTER_NAME, colour=None)
        )

    def _reworded(self, line: str) -> str:
        if match := _RECEIVED.fullmatch(line):
            self.received = match["signal"]
            hint = " (Ctrl-C)" if self.received == "SIGINT" else ""
            return f"{self.received} received{hint}: stopping every process"
        if match := _SENDING.fullmatch(line):
            self._sent[match["name"]] = match["signal"]
            return line
        if match := _STOPPED.fullmatch(line):
            name, returncode = match["name"], int(match["rc"])
            how = describe_exit(returncode)
            if self.first_stop is None and self.received is None and not self._sent:
                self.first_stop = (name, returncode)
                return f"{name} stopped on its own: {how}; stopping the others"
            sent = self._sent.get(name)
            if sent is not None and returncode == -signal.Signals[sent]:
                return f"{name} stopped on the {sent} make run sent it"
            if sent is not None:
                return f"{name} stopped: {how}, after make run sent it {sent}"
            return f"{name} stopped: {how}"
        return line

    def cause(self) -> str:
        """One sentence naming why everything stopped."""
        if self.received is not None:
            return f"make run stopped on {self.received}" + (" (Ctrl-C)" if self.received == "SIGINT" else "")
        if self.first_stop is not None:
            name, returncode = self.first_stop
            return f"make run stopped because {name} stopped on its own: {describe_exit(returncode)}"
        return "make run stopped"


def run_procfile(procfile: Path, env: Mapping[str, str], *, output: TextIO = sys.stdout) -> int:
    """Run every process of ``procfile`` with ``env`` until one stops (or SIGINT/SIGTERM); the exit status.

    honcho installs its SIGINT and SIGTERM handlers for the run: call it from the main thread.
    """
    processes = parse_procfile(procfile.read_text("utf-8")).processes
    printer = StopReasonPrinter(Printer(output))
    manager = Manager(printer)
    for name, command in processes.items():
        manager.add_process(name, command, env=dict(env))
    manager.loop()
    status = exit_status(manager.returncode)
    printer.system(f"{printer.cause()}; exit status {status}")
    return status
