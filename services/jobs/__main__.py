"""``python -m services.jobs``: run one jobs worker until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging

import uvloop
from arq.worker import Worker

from services.jobs.worker import worker_options
from services.settings import load_settings


def main() -> None:
    """Build the settings, then run the ARQ worker on uvloop."""
    settings = load_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.set_event_loop(uvloop.new_event_loop())
    Worker(**worker_options(settings)).run()


if __name__ == "__main__":
    main()
