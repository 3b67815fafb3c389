"""The queue: the one package that knows ARQ (``arq==0.28.0``), its keys, scripts and internals.

Everything else reaches ARQ through here: the gateway enqueues (:mod:`.enqueue`) and retries or
cancels (:mod:`.control`); the sweeper and the metrics read the keys (:mod:`.inspection`); the
worker is ARQ's worker subclassed (:mod:`.worker` on :mod:`.wake_ups`, :mod:`.slots` and
:mod:`.runner`) with claims (:mod:`.claim`), ends (:mod:`.ends`), leases (:mod:`.leases`), fencing
(:mod:`.fencing`), hand-offs (:mod:`.handoff`), heartbeats (:mod:`.heartbeat`) and call timeouts
(:mod:`.timeouts`). Which ARQ internals those rely on, and the test that fails when the
installed ARQ changes any of them: :mod:`.arq_internals`.

The names below are ARQ's public API, named for what the rest of the code uses them for.
"""

from arq import Retry as RetryLater
from arq import cron as scheduled
from arq import func as job_function
from arq.connections import ArqRedis as QueueRedis
from arq.connections import RedisSettings
from arq.constants import expires_extra_ms
from arq.typing import WorkerCoroutine

JOB_KEY_LIFETIME_SECONDS = expires_extra_ms / 1000
"""How long ARQ keeps a job's key after the job was due (a day); it is never renewed."""

__all__ = [
    "JOB_KEY_LIFETIME_SECONDS",
    "QueueRedis",
    "RedisSettings",
    "RetryLater",
    "WorkerCoroutine",
    "job_function",
    "scheduled",
]
