"""The figures of minutes that are over, kept by the gateway: ``GET /stats`` reads only the last ones.

Reading every job of the window on each call costs Postgres time in proportion to the window's jobs
(a busy 15-minute window holds hundreds of thousands), every 2 s while the dashboard is open. A
minute is *settled* once Postgres' clock is ``settle`` past its end: every timestamp the ledger
writes is Postgres' ``clock_timestamp()`` of a short transaction, so no row of it commits later
than that. A settled minute's figures are read once and kept (a day of them, the longest window);
each call reads the minutes not settled yet, the current one and, for ``settle`` after a minute
turns, the one before. Settled minutes are read ``READ_MINUTES`` at a time, each read a task that
concurrent calls share and that outlives a call given up.

Kept figures are not read again: a job ended in a settled minute and later run again by
``POST /jobs/{id}/retry`` (which clears its ``finished_at``) still counts in that minute's
throughput here, where a fresh count would drop it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta

from services.ledger import Executor, stats
from services.ledger import latency_buckets as latency_histogram

SETTLE = timedelta(seconds=30)
READ_MINUTES = 15
"""Settled minutes read per statement: a day's window on a busy ledger is read in many short ones."""
MERGES_KEPT = 4
"""Window lengths whose merged pickups are kept at a time (the dashboard asks for one)."""


class SettledMinutes:
    """Settled minutes' figures, and their pickups merged for the last few window lengths asked for."""

    def __init__(self, *, settle: timedelta = SETTLE, keep_minutes: int = stats.MAX_WINDOW_MINUTES) -> None:
        self.settle = settle
        self.keep_minutes = keep_minutes
        self._figures: dict[datetime, stats.MinuteFigures] = {}
        self._merged: dict[tuple[datetime, datetime], Counter[int]] = {}
        """Pickups of settled minutes merged, by (first, end) of the minutes: a day's window merges 1,440."""
        self._reading: dict[tuple[datetime, datetime], asyncio.Task[None]] = {}
        """Reads of settled minutes under way, by (first, end): concurrent calls share them."""

    async def window(self, db: Executor, *, minutes: int) -> stats.Window:
        """The figures of the last ``minutes`` minutes, the current one included."""
        now: datetime = await db.fetchval("SELECT now()")  # the clock that wrote the ledger's timestamps
        current = _minute_of(now)
        first = current - (minutes - 1) * stats.MINUTE
        settled_end = max(first, _minute_of(now - self.settle))  # minutes before it are settled
        missing = [m for m in stats.minutes_between(first, settled_end) if m not in self._figures]
        for run in _runs(missing, READ_MINUTES):
            await self._read(db, run)
        self._forget_before(current - self.keep_minutes * stats.MINUTE)
        settled = [self._figures[m] for m in stats.minutes_between(first, settled_end)]
        merged = self._merged_pickups(first, settled_end, settled)
        fresh = await stats.minute_figures(db, settled_end, current + stats.MINUTE)
        return stats.window_of(
            [*settled, *fresh], pickups=latency_histogram.merged([merged.items(), *(f.pickups for f in fresh)])
        )

    async def _read(self, db: Executor, run: tuple[datetime, datetime]) -> None:
        """Read and keep the settled minutes of ``run``, or wait for the read of another call.

        The read is a task of its own: a call that is given up (its client went away) leaves it
        to finish, and the minutes it read are kept for the next call.
        """
        task = self._reading.get(run)
        if task is None:
            task = asyncio.create_task(self._keep(db, *run))
            self._reading[run] = task
            task.add_done_callback(lambda done: self._read_over(run, done))
        await asyncio.shield(task)

    def _read_over(self, run: tuple[datetime, datetime], task: asyncio.Task[None]) -> None:
        del self._reading[run]
        if not task.cancelled():
            task.exception()  # retrieved: also when every call that waited for it was given up

    async def _keep(self, db: Executor, first: datetime, end: datetime) -> None:
        for figures in await stats.minute_figures(db, first, end):
            self._figures[figures.minute] = figures

    async def close(self) -> None:
        """Stop the reads under way (at the gateway's shutdown, before its pool closes)."""
        tasks = list(self._reading.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _merged_pickups(self, first: datetime, end: datetime, settled: list[stats.MinuteFigures]) -> Counter[int]:
        key = (first, end)
        if key not in self._merged:
            # An older end is never asked for again; a few window lengths at a time are kept.
            kept = [k for k in self._merged if k[1] == end][-(MERGES_KEPT - 1) :]
            self._merged = {k: self._merged[k] for k in kept}
            self._merged[key] = latency_histogram.merged(f.pickups for f in settled)
        return self._merged[key]

    def _forget_before(self, oldest: datetime) -> None:
        for minute in [m for m in self._figures if m < oldest]:
            del self._figures[minute]


def _runs(minutes: list[datetime], longest: int) -> list[tuple[datetime, datetime]]:
    """``minutes`` (ascending) as runs of consecutive minutes, each at most ``longest`` long: (first, end)."""
    runs: list[tuple[datetime, datetime]] = []
    for minute in minutes:
        if runs and runs[-1][1] == minute and (minute - runs[-1][0]) < longest * stats.MINUTE:
            runs[-1] = (runs[-1][0], minute + stats.MINUTE)
        else:
            runs.append((minute, minute + stats.MINUTE))
    return runs


def _minute_of(moment: datetime) -> datetime:
    """The whole minute ``moment`` is in (time zones are whole minutes apart from UTC)."""
    return moment.replace(second=0, microsecond=0)
