"""A background task holding one listening Postgres connection, made again whenever it is lost.

The gateway's live status hub (``services.gateway.live.job_events``) and the worker's relay
(``services.jobs.relay``) each keep one connection that ``LISTEN``s; what they do with it is
theirs (:meth:`ListeningConnection._listen`, which returns or raises when the connection is lost).
This class holds the rest: the task, the event that says the connection is up, and the loop that
connects again every ``reconnect_seconds``, logging the first failure of a streak and the
reconnection that ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.core.failures import POSTGRES_CONNECTION_FAILED


class ListeningConnection:
    """Runs :meth:`_listen` in a task, again after each loss; ``what`` names it in the log."""

    def __init__(self, *, what: str, log: logging.Logger, reconnect_seconds: float) -> None:
        self.what = what
        self.reconnect_seconds = reconnect_seconds
        self._log = log
        self._connected = asyncio.Event()
        """Set by :meth:`_listen` once it listens (and whatever else it does first is done)."""
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        """True while the listening connection is up."""
        return self._connected.is_set()

    async def start(self) -> None:
        """Start listening in the background (Postgres may be away: it keeps trying)."""
        self._task = asyncio.create_task(self._run(), name=self.what)

    async def wait_connected(self, *, within: float) -> bool:
        """Wait until the connection listens; False if it does not within ``within`` s."""
        try:
            async with asyncio.timeout(within):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self, failures: int) -> None:
        """Connect, listen and work until the connection is lost (``failures``: attempts that just failed)."""
        raise NotImplementedError

    def _said_again(self, failures: int) -> None:
        """For :meth:`_listen`, once it listens: say so when attempts failed before this one."""
        if failures:
            self._log.info("%s connected again after %d failed attempt(s)", self.what, failures)

    async def _run(self) -> None:
        failures = 0  # in a row: only the first of a streak is logged
        while True:
            try:
                await self._listen(failures)
                failures = 0
            except asyncio.CancelledError:
                raise
            except POSTGRES_CONNECTION_FAILED as exc:
                if not failures:
                    self._log.warning(
                        "%s cannot reach Postgres, retrying every %.0f s: %s",
                        self.what,
                        self.reconnect_seconds,
                        type(exc).__name__,
                    )
                failures += 1
            except Exception:
                self._log.exception("%s failed, reconnecting", self.what)
                failures += 1
            finally:
                self._connected.clear()
            await asyncio.sleep(self.reconnect_seconds)
