"""Natural batching: concurrent callers of the same write share one round trip.

A :class:`Batcher` runs one batch at a time. Whatever is submitted while a batch runs waits and
goes, all together, into the next one; a caller alone is never delayed by a timer. Used where a
write per caller would cost a round trip and a commit each: the gateway's ledger inserts and
enqueues (``services.gateway.intake``) and the worker's attempt bookkeeping
(``services.jobs.attempts``).

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
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """``item``'s result, once the batch holding it ran; its error if it failed.

        If the caller is cancelled the item still runs (it may already be written): only its
        future is cancelled, and a batch sets no result on a cancelled future.
        """
        return await self.send(item)

    def send(self, item: T) -> asyncio.Future[R]:
        """Queue ``item`` now, without waiting; the future gets its result (or its error)."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        if self._runner is None:
            self._runner = asyncio.create_task(self._run_all(), name=self._name)
        return done

    async def _run_all(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._waiting:
                batch, weight = [], 0
                while self._waiting:
                    item_weight = self._weight(self._waiting[0][0])
                    if batch and weight + item_weight > self._max_batch:
                        break
                    batch.append(self._waiting.pop(0))
                    weight += item_weight
                await self._run_batch(batch)
        except BaseException:  # cancelled (the loop is going away): no caller may wait forever
            for _, done in [*batch, *self._waiting]:
                done.cancel()
            self._waiting.clear()
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
