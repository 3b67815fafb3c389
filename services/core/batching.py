"""Natural batching: concurrent callers of the same write share one round trip.

A :class:`Batcher` runs one batch at a time. Whatever is submitted while a batch runs waits and
goes, all together, into the next one; a caller alone is never delayed by a timer. Used where a
write per caller would cost a round trip and a commit each: the gateway's ledger inserts and
enqueues (``services.gateway.intake``) and the worker's attempt bookkeeping
(``services.jobs.attempts``).

A batcher can be held (:meth:`Batcher.hold`): items sent with ``defer=True`` then wait for
:meth:`Batcher.release` instead of starting a batch, unless another item starts one first and takes
them along. The worker holds its attempt book so that the ends of a group of jobs share the commit
of the starts of the group it claims next (``services.queue.worker``).

If a batch fails with one of ``fail_together`` (say, the database is down), every caller of the
batch gets that error. If it fails otherwise, its items are run again one by one, so that only
the caller at fault gets an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Submit items one caller at a time; ``run`` gets them in batches and returns one result per item."""

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = 256,
        weight: Callable[[T], int] = lambda _: 1,
        fail_together: tuple[type[Exception], ...] = (),
        name: str = "batcher",
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._weight = weight
        self._fail_together = fail_together
        self._name = name
        self._waiting: list[tuple[T, asyncio.Future[R], bool]] = []
        self._urgent = 0  # waiting items not sent with defer=True
        self._held = False
        self._runner: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        """True between :meth:`hold` and :meth:`release`."""
        return self._held

    def hold(self) -> None:
        """From now until :meth:`release`, items sent with ``defer=True`` wait rather than start a batch.

        Any other item starts the next batch as usual (once the running one is done), and the
        waiting deferred items go with it. A batch already running is not affected.
        """
        self._held = True

    def release(self) -> None:
        """End a :meth:`hold`: whatever waits goes in the next batch, now if none is running."""
        self._held = False
        self._start()

    async def submit(self, item: T, *, defer: bool = False) -> R:
        """``item``'s result, once the batch holding it ran; its error if it failed.

        If the caller is cancelled the item still runs (it may already be written): only its
        future is cancelled, and a batch sets no result on a cancelled future. With ``defer``,
        the item waits while the batcher is held (:meth:`hold`).
        """
        return await self.send(item, defer=defer)

    def send(self, item: T, *, defer: bool = False) -> asyncio.Future[R]:
        """Queue ``item`` now, without waiting; the future gets its result (or its error)."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done, defer))
        if not defer:
            self._urgent += 1
        self._start()
        return done

    def _may_run(self) -> bool:
        return bool(self._waiting) and (not self._held or self._urgent > 0)

    def _start(self) -> None:
        if self._runner is None and self._may_run():
            self._runner = asyncio.create_task(self._run_all(), name=self._name)

    async def _run_all(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._may_run():
                batch, weight = [], 0
                while self._waiting:
                    item_weight = self._weight(self._waiting[0][0])
                    if batch and weight + item_weight > self._max_batch:
                        break
                    item, done, deferred = self._waiting.pop(0)
                    self._urgent -= not deferred
                    batch.append((item, done))
                    weight += item_weight
                await self._run_batch(batch)
        except BaseException:  # cancelled (the loop is going away): no caller may wait forever
            for done in [*(d for _, d in batch), *(d for _, d, _ in self._waiting)]:
                done.cancel()
            self._waiting.clear()
            self._urgent = 0
            raise
        finally:
            self._runner = None

    async def _run_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except self._fail_together as exc:
            for _, done in batch:
                _reject(done, exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                _reject(batch[0][1], exc)
                return
            for one in batch:  # find the item at fault: the others still go through
                await self._run_batch([one])
            return
        for (_, done), result in zip(batch, results, strict=True):
            if not done.done():
                done.set_result(result)


def _reject(done: asyncio.Future[R], error: BaseException) -> None:
    if not done.done():
        done.set_exception(error)
        # Marked as retrieved: a caller that was cancelled meanwhile leaves no "never retrieved" log.
        done.exception()
