"""Natural batching: who shares a batch, and who gets which error."""

from __future__ import annotations

import asyncio

import pytest

from services.core.batching import Batcher


class Down(Exception):
    pass


class Recorder:
    """A batch function that records its batches and can be told to fail."""

    def __init__(self, *, down: bool = False, bad: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.down = down
        self.bad = bad
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await self.release.wait()
        if self.down:
            raise Down("database down")
        if self.bad in items:
            raise ValueError(f"bad item {self.bad}")
        return [item * 10 for item in items]


async def test_a_caller_alone_runs_at_once_in_a_batch_of_one() -> None:
    run = Recorder()
    batcher = Batcher(run)

    assert await batcher.submit(1) == 10
    assert run.batches == [[1]]


async def test_callers_arriving_during_a_batch_share_the_next_one() -> None:
    run = Recorder()
    batcher = Batcher(run)
    run.release.clear()
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)  # the first batch is running now
    others = [asyncio.create_task(batcher.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    run.release.set()

    assert await asyncio.gather(first, *others) == [10, 20, 30, 40]
    assert run.batches == [[1], [2, 3, 4]]


async def test_a_batch_holds_at_most_max_batch_by_weight() -> None:
    run = Recorder()
    batcher = Batcher(run, max_batch=5, weight=lambda item: item)
    run.release.clear()
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(batcher.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    run.release.set()
    await asyncio.gather(first, *rest)

    assert run.batches == [[1], [2, 3], [4]]


async def test_an_error_in_fail_together_fails_every_caller_of_the_batch() -> None:
    run = Recorder(down=True)
    batcher = Batcher(run, fail_together=(Down,))
    run.release.clear()
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    others = [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]
    await asyncio.sleep(0)
    run.release.set()
    results = await asyncio.gather(first, *others, return_exceptions=True)

    assert all(isinstance(r, Down) for r in results)
    assert run.batches == [[1], [2, 3]]  # not tried one by one


async def test_another_error_is_narrowed_down_to_the_caller_at_fault() -> None:
    run = Recorder(bad=3)
    batcher = Batcher(run)
    run.release.clear()
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    others = [asyncio.create_task(batcher.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    run.release.set()
    results = await asyncio.gather(first, *others, return_exceptions=True)

    assert results[:2] == [10, 20]
    assert isinstance(results[2], ValueError)
    assert results[3] == 40
    assert run.batches == [[1], [2, 3, 4], [2], [3], [4]]


async def test_a_cancelled_caller_does_not_cancel_its_item() -> None:
    run = Recorder()
    batcher = Batcher(run)
    run.release.clear()
    caller = asyncio.create_task(batcher.submit(7))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    run.release.set()
    assert await batcher.submit(8) == 80

    assert run.batches == [[7], [8]]


async def test_callers_are_not_left_waiting_when_the_batch_runner_is_cancelled() -> None:
    run = Recorder()
    batcher = Batcher(run)
    run.release.clear()
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    second = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0)
    runner = batcher._runner
    assert runner is not None
    runner.cancel()

    results = await asyncio.gather(first, second, return_exceptions=True)

    assert all(isinstance(r, asyncio.CancelledError) for r in results)


async def test_a_held_batcher_keeps_deferred_items_until_released() -> None:
    run = Recorder()
    batcher = Batcher(run)
    batcher.hold()
    deferred = [asyncio.create_task(batcher.submit(i, defer=True)) for i in (1, 2)]
    await asyncio.sleep(0.01)

    assert run.batches == []
    assert not any(task.done() for task in deferred)

    batcher.release()
    assert await asyncio.gather(*deferred) == [10, 20]
    assert run.batches == [[1, 2]]
    assert not batcher.held


async def test_an_item_not_deferred_starts_a_batch_that_takes_the_held_ones_along() -> None:
    run = Recorder()
    batcher = Batcher(run)
    batcher.hold()
    deferred = asyncio.create_task(batcher.submit(1, defer=True))
    await asyncio.sleep(0)

    assert await batcher.submit(2) == 20
    assert await deferred == 10
    assert run.batches == [[1, 2]]
    assert batcher.held  # still held: the next deferred item waits again
    later = asyncio.create_task(batcher.submit(3, defer=True))
    await asyncio.sleep(0.01)
    assert not later.done()
    batcher.release()
    assert await later == 30


async def test_holding_does_not_stop_the_batch_already_running() -> None:
    run = Recorder()
    batcher = Batcher(run)
    run.release.clear()
    first = asyncio.create_task(batcher.submit(1, defer=True))
    await asyncio.sleep(0)  # the submit: its batch's runner is created
    await asyncio.sleep(0)  # the runner: its batch runs
    assert run.batches == [[1]]
    batcher.hold()
    run.release.set()

    assert await first == 10
