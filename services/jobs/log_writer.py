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
        marker = b'"job_id":' + json.dumps(job_id).encode("ascii") + b","
        written, existing = await asyncio.to_thread(self._append, line, marker if rerun else None)
        return (written or existing).decode("ascii").rstrip("\n"), bool(written)

    def _append(self, line: bytes, marker: bytes | None) -> tuple[bytes, bytes]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if marker is not None:
                existing = _find_line(fd, marker)
                if existing:
                    return b"", existing
            view = memoryview(line)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        finally:
            os.close(fd)  # closing releases the lock
        return line, b""


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
