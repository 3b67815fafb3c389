"""``python -m services.jobs``: run one jobs worker until SIGINT/SIGTERM.

ARQ's worker exits when Redis goes away. This entry point starts it again (with a growing pause,
up to 5 s) until Redis is back, so a Redis restart does not need a process supervisor; SIGTERM
and SIGINT still stop it for good, after the grace period for running jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

import uvloop
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.heap import freeze_startup_heap
from services.jobs.wakeup import Worker
from services.jobs.worker import on_shutdown, worker_options
from services.log_config import configure_logging
from services.settings import Settings, load_settings

log = logging.getLogger("afterword.jobs")

_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def run(settings: Settings) -> None:
    """Run workers one after the other while Redis outages end them; return on a signal."""
    pause = 0.5
    while True:
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        worker = Worker(**worker_options(settings))  # ARQ's worker, woken when work arrives
        try:
            worker.run()
            return  # stopped by a signal
        except _REDIS_DOWN as exc:
            log.warning("redis unavailable (%s); restarting the worker in %.1fs", exc, pause)
            with contextlib.suppress(Exception):
                loop.run_until_complete(on_shutdown(worker.ctx))
        finally:
            loop.close()
        time.sleep(pause)
        pause = min(pause * 2, 5.0)


def main() -> None:
    """Build the settings, then run the ARQ worker on uvloop."""
    settings = load_settings()
    configure_logging("jobs")  # JSON lines on stdout, ARQ's own records included
    log.info("jobs worker starting (pid %d)", os.getpid())
    freeze_startup_heap()  # the job code is imported: keep it out of the collector's way
    run(settings)


if __name__ == "__main__":
    main()
