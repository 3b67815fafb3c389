"""Short, renewed leases on running jobs, so a killed worker's jobs run again within seconds.

ARQ marks a running job with ``arq:in-progress:<id>``, whose TTL is the longest job timeout plus
10 s (310 s by default) and is never renewed: a job whose worker is SIGKILLed waits that long
before another worker may take it. While a job runs here, its key's TTL is cut to the lease and
renewed every third of it; a dead worker stops renewing, the key expires, and any other worker
polling the queue picks the job up (it is still in the queue's sorted set while it runs).

The key's value is the claim's token (``<worker id>:<ARQ try>``, ``services.queue.fencing``): a
renewal is a script that pushes the expiry back only while the key still holds this worker's
token. A lease is held from the claim until the job's end is written, ledger and Redis both
(``services.queue.runner`` releases it). It is lost when a renewal finds the key gone or held
by another claim, or when a whole lease has passed (less a margin) since the worker last knew it
held it: a worker cut off from Redis cannot renew, and another may take the job over once the key
runs out. :attr:`LeaseKeeper.on_lost` is told, and the worker cancels the job's run.

A job handed over by the enqueue (``services.queue.handoff``) arrives with a key that lives only a
short while: the worker confirms it at once with a renewal, and the job acts on nothing outside
(:meth:`LeaseKeeper.check`) before that renewal said it holds the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from arq.constants import in_progress_key_prefix, retry_key_prefix
from redis.asyncio import Redis

from services.queue.enqueue import RETRY_KEY_TTL_SECONDS, Script
from services.queue.fencing import Fenced

log = logging.getLogger("afterword.leases")

TRUSTED_SHARE = 0.9
"""Of a lease, the share the worker counts on from the moment it last knew it held it (clock drift)."""

ARQ_TOKEN = "1"  # noqa: S105 (a lease's token, not a secret)
"""The value ARQ's own poll gives an in-progress key (a stock ARQ worker on the same queue)."""

# KEYS: in-progress keys. ARGV[1]: the lease (ms), then each key's token. Returns per key 1 if it
# held the token (its expiry is pushed back to a whole lease), else 0 (gone, another claim's, or a key
# of the wrong type that anyone who can write to Redis may leave: that lease alone is lost).
_RENEW = Script(b"""
local renewed = {}
for i = 1, #KEYS do
  if redis.pcall('GET', KEYS[i]) == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    renewed[i] = 1
  else
    renewed[i] = 0
  end
end
return renewed
""")

# KEYS[1]: the in-progress key, KEYS[2]: the retry key. ARGV: the token, the try to count from,
# the retry key's TTL (s). While the key holds the token, ARQ's try count is set to at least the
# given try (a count that is not a number is replaced); returns 1, else 0.
_COUNT_FROM = Script(b"""
if redis.pcall('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local counted = redis.pcall('GET', KEYS[2])
if type(counted) ~= 'string' or (tonumber(counted) or 0) < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
end
return 1
""")


@dataclass
class _Lease:
    token: str
    held_until: float
    """``time.monotonic()`` until which the lease surely holds (-inf until a hand-over is confirmed)."""
    confirmed: asyncio.Future[bool] | None = field(default=None)
    """A handed-over job's first renewal, while it is on its way."""


class LeaseKeeper:
    """Holds the leases of the jobs this worker runs."""

    def __init__(self, redis: Redis, *, lease_seconds: float) -> None:
        self._redis = redis
        self.lease_seconds = lease_seconds
        self.lease_ms = int(lease_seconds * 1000)
        """The TTL of a leased job's in-progress key, in milliseconds."""
        self._interval = lease_seconds / 3
        self._trusted = lease_seconds * TRUSTED_SHARE
        self._held: dict[str, _Lease] = {}
        self._lost: set[str] = set()
        self._confirming: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.on_lost: Callable[[Fenced], None] | None = None
        """Called when a held lease is lost, with the refused renewal (the worker cancels the job's run)."""

    @property
    def held(self) -> frozenset[str]:
        """The jobs whose leases are being renewed."""
        return frozenset(self._held)

    def token(self, job_id: str) -> str | None:
        """The token of this worker's claim on ``job_id``, while it holds it."""
        lease = self._held.get(job_id)
        return None if lease is None else lease.token

    def claimed(self, job_id: str, token: str = ARQ_TOKEN, *, since: float | None = None) -> None:
        """Lease ``job_id``, whose in-progress key the claim script set to ``token`` with the lease's TTL.

        ``since`` is the ``time.monotonic()`` at which the claim was sent (now if not given).
        """
        self._lost.discard(job_id)
        self._held[job_id] = _Lease(token, (time.monotonic() if since is None else since) + self._trusted)

    def handed_over(self, job_id: str, token: str) -> None:
        """Lease ``job_id``, handed over with a short-lived key set to ``token``: confirm it at once."""
        self._lost.discard(job_id)
        lease = _Lease(token, float("-inf"), asyncio.get_running_loop().create_future())
        self._held[job_id] = lease
        task = asyncio.create_task(self._confirm(job_id, lease), name=f"lease-confirm:{job_id}")
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)

    async def hold(self, job_id: str) -> None:
        """Lease ``job_id``: its in-progress key now expires unless renewed.

        A job taken by our worker's claim is leased already (no round trip); one that ARQ's own
        poll took (a stock ARQ worker on the same queue: its keys hold "1") has its key's
        TTL cut here.
        """
        if job_id in self._held:
            return
        self.claimed(job_id)
        await self._redis.pexpire(in_progress_key_prefix + job_id, self.lease_ms)

    def release(self, job_id: str) -> None:
        """Stop renewing: the job's end is written (ARQ's end deleted the key, if it was still ours)."""
        lease = self._held.pop(job_id, None)
        if lease is not None and lease.confirmed is not None and not lease.confirmed.done():
            lease.confirmed.set_result(False)
        self._lost.discard(job_id)

    def lost(self, job_id: str) -> bool:
        """True once the lease on ``job_id`` was lost (until :meth:`release`)."""
        return job_id in self._lost

    def holds(self, job_id: str) -> bool:
        """True while this worker surely holds the lease on ``job_id``."""
        lease = self._held.get(job_id)
        return lease is not None and time.monotonic() < lease.held_until

    async def check(self, job_id: str, *, before: str = "effect") -> None:
        """Raise :class:`Fenced` unless this worker still holds the lease on ``job_id``.

        Called before anything with effects outside (``before`` names it, for the log and the
        metric); a hand-over not yet confirmed is waited for.
        """
        lease = self._held.get(job_id)
        if lease is not None and lease.confirmed is not None:
            await asyncio.shield(lease.confirmed)
        if not self.holds(job_id):
            why = "its lease was lost" if self.lost(job_id) else "its lease ran out"
            raise Fenced(before, job_id, why)

    async def start(self) -> None:
        """Renew every held lease in the background until :meth:`stop`; lose those that run out."""
        self._tasks = [
            asyncio.create_task(self._renewing(), name="lease-keeper"),
            asyncio.create_task(self._watching(), name="lease-watch"),
        ]

    async def stop(self) -> None:
        """Stop renewing."""
        tasks = [*self._tasks, *self._confirming]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def renew(self) -> None:
        """Push back the expiry of every held lease once; a lease whose key is not ours any more is lost."""
        if self._held:
            await self._renew(dict(self._held))

    async def count_from(self, job_id: str, job_try: int) -> bool:
        """While this worker holds ``job_id``, make ARQ's try count at least ``job_try``; False if it does not.

        For a claim whose start the ledger refused because a try at least as high started the job
        before: after Redis lost the job and its count, the next claim then gets past that try.
        """
        lease = self._held.get(job_id)
        if lease is None:
            return False
        keys = [in_progress_key_prefix + job_id, retry_key_prefix + job_id]
        return bool(await _COUNT_FROM(self._redis, keys, [lease.token, job_try, RETRY_KEY_TTL_SECONDS]))

    async def _renew(self, leases: dict[str, _Lease]) -> None:
        sent = time.monotonic()
        keys = [in_progress_key_prefix + job_id for job_id in leases]
        renewed = await _RENEW(self._redis, keys, [self.lease_ms, *(lease.token for lease in leases.values())])
        for (job_id, lease), ok in zip(leases.items(), renewed, strict=True):
            if self._held.get(job_id) is not lease:
                continue  # released (or claimed anew) while the renewal was on its way
            if ok:
                lease.held_until = max(lease.held_until, sent + self._trusted)
                if lease.confirmed is not None and not lease.confirmed.done():
                    lease.confirmed.set_result(True)
                lease.confirmed = None
            else:
                self._lose(job_id, "its key is gone or holds another claim's token")

    async def _confirm(self, job_id: str, lease: _Lease) -> None:
        try:
            await self._renew({job_id: lease})
        except Exception as exc:  # Redis away: the hand-over's short key runs out, another worker takes it
            if self._held.get(job_id) is lease:
                self._lose(job_id, f"its hand-over could not be confirmed ({type(exc).__name__}: {exc})")

    def _lose(self, job_id: str, why: str) -> None:
        lease = self._held.pop(job_id)
        if lease.confirmed is not None and not lease.confirmed.done():
            lease.confirmed.set_result(False)
        self._lost.add(job_id)
        fenced = Fenced("renewal", job_id, why)
        if self.on_lost is None:
            log.warning("fenced: %s", fenced)
        else:
            self.on_lost(fenced)

    def _run_out(self) -> float:
        """Lose the leases not known to hold any more (renewals failed); return when the next one runs out."""
        now = time.monotonic()
        next_out = now + self._interval
        for job_id, lease in list(self._held.items()):
            if lease.confirmed is not None:
                continue  # a hand-over: its confirmation decides
            if lease.held_until <= now:
                self._lose(job_id, "not renewed for a lease")
            else:
                next_out = min(next_out, lease.held_until)
        return next_out

    async def _renewing(self) -> None:
        next_at = time.monotonic() + self._interval
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = time.monotonic() + self._interval
            try:
                await self.renew()
            except Exception as exc:  # Redis away: ARQ's own loop will notice too
                log.warning("could not renew %d lease(s): %s", len(self._held), exc)

    async def _watching(self) -> None:
        # Apart from the renewals, which may wait on a Redis that does not answer.
        while True:
            next_out = self._run_out()
            await asyncio.sleep(max(0.01, next_out - time.monotonic()))
