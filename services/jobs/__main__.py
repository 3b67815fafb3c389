"""``python -m services.jobs``: run one jobs worker until SIGINT/SIGTERM.

ARQ's worker exits when Redis goes away, once its running jobs have ended and its resources are
closed (``services.queue.runner``). This entry point starts it again (with a growing pause,
up to 5 s) until Redis is back, so a Redis restart does not need a process supervisor; SIGTERM
and SIGINT still stop it for good, after the grace period for running jobs. A worker that was
told to stop is not started again even if Redis went away while it stopped (its last clean-up
then fails on Redis), and a signal that comes between two workers, while no event loop listens,
stops the process instead of being lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from types import FrameType

import uvloop

from services.core.failures import REDIS_FAILED
from services.core.heap import freeze_startup_heap
from services.core.log_config import configure_logging
from services.core.settings import Settings, load_settings
from services.jobs.execution import install
from services.jobs.loading import JobCatalogError, load
from services.jobs.setup import worker_options
from services.queue.worker import QueueWorker

log = logging.getLogger("afterword.jobs")


class _SignalsBetweenWorkers:
    """SIGTERM and SIGINT while no worker's event loop handles them: remembered, not lost."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None

    def listen(self) -> None:
        """Take SIGTERM and SIGINT over (the next worker's loop takes them back)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._receive)

    def _receive(self, signum: int, frame: FrameType | None) -> None:
        self.received = self.received or signal.Signals(signum)

    def stop_now(self) -> bool:
        """True (and say so) when a signal came: the process stops instead of starting a worker."""
        if self.received is None:
            return False
        log.info("stopping on %s, received while Redis was unavailable", self.received.name)
        return True


def run(settings: Settings) -> None:
    """Run workers one after the other while Redis outages end them; return on a signal."""
    pause = 0.5
    between = _SignalsBetweenWorkers()
    while True:
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            # ARQ's worker, woken when work arrives
            worker = QueueWorker(**worker_options(settings), claim_linger=settings.worker_claim_linger_ms / 1000)
            if between.stop_now():  # it came before this worker's loop took the signals
                return
            try:
                worker.run()
                return  # stopped by a signal
            # Redis away, or a Redis error the worker did not expect (it copes with keys of the
            # wrong type itself, services.queue.worker): a new worker may overcome either.
            except REDIS_FAILED as exc:
                between.listen()  # the loop is done listening: a signal from now on is ours
                stopping = worker.stopped_by is not None
                log.warning(
                    "redis unavailable or failing (%s); %s",
                    exc,
                    "the worker stops" if stopping else f"restarting the worker in {pause:.1f}s",
                )
                if stopping:
                    return
        finally:
            loop.close()
        between.listen()  # closing the loop may have handed the signals back to their defaults
        deadline = time.monotonic() + pause
        while between.received is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if between.stop_now():
            return
        pause = min(pause * 2, 5.0)


def main() -> None:
    """Build the settings, then run the ARQ worker on uvloop."""
    settings = load_settings()
    configure_logging("jobs")  # JSON lines on stdout, ARQ's own records included
    log.info("jobs worker starting (pid %d)", os.getpid())
    try:
        install(load())  # every job's implementation, checked against its definition
    except JobCatalogError as exc:
        log.error("the jobs worker cannot start: %s", exc)
        raise SystemExit(2) from None
    freeze_startup_heap()  # the job code is imported: keep it out of the collector's way
    run(settings)


if __name__ == "__main__":
    main()
