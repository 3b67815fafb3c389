"""Garbage-collector settings for the long-running services, applied once start-up is done.

Under load, CPython's cyclic collector runs every 700 net allocations and, in its older
generations, walks the whole start-up heap (FastAPI's routes, pydantic's schemas, every imported
module), which pauses the slowest requests for tens of milliseconds. :func:`freeze_startup_heap`
moves what start-up allocated out of the collector's reach (``gc.freeze``) and collects the young
generation less often; objects are still freed by reference counting, and cycles are still
collected.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""Net allocations between two collections of the youngest generation (CPython's default: 700)."""


def freeze_startup_heap() -> None:
    """Collect once, freeze the survivors, and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
