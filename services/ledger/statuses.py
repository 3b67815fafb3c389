"""Job statuses as SQL literals, built once from :class:`~services.contract.JobStatus`.

The ledger's statements name statuses inline, as literals, rather than as arguments: the text of
each statement stays fixed, and the planner sees the statuses it filters on. They are formatted
here from the enum, so no statement spells a status by hand and a status added to the enum is
in (or out of) the lists below by its :attr:`~services.contract.JobStatus.is_final`.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.contract import JobStatus


def literal(status: JobStatus) -> str:
    """``status`` as a SQL string literal (``'queued'``)."""
    return f"'{status.value}'"


def listed(statuses: Iterable[JobStatus]) -> str:
    """``statuses`` as the items of a SQL ``IN (...)`` list, in the order given."""
    return ", ".join(literal(status) for status in statuses)


FINAL = listed(status for status in JobStatus if status.is_final)
"""The statuses of a job that ended (succeeded, failed, cancelled), for ``status IN (...)``."""

UNFINISHED = listed(status for status in JobStatus if not status.is_final)
"""The statuses of a job that has not ended yet (queued, deferred, in progress, retrying)."""
