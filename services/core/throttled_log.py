"""Warnings about a trouble that lasts (a Redis key of the wrong type, say): said once, not every loop.

A worker that meets a value it cannot use looks again every few seconds; writing a warning at
each look would bury everything else in the log. :class:`ThrottledLog` writes a trouble's warning
the first time, then at most once per ``every`` seconds with how often it was met meanwhile, and
says so once when the trouble is over.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

MAX_TROUBLES = 256
"""Troubles remembered at once; the oldest is forgotten beyond (a trouble's name may hold Redis data)."""


@dataclass
class _Trouble:
    said_at: float
    unsaid: int = 0


class ThrottledLog:
    """Warnings on ``log`` for each named trouble, at most once per ``every`` seconds."""

    def __init__(self, log: logging.Logger, *, every: float = 60.0) -> None:
        self._log = log
        self._every = every
        self._troubles: dict[str, _Trouble] = {}

    def warning(self, trouble: str, message: str, *args: object) -> None:
        """Log ``message % args`` as a warning, unless ``trouble`` was logged less than ``every`` s ago."""
        now = time.monotonic()
        known = self._troubles.get(trouble)
        if known is not None and now - known.said_at < self._every:
            known.unsaid += 1
            return
        if known is not None and known.unsaid:
            message += " (met %d more time(s) since the last warning)"
            args = (*args, known.unsaid)
        if known is None and len(self._troubles) >= MAX_TROUBLES:
            del self._troubles[next(iter(self._troubles))]
        self._troubles[trouble] = _Trouble(said_at=now)
        self._log.warning(message, *args)

    def over(self, trouble: str, message: str, *args: object) -> None:
        """``trouble`` is over: log ``message % args`` if it had been logged, and forget it."""
        if self._troubles.pop(trouble, None) is not None:
            self._log.info(message, *args)

    def active(self, trouble: str) -> bool:
        """True while ``trouble`` is logged and not over."""
        return trouble in self._troubles
