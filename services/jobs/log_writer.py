"""Appends one JSON line per message to the configured log file.

Each line is written with a single ``write`` on a file opened with ``O_APPEND`` while holding an
exclusive ``flock``, so lines from concurrent workers (threads or processes) never interleave.
The line is JSON with every non-ASCII and control character escaped: a message holding CR, LF,
U+2028 or an ANSI escape cannot start a second line.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from datetime import UTC, datetime
from pathlib import Path


class LogWriter:
    """Writes the lines of ``write_log`` jobs to one file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"LogWriter({str(self.path)!r})"

    @staticmethod
    def format_line(*, job_id: str, message: str, at: datetime) -> bytes:
        """The exact bytes written for one message: a JSON object and one newline."""
        record = {"time": at.isoformat(timespec="microseconds"), "job_id": job_id, "message": message}
        return (json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")

    async def write(self, *, job_id: str, message: str) -> str:
        """Append the line for ``message`` and return it (without the newline)."""
        line = self.format_line(job_id=job_id, message=message, at=datetime.now(UTC))
        await asyncio.to_thread(self._append, line)
        return line.decode("ascii").rstrip("\n")

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(line)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        finally:
            os.close(fd)  # closing releases the lock
