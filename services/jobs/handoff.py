"""Jobs handed by the enqueue itself to a waiting worker: no claim round trip at light load.

Woken by the enqueue's message, a worker still has to claim the job (a round trip to Redis)
before it can start it. A waiting worker with a free slot therefore *registers* in the queue's
idle set (``services.queue.idle_workers_key``), and the enqueue script claims a job due now for
the longest-waiting registered worker, exactly as the worker's own claim would (its
``arq:in-progress`` key with the worker's lease, its try counted, its abort flag read), and
publishes it, fetched, on that worker's own channel. If nobody listens there (the worker is gone)
it takes the next registration, and with none left it wakes the workers as before.

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

from services.jobs.claim import score_ms
from services.jobs.job_runner import Fetched


@dataclass(frozen=True)
class Handoff:
    """A job the enqueue claimed for this worker, with what ARQ's ``run_job`` reads first."""

    registration: str
    job_id: str
    score: int
    fetched: Fetched


def parse(message: bytes) -> Handoff:
    """The hand-over in a message of the worker's channel (see ``services.queue``).

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

    def offer(self, *, lease_ms: int, aborts: bool) -> str:
        """A new registration: the lease the enqueue sets, whether it reads aborts, our channel."""
        self._count += 1
        return f"{lease_ms}|{int(aborts)}|{self._count}|{self.channel}"
