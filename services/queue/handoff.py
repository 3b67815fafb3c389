"""Jobs handed by the enqueue itself to a waiting worker: no claim round trip at light load.

Woken by the enqueue's message, a worker still has to claim the job (a round trip to Redis)
before it can start it. A waiting worker with a free slot therefore *registers* in the queue's
idle set (``services.queue.enqueue.idle_workers_key``), and the enqueue script claims a job due now for
the longest-waiting registered worker, exactly as the worker's own claim would (its
``arq:in-progress`` key with the worker's lease, its try counted, its abort flag read), and
publishes it, fetched, on that worker's own channel. If nobody listens there (the worker is gone)
it takes the next registration, and with none left it wakes the workers as before.

A registration names its worker (the job's in-progress key gets the worker's token,
``<worker id>:<ARQ try>``, as its own claim would set: ``services.queue.fencing``) and the lease
the enqueue sets. That lease is short (:data:`HOLD_MS`): the worker confirms it at once with a
renewal (``services.queue.leases``), and a job handed to a worker that never took it (paused, or
cut off while Redis still counts its subscription) is free for another claim within moments, not
after a whole lease. A registration is chosen only while it is fresh: a waiting worker makes it
anew at each look, at least every poll delay, and one older than the age it states was left by a
worker that stopped looking (paused, cut off): the enqueue drops it and tells the worker's channel,
so that a worker that was only slow frees the slot it held for it.

Each registration holds one of the worker's slots (:class:`Registrations`), so a job handed over
always finds room. A worker withdraws its registration whenever it claims jobs itself, and
registers again if room remains; the withdrawal says whether a hand-over already took it (then
its slot stays held for the job on its way). A handed-over job message carries the registration
it took. When the worker's subscription is renewed (after a Redis outage), it listens on a new
channel and every held slot is freed: a job handed to the old channel and lost with the
connection is run again once its lease runs out, as a crashed worker's job is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from services.queue.claim import score_ms
from services.queue.runner import Fetched


@dataclass(frozen=True)
class Handoff:
    """A job the enqueue claimed for this worker, with what ARQ's ``run_job`` reads first."""

    registration: str
    job_id: str
    score: int
    fetched: Fetched


HOLD_MS = 2000
"""How long a handed-over job's in-progress key lives until the worker confirms it (at most a lease)."""


def is_dropped(message: bytes) -> bool:
    """True for a message saying the enqueue dropped a registration (it holds the registration alone)."""
    return b"\n" not in message


def parse(message: bytes) -> Handoff:
    """The hand-over in a message of the worker's channel (see ``services.queue.enqueue``).

    Raises ValueError for a message the enqueue script did not write (anyone may publish there).
    """
    registration, job_id, score, job_try, abort, data = message.split(b"\n", 5)
    return Handoff(
        registration=registration.decode(),
        job_id=job_id.decode(),
        score=score_ms(score),
        fetched=Fetched(data=data, job_try=int(job_try), abort=abort == b"1"),
    )


def registration_of(message: bytes) -> str:
    """The registration a message names (its first line), even in a message :func:`parse` refuses."""
    return message.split(b"\n", 1)[0].decode(errors="replace")


@dataclass
class Registrations:
    """One worker's registrations in the idle set, and the slots they hold."""

    queue_name: str
    worker_id: str = ""
    """Names the worker in the tokens of the jobs handed to it."""
    channel: str = ""
    registered: str | None = None
    """The registration in the idle set, as far as the worker knows (a hand-over may have taken it)."""
    holding: set[str] = field(default_factory=set)
    """Registrations that hold a slot: the one registered, and those taken by a hand-over on its way."""
    _count: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.renew_channel()

    def renew_channel(self) -> None:
        """Listen on a new channel from now on: what was sent to the old one is not ours to take."""
        self.channel = f"{self.queue_name}:handoff:{uuid.uuid4().hex}"

    def offer(self, *, lease_ms: int, aborts: bool, max_age_ms: int) -> str:
        """A new registration: the lease the enqueue sets, whether it reads aborts, how old it may get, our channel."""
        self._count += 1
        return registration(
            lease_ms=lease_ms,
            aborts=aborts,
            count=self._count,
            max_age_ms=max_age_ms,
            worker_id=self.worker_id,
            channel=self.channel,
        )


def registration(*, lease_ms: int, aborts: bool, count: int, max_age_ms: int, worker_id: str, channel: str) -> str:
    """A member of the idle set, as the enqueue script reads it (``services.queue.enqueue``)."""
    return f"{lease_ms}|{int(aborts)}|{count}|{max_age_ms}|{worker_id}|{channel}"
