"""The ``write_report`` job: a CSV file in ``REPORTS_DIR``, the example job of ``docs/jobs.md``.

A plain ``def``: it writes a file, blocking work that the worker runs in a thread, so that the
other jobs go on meanwhile. From that thread, the worker's async resources (the lease keeper,
the attempt book) are reached through ``anyio.from_thread``, which runs a call on the worker's
event loop and waits for it.

The file is named after the job id, and written whole to a temporary file first, then moved in
place (``os.replace``): a run repeated after a crash writes the same file again, never a second
one, and nobody ever reads half a report.
"""

from __future__ import annotations

import csv
import functools
import os
import re
import tempfile
import unicodedata
from pathlib import Path

from anyio import from_thread

from services.contract import JobName, WriteReport
from services.jobs.context import JobContext
from services.jobs.execution import JobResult
from services.jobs.loading import implements

MAX_CELLS = 10_000
"""The most values (rows times columns) a report may hold; its payload alone allows more."""

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


class ReportTooLarge(OSError):
    """The report holds more than :data:`MAX_CELLS` values.

    An ``OSError``, as a file too large to write is (``EFBIG``); ``OSError`` is transient by
    default (a full disk may pass), so the job's definition declares this one permanent: a retry
    would only refuse the same report again.
    """


def slug(title: str) -> str:
    """``title`` as a file name's part: ASCII letters and digits in lower case, joined by ``-``.

    Never a path (no ``/``, no ``..``), at most 60 characters; ``report`` when nothing is left.
    """
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    return _NOT_SLUG.sub("-", ascii_title.lower()).strip("-")[:60].rstrip("-") or "report"


@implements(JobName.write_report)
def write_report(ctx: JobContext, payload: WriteReport) -> JobResult:
    """Write ``<REPORTS_DIR>/<job id>-<slug of the title>.csv``: the columns, then the rows."""
    job_id = ctx["job_id"]
    cells = len(payload.rows) * len(payload.columns)
    if cells > MAX_CELLS:
        raise ReportTooLarge(f"{cells} values: a report holds at most {MAX_CELLS}")
    directory = ctx["settings"].reports_dir
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{job_id}-{slug(payload.title)}.csv"
    written = _write_csv(path, payload)
    try:
        from_thread.run(ctx["leases"].check, job_id)  # still ours? Else another worker runs the job now
        os.replace(written, path)  # the effect: the whole report appears at once
    except BaseException:
        written.unlink(missing_ok=True)
        raise
    detail = {"file": str(path), "rows": len(payload.rows)}
    note = functools.partial(ctx["attempts"].note_effect, job_id=job_id, effect="report", detail=detail)
    from_thread.run_sync(note)  # recorded with the attempt's end
    return detail


def _write_csv(path: Path, payload: WriteReport) -> Path:
    """Write the report to a new temporary file beside ``path`` and return that file's path."""
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed below, kept on success)
        "w", encoding="utf-8", newline="", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            writer = csv.writer(handle)
            writer.writerow(payload.columns)
            writer.writerows(payload.rows)
            handle.flush()
            os.fsync(handle.fileno())  # on disk before it takes the report's name
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return Path(handle.name)
