"""Appends one JSON line per message to the configured log file.

Each line is written with a single ``write`` on a file opened with ``O_APPEND`` while holding an
exclusive ``flock``, so lines from concurrent workers (threads or processes) never interleave.
The line is JSON with every non-ASCII and control character escaped: a message holding CR, LF,
U+2028 or an ANSI escape cannot start a second line.

A re-run of a job (its worker died between writing the line and recording that it did) first
looks for the job's line in the end of the file, under the same lock, and does not write twice.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from datetime import UTC, datetime
from pathlib import Path

RERUN_SCAN_BYTES = 4 * 1024 * 1024
"""How far back from the end of the file a re-run looks for its own line."""


class LogWriter:
    """Writes the lines of ``write_log`` jobs to one file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._directory_made = False

    def __repr__(self) -> str:
        return f"LogWriter({str(self.path)!r})"

    @staticmethod
    def format_line(*, job_id: str, message: str, at: datetime) -> bytes:
        """The exact bytes written for one message: a JSON object and one newline."""
        record = {"time": at.isoformat(timespec="microseconds"), "job_id": job_id, "message": message}
        return (json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")

    async def write(self, *, job_id: str, message: str, rerun: bool = False) -> tuple[str, bool]:
        """Append the line for ``message``; return it (without the newline) and whether it was written now.

        With ``rerun`` a line of this job already near the end of the file is returned instead.
        """
        line = self.format_line(job_id=job_id, message=message, at=datetime.now(UTC))
        if not rerun and self._append_at_once(line):
            return line.decode("ascii").rstrip("\n"), True
        marker = b'"job_id":' + json.dumps(job_id).encode("ascii") + b","
        written, existing = await asyncio.to_thread(self._append, line, marker if rerun else None)
        return (written or existing).decode("ascii").rstrip("\n"), bool(written)

    def _append_at_once(self, line: bytes) -> bool:
        """Append ``line`` without leaving the event loop if the lock is free; False if it is not.

        A first run appends one short line: a handful of system calls, cheaper than the hand-over
        to a thread. Waiting for the lock, and a re-run's scan of the file, go to a thread.
        """
        self._make_directory()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # another writer holds it: wait for it in a thread
            _write_all(fd, line)
        finally:
            os.close(fd)  # closing releases the lock
        return True

    def _make_directory(self) -> None:
        if not self._directory_made:  # once per writer, not once per line
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._directory_made = True

    def _append(self, line: bytes, marker: bytes | None) -> tuple[bytes, bytes]:
        self._make_directory()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if marker is not None:
                existing = _find_line(fd, marker)
                if existing:
                    return b"", existing
            _write_all(fd, line)
        finally:
            os.close(fd)  # closing releases the lock
        return line, b""


def _write_all(fd: int, line: bytes) -> None:
    view = memoryview(line)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _find_line(fd: int, marker: bytes) -> bytes:
    size = os.fstat(fd).st_size
    start = max(0, size - RERUN_SCAN_BYTES)
    tail = os.pread(fd, size - start, start)
    at = tail.rfind(marker)
    if at < 0:
        return b""
    begin = tail.rfind(b"\n", 0, at) + 1
    end = tail.find(b"\n", at)
    return tail[begin : end + 1 if end >= 0 else len(tail)]
