"""The live-status hub against a real Postgres: the trigger's notifications, ordering, reconnection.

These tests commit jobs (a notification is only sent on commit), so they use a throwaway database
of their own rather than the session's, which the integration stack's worker sweeps.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services import ledger
from services.contract import JobName, JobStatus
from services.gateway.live.job_events import (
    LISTENER_NAME,
    JobEvents,
    follow,
    next_change,
    wait_until_final,
)
from services.ledger import NewJob, StatusChange
from services.ledger.events import CHANNEL, parse_notification
from tests.support.database import create_database, drop_database
from tests.support.ledger_jobs import finish_attempt, start_attempt


@pytest.fixture(scope="module")
async def events_dsn() -> AsyncIterator[str]:
    dsn = await create_database("afterword_events")
    try:
        yield dsn
    finally:
        await drop_database(dsn)


@pytest.fixture(scope="module")
async def pool(events_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    db = await asyncpg.create_pool(events_dsn, min_size=1, max_size=4)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def hub(events_dsn: str) -> AsyncIterator[JobEvents]:
    events = JobEvents(events_dsn, reconnect_seconds=0.1, poll_seconds=0.2)
    await events.start()
    try:
        assert await events.wait_connected(within=10)
        yield events
    finally:
        await events.stop()


async def _new_job(pool: asyncpg.Pool, status: JobStatus = JobStatus.queued, *, job_id: str | None = None) -> str:
    job = NewJob(
        id=job_id or uuid.uuid4().hex,
        name=JobName.write_log,
        payload={"message": "hello"},
        status=status,
        run_at=datetime.now(UTC),
    )
    await ledger.insert_jobs(pool, [job])
    return job.id


async def _current(pool: asyncpg.Pool, job_id: str) -> StatusChange:
    change = await ledger.status_of(pool, job_id)
    assert change is not None
    return change


def test_parse_reads_the_trigger_payload() -> None:
    change = parse_notification(
        '{"id": "abc", "status": "retrying", "tries": 2, "error": "451", "at": "2026-11-23T19:26:58.302863+00:00"}'
    )

    assert change == StatusChange(
        id="abc",
        status=JobStatus.retrying,
        tries=2,
        error="451",
        at=datetime(2026, 11, 23, 19, 26, 58, 302863, tzinfo=UTC),
    )


async def test_each_committed_status_reaches_the_subscribers_of_that_job_in_order(
    hub: JobEvents, pool: asyncpg.Pool
) -> None:
    job_id = uuid.uuid4().hex
    other = hub.subscribe("someone-else")
    await other.read(pool)
    with hub.subscribe(job_id) as subscription:
        assert await subscription.read(pool) is None, "no such job yet; the watch is registered all the same"
        await _new_job(pool, job_id=job_id)
        started = await start_attempt(pool, job_id=job_id, worker="w1")
        await finish_attempt(pool, job_id=job_id, attempt=started.attempt, status=JobStatus.failed, error="boom")

        changes = [await asyncio.wait_for(subscription.queue.get(), 5) for _ in range(2)]
        await asyncio.sleep(0.2)
        # The INSERT is not announced (migration 0005): nobody can wait on a job before its 202.
        assert subscription.queue.empty()

    assert all(change is not None for change in changes)
    assert [(c.status, c.tries, c.error) for c in changes if c is not None] == [
        (JobStatus.in_progress, 1, None),
        (JobStatus.failed, 1, "boom"),
    ]
    assert [c.at for c in changes if c is not None] == sorted({c.at for c in changes if c is not None})
    assert changes[-1] == await _current(pool, job_id), "the notification says what the ledger says"
    assert other.queue.empty()
    other.close()
    assert hub.subscriber_count == 0


async def test_next_change_skips_a_notification_older_than_what_was_read(hub: JobEvents, pool: asyncpg.Pool) -> None:
    job_id = await _new_job(pool)
    with hub.subscribe(job_id) as subscription:
        await subscription.read(pool)
        await start_attempt(pool, job_id=job_id, worker="w1")
        await asyncio.sleep(0.3)  # its notification is queued by now
        current = await _current(pool, job_id)  # ...and the read shows the same change

        assert await next_change(pool, subscription, current, within=0.5) is None


async def test_wait_until_final_returns_when_the_job_ends(hub: JobEvents, pool: asyncpg.Pool) -> None:
    job_id = await _new_job(pool)

    async def finish_soon() -> None:
        await asyncio.sleep(0.3)
        started = await start_attempt(pool, job_id=job_id, worker="w1")
        await finish_attempt(pool, job_id=job_id, attempt=started.attempt, status=JobStatus.succeeded)

    task = asyncio.create_task(finish_soon())
    await asyncio.wait_for(wait_until_final(pool, hub, job_id, seconds=10), 5)
    await task

    assert (await _current(pool, job_id)).status is JobStatus.succeeded
    assert hub.subscriber_count == 0


async def test_wait_until_final_gives_up_after_its_time(hub: JobEvents, pool: asyncpg.Pool) -> None:
    job_id = await _new_job(pool, JobStatus.deferred)
    loop = asyncio.get_running_loop()
    began = loop.time()

    await wait_until_final(pool, hub, job_id, seconds=0.5)

    assert 0.4 < loop.time() - began < 3
    assert (await _current(pool, job_id)).status is JobStatus.deferred
    await wait_until_final(pool, hub, "no-such-job", seconds=5)  # an unknown job: at once


async def test_follow_yields_every_status_then_stops_and_unsubscribes(hub: JobEvents, pool: asyncpg.Pool) -> None:
    job_id = await _new_job(pool, JobStatus.deferred)
    subscription = hub.subscribe(job_id)
    first = await subscription.read(pool)
    assert first is not None
    seen: list[JobStatus] = []

    async def consume() -> None:
        async for item in follow(pool, subscription, first, keepalive_seconds=0.2):
            if item is not None:
                seen.append(item.status)

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.5)  # a quiet spell or two: keep-alives, not statuses
    started = await start_attempt(pool, job_id=job_id, worker="w1")
    await finish_attempt(pool, job_id=job_id, attempt=started.attempt, status=JobStatus.succeeded)
    await asyncio.wait_for(consumer, 5)

    assert seen == [JobStatus.deferred, JobStatus.in_progress, JobStatus.succeeded]
    assert hub.subscriber_count == 0


async def test_a_cancelled_follower_unsubscribes(hub: JobEvents, pool: asyncpg.Pool) -> None:
    """What happens when an SSE client goes away: Starlette cancels the stream's iteration."""
    job_id = await _new_job(pool)
    subscription = hub.subscribe(job_id)
    first = await subscription.read(pool)
    assert first is not None

    async def consume() -> None:
        async for _ in follow(pool, subscription, first, keepalive_seconds=30):
            pass

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    assert hub.subscriber_count == 1
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer

    assert hub.subscriber_count == 0


async def _kill_listener(pool: asyncpg.Pool) -> None:
    """Terminate the hub's connection from the server side, as a Postgres restart would."""
    await pool.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 "
        "AND datname = current_database()",
        LISTENER_NAME,
    )


async def _until_down(events: JobEvents) -> None:
    for _ in range(200):
        if not events.connected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the hub did not notice that its connection was lost")


async def test_while_the_listener_is_down_waiters_read_the_ledger(events_dsn: str, pool: asyncpg.Pool) -> None:
    events = JobEvents(events_dsn, reconnect_seconds=60, poll_seconds=0.2)  # stays down during the test
    await events.start()
    try:
        assert await events.wait_connected(within=10)
        job_id = await _new_job(pool)
        with events.subscribe(job_id) as subscription:
            last = await subscription.read(pool)
            assert last is not None
            await _kill_listener(pool)
            await _until_down(events)

            await start_attempt(pool, job_id=job_id, worker="w1")  # nobody hears of it
            change = await next_change(pool, subscription, last, within=3)

        assert change is not None
        assert change.status is JobStatus.in_progress
    finally:
        await events.stop()


async def test_the_hub_reconnects_after_losing_its_connection(hub: JobEvents, pool: asyncpg.Pool) -> None:
    job_id = await _new_job(pool)
    with hub.subscribe(job_id) as subscription:
        last = await subscription.read(pool)
        await _kill_listener(pool)
        await _until_down(hub)
        assert await hub.wait_connected(within=10)
        resyncs = []
        while not subscription.queue.empty():
            resyncs.append(subscription.queue.get_nowait())
        assert resyncs == [None, None], "a resync when the connection was lost, one when it came back"
        # What a waiter does on a resync: read the job, which registers its watch under the new pid
        # (the new connection's first sweep deleted the one of the old, terminated, connection).
        assert await subscription.read(pool) == last
        hub.poll_seconds = 60  # from here on only a notification can bring the change in time

        await start_attempt(pool, job_id=job_id, worker="w1")
        change = await asyncio.wait_for(subscription.queue.get(), 5)

    assert change is not None
    assert last is not None
    assert change.status is JobStatus.in_progress
    assert change.at > last.at


async def test_a_stale_job_row_counts_as_no_change(hub: JobEvents, pool: asyncpg.Pool) -> None:
    job_id = await _new_job(pool)
    current = await _current(pool, job_id)
    newer = StatusChange(job_id, JobStatus.queued, 0, None, current.at + timedelta(hours=1))
    with hub.subscribe(job_id) as subscription:
        subscription.queue.put_nowait(None)  # a resync: the ledger is read, and is older than `newer`
        assert await next_change(pool, subscription, newer, within=0.3) is None


# --- Only watched jobs are announced (migration 0008) -------------------------------------------


@pytest.fixture
async def heard(events_dsn: str) -> AsyncIterator[list[StatusChange]]:
    """Every notification on the channel, from a listening connection of the test's own."""
    changes: list[StatusChange] = []
    connection = await asyncpg.connect(events_dsn)
    await connection.add_listener(CHANNEL, lambda *args: changes.append(parse_notification(str(args[-1]))))
    try:
        yield changes
    finally:
        await connection.close()


async def _until_heard(heard: list[StatusChange], count: int) -> None:
    """Wait (up to 5 s) until ``count`` notifications came, then a moment more for any unexpected one."""
    for _ in range(250):
        if len(heard) >= count:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)


async def _watches(pool: asyncpg.Pool, job_id: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM job_watchers WHERE job_id = $1", job_id))


async def _until_watches(pool: asyncpg.Pool, job_id: str, count: int) -> int:
    """Wait (up to 5 s) until the job has ``count`` watches; return how many it has."""
    for _ in range(100):
        if await _watches(pool, job_id) == count:
            break
        await asyncio.sleep(0.05)
    return await _watches(pool, job_id)


async def test_only_the_changes_of_watched_jobs_are_announced(
    hub: JobEvents, pool: asyncpg.Pool, heard: list[StatusChange]
) -> None:
    watched, unwatched = await _new_job(pool), await _new_job(pool)
    with hub.subscribe(watched) as subscription:
        await subscription.read(pool)
        assert await _watches(pool, watched) == 1
        for job_id in (unwatched, watched):
            started = await start_attempt(pool, job_id=job_id, worker="w1")
            await finish_attempt(pool, job_id=job_id, attempt=started.attempt, status=JobStatus.succeeded)
        await _until_heard(heard, 2)

    assert [(c.id, c.status) for c in heard] == [(watched, JobStatus.in_progress), (watched, JobStatus.succeeded)]


async def test_the_changes_of_one_statement_are_announced_in_the_order_they_were_written(
    hub: JobEvents, pool: asyncpg.Pool, heard: list[StatusChange]
) -> None:
    jobs = [await _new_job(pool) for _ in range(8)]
    subscriptions = [hub.subscribe(job_id) for job_id in jobs]
    for subscription in subscriptions:
        await subscription.read(pool)
    starts = [await start_attempt(pool, job_id=job_id, worker="w1") for job_id in jobs]
    await _until_heard(heard, len(jobs))
    heard.clear()

    finishes = [
        ledger.Finish(job_id, started.attempt, JobStatus.failed, error=f"boom {job_id}")
        for job_id, started in zip(reversed(jobs), reversed(starts), strict=True)
    ]
    await ledger.keep_books(pool, finishes=finishes)  # one UPDATE of eight rows
    await _until_heard(heard, len(jobs))
    for subscription in subscriptions:
        subscription.close()

    assert sorted(c.id for c in heard) == sorted(jobs)
    assert all(c.status is JobStatus.failed and c.error == f"boom {c.id}" for c in heard)
    assert [c.at for c in heard] == sorted(c.at for c in heard)


async def test_a_closed_subscription_deletes_its_watch(hub: JobEvents, pool: asyncpg.Pool) -> None:
    job_id = await _new_job(pool)
    first, second = hub.subscribe(job_id), hub.subscribe(job_id)
    await first.read(pool)
    await second.read(pool)
    assert await _watches(pool, job_id) == 2

    first.close()
    assert await _until_watches(pool, job_id, 1) == 1, "the other waiter of the same job keeps its watch"

    second.close()
    assert await _until_watches(pool, job_id, 0) == 0


async def test_the_watches_of_a_listener_that_is_gone_are_deleted(events_dsn: str, pool: asyncpg.Pool) -> None:
    job_id = await _new_job(pool)
    gone = await asyncpg.connect(events_dsn)
    gone_pid = gone.get_server_pid()
    await gone.close()
    await pool.execute(
        "INSERT INTO job_watchers (watch_id, job_id, listener_pid) VALUES ('left', $1, $2)", job_id, gone_pid
    )
    events = JobEvents(events_dsn, reconnect_seconds=0.1, poll_seconds=0.2, check_seconds=0.2)
    await events.start()
    try:
        assert await events.wait_connected(within=10)
        with events.subscribe(job_id) as subscription:
            await subscription.read(pool)
            await _until_watches(pool, job_id, 1)
            await asyncio.sleep(0.5)  # more sweeps: the live watch stays

            rows = await pool.fetch("SELECT watch_id, listener_pid FROM job_watchers WHERE job_id = $1", job_id)
        assert [(r["watch_id"], r["listener_pid"]) for r in rows] == [(subscription.watch_id, events.listener_pid)]
    finally:
        await events.stop()


async def test_the_read_waits_for_a_change_that_did_not_see_the_watch(hub: JobEvents, pool: asyncpg.Pool) -> None:
    """A writer whose trigger ran before the watch was registered is not announced; the read shows it."""
    job_id = await _new_job(pool)
    async with pool.acquire() as writer, writer.transaction():
        await writer.execute(
            "UPDATE jobs SET status = 'in_progress', updated_at = clock_timestamp() WHERE id = $1", job_id
        )
        # The UPDATE's trigger found no watch. A plain read shows the committed status...
        assert (await _current(pool, job_id)).status is JobStatus.queued
        subscription = hub.subscribe(job_id)
        read = asyncio.create_task(subscription.read(pool))
        await asyncio.sleep(0.3)
        assert not read.done(), "...and the read that registers the watch waits for the writer's commit"
    change = await asyncio.wait_for(read, 5)
    subscription.close()

    assert change is not None
    assert change.status is JobStatus.in_progress


async def test_a_listening_connection_out_of_step_is_a_lost_connection(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # asyncpg's InternalClientError ("cannot switch to state 11", seen when Postgres stops while a
    # statement waits on a lock) is a connection failure like any other: one warning for the
    # streak, then reconnection, not an error with its traceback at every attempt.
    events = JobEvents("postgresql://unused", reconnect_seconds=0.01)
    attempts = 0
    reconnected = asyncio.Event()

    async def listen(failures: int) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 2:
            raise asyncpg.InternalClientError("cannot switch to state 11; another operation (2) is in progress")
        reconnected.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(events, "_listen", listen)
    with caplog.at_level(logging.INFO, logger="afterword.gateway.events"):
        await events.start()
        try:
            await asyncio.wait_for(reconnected.wait(), 5)
        finally:
            await events.stop()

    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "afterword.gateway.events"]
    assert records == [
        (logging.WARNING, "job status listener cannot reach Postgres, retrying every 0 s: InternalClientError")
    ]
