"""A throwaway PostgreSQL server (initdb + pg_ctl) on a free port, which tests can stop and start.

PostgreSQL refuses to run as root; when the tests run as root (CI does) the server runs as the
``postgres`` system user, which Debian's packages create.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.ports import free_port


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"{name} (PostgreSQL server binaries) is not installed")
    return found


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, trust auth, listening on 127.0.0.1 only."""

    def __init__(self) -> None:
        self.port = free_port()
        # Outside pytest's 0700 temp tree, so that the postgres user can reach it.
        self.directory = Path(tempfile.mkdtemp(prefix="afterword-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)

    def dsn(self, database: str = "postgres") -> str:
        """A DSN for ``database`` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        subprocess.run(args, check=True, user=self._user, capture_output=True, timeout=60)

    def init(self) -> None:
        """Create the cluster (once)."""
        self._run(_binary("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            _binary("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "-t", "30", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` is a crash: no clean shutdown)."""
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def is_running(self) -> bool:
        """True while the server's postmaster runs."""
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        """Stop the server if it runs, and delete its files."""
        if self.is_running():
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)
