"""Fencing: a worker whose claim on a job was superseded changes nothing and does nothing more.

A worker can lose a job's lease while it is alive: paused (GC, SIGSTOP, a frozen VM), cut off
from Redis, or stalled on Postgres past the lease. Another worker then claims the job. Every
claim carries a token: in Redis the value of the job's ``arq:in-progress:<id>`` key,
``<worker id>:<ARQ try>``; in the ledger the attempt it opened (and ARQ's try, which only grows).
Each write a worker makes for a job succeeds only while its token is the job's current one:

- the lease's renewal, the hand-back of a handed-over job and ARQ's end of the job (result,
  keys, queue entry) are Lua scripts that check the key's value (``services.queue.leases``,
  ``services.queue.ends``);
- the attempt's start, end and effects are statements that check the attempt
  (``services.ledger``, migration 0011).

A refused write raises or reports :class:`Fenced`; it is logged once as ``fenced`` and counted in
``afterword_fenced_writes_total`` by write. Before each action with effects outside (running the
job, sending the email, writing the line) the job checks that it still holds its lease
(:meth:`services.queue.leases.LeaseKeeper.check`); a lease lost while the job runs cancels it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("afterword.fencing")

WRITES = ("start", "run", "effect", "end", "finish", "renewal", "give_back")
"""What a stale worker may try: each is a label of ``afterword_fenced_writes_total``."""


class Fenced(Exception):
    """A write or an action refused: this worker's claim is no longer the job's current one."""

    def __init__(self, write: str, job_id: str, why: str) -> None:
        super().__init__(f"{write} of job {job_id} refused: {why}")
        self.write = write
        self.job_id = job_id
        self.why = why


def note(ctx: Mapping[str, Any], fenced: Fenced) -> None:
    """Log a refused write as ``fenced`` and count it (``ctx["metrics"]``, when the worker has metrics)."""
    log.warning("fenced: %s", fenced)
    metrics = ctx.get("metrics")
    if metrics is not None:
        metrics.fenced.labels(write=fenced.write).inc()
