"""Short, renewed leases on running jobs, so a killed worker's jobs run again within seconds.

ARQ marks a running job with ``arq:in-progress:<id>``, whose TTL is the longest job timeout plus
10 s (310 s by default) and is never renewed: a job whose worker is SIGKILLed waits that long
before another worker may take it. While a job runs here, its key's TTL is cut to the lease and
renewed every third of it; a dead worker stops renewing, the key expires, and any other worker
polling the queue picks the job up (it is still in the queue's sorted set while it runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis

log = logging.getLogger("afterword.leases")


class LeaseKeeper:
    """Holds the leases of the jobs this worker runs."""

    def __init__(self, redis: Redis, *, lease_seconds: float) -> None:
        self._redis = redis
        self.lease_ms = int(lease_seconds * 1000)
        """The TTL of a leased job's in-progress key, in milliseconds."""
        self._interval = lease_seconds / 3
        self._held: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def held(self) -> frozenset[str]:
        """The jobs whose leases are being renewed."""
        return frozenset(self._held)

    def claimed(self, job_id: str) -> None:
        """Lease ``job_id``, whose in-progress key was just set with the lease's TTL (by the claim script)."""
        self._held.add(job_id)

    async def hold(self, job_id: str) -> None:
        """Lease ``job_id``: its in-progress key now expires unless renewed.

        A job taken by our worker's claim is leased already (no round trip); one that ARQ's own
        poll took (``arq services.jobs.worker.WorkerSettings``) has its key's TTL cut here.
        """
        if job_id in self._held:
            return
        self._held.add(job_id)
        await self._redis.pexpire(in_progress_key_prefix + job_id, self.lease_ms)

    def release(self, job_id: str) -> None:
        """Stop renewing (ARQ deletes the key itself when the job ends)."""
        self._held.discard(job_id)

    async def start(self) -> None:
        """Renew every held lease in the background until :meth:`stop`."""
        self._task = asyncio.create_task(self._run(), name="lease-keeper")

    async def stop(self) -> None:
        """Stop renewing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def renew(self) -> None:
        """Push back the expiry of every held lease once."""
        if not self._held:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in self._held:
                # PEXPIRE XX-like: on a key ARQ already deleted this is a no-op.
                pipe.pexpire(in_progress_key_prefix + job_id, self.lease_ms)
            await pipe.execute()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.renew()
            except Exception as exc:  # Redis away: ARQ's own loop will notice too
                log.warning("could not renew %d lease(s): %s", len(self._held), exc)
