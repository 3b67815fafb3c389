"""The advisory locks that mark Idempotency-Keys in use, on the session's database.

Each :class:`KeyLocks` stands for one gateway process; two of them are two gateways.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.gateway.middleware.idempotency_locks import KeyLocks, lock_id
from tests.support.ports import free_port


@pytest.fixture
async def gateways(database_dsn: str) -> AsyncIterator[tuple[KeyLocks, KeyLocks]]:
    """Two gateways' lock sessions."""
    one, two = KeyLocks(database_dsn), KeyLocks(database_dsn)
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()


def new_lock() -> int:
    return lock_id("", f"key-{uuid.uuid4()}")


async def session_of(db: asyncpg.Pool, lock: int) -> int | None:
    """The pid of the backend that holds ``lock``, or None."""
    pid: int | None = await db.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND ((classid::bigint << 32) | objid::bigint) = $1",
        lock,
    )
    return pid


async def wait_free(db: asyncpg.Pool, lock: int) -> None:
    for _ in range(100):
        if await session_of(db, lock) is None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the lock was not dropped")


def test_a_key_gets_one_lock_per_scope() -> None:
    assert lock_id("", "k") == lock_id("", "k")
    assert lock_id("", "k") != lock_id("a" * 64, "k")
    assert lock_id("", "k") != lock_id("", "k2")
    assert -(2**63) <= lock_id("", "k") < 2**63


async def test_a_held_key_is_refused_here_and_on_another_gateway(gateways: tuple[KeyLocks, KeyLocks]) -> None:
    one, two = gateways
    lock = new_lock()

    assert await one.acquire(lock)
    assert not await one.acquire(lock), "the same gateway: a session may take its own lock again, so it must say no"
    assert not await two.acquire(lock)

    await one.release(lock)
    assert await two.acquire(lock)
    assert not await one.acquire(lock)
    await two.release(lock)


async def test_concurrent_requests_share_batches_and_one_wins_each_key(gateways: tuple[KeyLocks, KeyLocks]) -> None:
    one, two = gateways
    locks = [new_lock() for _ in range(50)]

    taken = await asyncio.gather(*(gateway.acquire(lock) for lock in locks for gateway in (one, two, one)))

    assert [sum(taken[i : i + 3]) for i in range(0, len(taken), 3)] == [1] * len(locks)
    await asyncio.gather(*(one.release(lock) for lock in locks), *(two.release(lock) for lock in locks))
    assert all(await asyncio.gather(*(two.acquire(lock) for lock in locks)))


async def test_a_dead_gateways_keys_are_free_at_once(
    gateways: tuple[KeyLocks, KeyLocks], db_pool: asyncpg.Pool
) -> None:
    one, two = gateways
    lock = new_lock()
    assert await one.acquire(lock)
    pid = await session_of(db_pool, lock)
    assert pid is not None

    # The gateway dies: its session ends (here killed from outside, as Postgres ends the session
    # of a client whose connection closed).
    await db_pool.execute("SELECT pg_terminate_backend($1)", pid)
    await wait_free(db_pool, lock)

    assert await two.acquire(lock)


async def test_a_lost_session_is_replaced_without_failing_a_request(
    gateways: tuple[KeyLocks, KeyLocks], db_pool: asyncpg.Pool
) -> None:
    one, _ = gateways
    held = new_lock()
    assert await one.acquire(held)
    pid = await session_of(db_pool, held)
    await db_pool.execute("SELECT pg_terminate_backend($1)", pid)
    await wait_free(db_pool, held)

    fresh = new_lock()
    assert await one.acquire(fresh)
    assert await session_of(db_pool, fresh) not in (None, pid)
    await one.release(held)  # held by the lost session: nothing to give back, and no error
    await one.release(fresh)
    assert await session_of(db_pool, fresh) is None


async def test_a_cancelled_acquire_gives_the_lock_back(gateways: tuple[KeyLocks, KeyLocks]) -> None:
    """The request is cancelled while its lock is being taken: the statement runs all the same,
    and the lock it takes must not stay held by the gateway's session for ever."""
    one, two = gateways
    lock, later = new_lock(), new_lock()

    acquiring = asyncio.create_task(one.acquire(lock))
    await asyncio.sleep(0)  # its statement is on its way
    acquiring.cancel()
    with pytest.raises(asyncio.CancelledError):
        await acquiring
    # The gateway's statements run in the order they were asked: once a later one is done, so
    # is the cancelled take, and whatever followed it.
    assert await one.acquire(later)

    assert await two.acquire(lock), "the cancelled request's lock is still held"
    await two.release(lock)
    assert await one.acquire(lock)
    await one.release(lock)
    await one.release(later)


async def test_closing_gives_every_lock_back(gateways: tuple[KeyLocks, KeyLocks], db_pool: asyncpg.Pool) -> None:
    one, two = gateways
    locks = [new_lock() for _ in range(3)]
    assert all(await asyncio.gather(*(one.acquire(lock) for lock in locks)))

    await one.close()

    for lock in locks:
        await wait_free(db_pool, lock)
        assert await two.acquire(lock)


async def test_postgres_away_fails_the_acquire(database_dsn: str) -> None:
    nowhere = database_dsn.replace(database_dsn.split("@")[1].split("/")[0], f"127.0.0.1:{free_port()}")
    locks = KeyLocks(nowhere, connect_timeout=2)
    lock = new_lock()
    try:
        with pytest.raises(OSError):
            await locks.acquire(lock)
        with pytest.raises(OSError):
            await locks.acquire(lock)  # not left marked as held after the failure
    finally:
        await locks.close()
