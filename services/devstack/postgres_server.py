"""A private PostgreSQL for development: one cluster under ``var/postgres``, trust auth, loopback only.

The cluster is made once with ``initdb`` and kept: a later ``make run`` starts the same one, with
its data. The server is ``postgres`` itself in the foreground, as a child of ``make run``, rather
than daemonized by ``pg_ctl``: its owner stops it, and on Linux the kernel stops it when its owner
dies (:mod:`.processes`). PostgreSQL refuses to run as root; under root the cluster belongs to
the ``postgres`` system user, which the distributions' packages create.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import signal
import subprocess
from pathlib import Path

from services.devstack.preflight import postgres_answers
from services.devstack.processes import (
    DevServerError,
    newest_directory,
    on_path,
    start_owned,
    stop_leftover,
    stop_owned,
    wait_until_ready,
)

SEARCHED = (
    "/usr/lib/postgresql/*/bin",  # Debian, Ubuntu
    "/usr/pgsql-*/bin",  # Fedora, RHEL (PGDG)
    "/opt/homebrew/opt/postgresql*/bin",  # Homebrew on Apple silicon
    "/usr/local/opt/postgresql*/bin",  # Homebrew on Intel
)
"""Where the server binaries are looked for when ``postgres`` is not on the PATH."""

INSTALL = (
    "install the PostgreSQL server (Debian/Ubuntu: `sudo apt-get install postgresql`; "
    "Fedora: `sudo dnf install postgresql-server`; macOS: `brew install postgresql@17`)"
)
_BINARIES = ("initdb", "postgres")


def binaries() -> Path:
    """The directory holding ``initdb`` and ``postgres`` of one PostgreSQL version."""
    found = on_path("postgres")
    if found is not None:
        found = found.resolve()  # through a link on the PATH, to the directory of its initdb
        if os.access(found.parent / "initdb", os.X_OK):
            return found.parent
    directory = newest_directory(SEARCHED, holding=_BINARIES)
    if directory is None:
        raise DevServerError(
            f"no PostgreSQL server binaries (initdb and postgres) on the PATH or in {', '.join(SEARCHED)}: {INSTALL}"
        )
    return directory


class PrivatePostgres:
    """The development cluster in ``directory`` (``data/``, ``server.log``), served on ``host:port``."""

    kind = "postgres"

    def __init__(self, directory: Path, *, host: str, port: int, role: str) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.log = directory / "server.log"
        self.host = host
        self.port = port
        self.role = role
        self._process: subprocess.Popen[bytes] | None = None
        self._system_user = "postgres" if os.geteuid() == 0 else None

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def start(self) -> None:
        """Make the cluster if there is none, start the server, return once it lets ``role`` in."""
        directory = binaries()
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._system_user is not None:
            entry = _system_user_entry(self._system_user)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        if (self.data / "PG_VERSION").is_file():
            _same_major_version(self.data, directory / "postgres")
        else:
            self._initdb(directory / "initdb")
        args = [
            str(directory / "postgres"),
            "-D", str(self.data),
            "-p", str(self.port),
            "-c", f"listen_addresses={self.host}",
            "-c", "unix_socket_directories=",  # TCP only: no socket file in a system directory
        ]  # fmt: skip
        # SIGINT is Postgres' fast shutdown: sessions still open are ended rather than waited for.
        self._process = start_owned(args, log=self.log, user=self._system_user, parent_death_signal=signal.SIGINT)
        wait_until_ready(self._process, self._answers, what=f"PostgreSQL ({args[0]})", log=self.log)

    def stop(self) -> None:
        """Stop the server (a fast shutdown; SIGKILL after 30 s); the cluster stays. Safe to call twice."""
        if self._process is not None:
            stop_owned(self._process, first=signal.SIGINT, grace_seconds=30)
            self._process = None

    @staticmethod
    def stop_leftover(directory: Path) -> int | None:
        """Stop a server of the cluster in ``directory`` that an earlier ``make run`` left running; its pid."""
        return stop_leftover(directory, directory / "data" / "postmaster.pid", command="postgres", sig=signal.SIGINT)

    def _initdb(self, initdb: Path) -> None:
        args = [str(initdb), "-D", str(self.data), "-U", self.role, "-A", "trust", "-E", "UTF8", "--no-locale"]
        entry = None if self._system_user is None else _system_user_entry(self._system_user)
        result = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            user=None if entry is None else entry.pw_uid,
            group=None if entry is None else entry.pw_gid,
            extra_groups=None if entry is None else [],
        )
        if result.returncode != 0:
            raise DevServerError(f"initdb failed in {self.data}:\n{result.stderr.strip() or result.stdout.strip()}")

    def _answers(self) -> bool:
        dsn = f"postgresql://{self.role}@{self.host if ':' not in self.host else f'[{self.host}]'}:{self.port}/postgres"
        try:
            asyncio.run(postgres_answers(dsn))
        except Exception:
            return False
        return True


def _system_user_entry(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise DevServerError(
            f"PostgreSQL will not run as root and there is no `{name}` user to run it as: "
            "run make run as an ordinary user"
        ) from None


def _same_major_version(data: Path, postgres: Path) -> None:
    """DevServerError when the cluster in ``data`` was made by another major version than ``postgres``."""
    made_by = (data / "PG_VERSION").read_text().strip()
    reported = subprocess.run([str(postgres), "--version"], capture_output=True, text=True, check=False).stdout
    found = re.search(r"\d+", reported)
    if found is None or found.group() != made_by:
        raise DevServerError(
            f"{data} was made by PostgreSQL {made_by}, and {postgres} is {reported.strip() or 'another version'}: "
            f"install PostgreSQL {made_by}, or remove {data.parent} (its data is lost) for a new cluster"
        )
