"""The users repository: guarded writes that change nothing when repeated.

Inside one transaction ``now()`` never moves, so the tests push timestamps into the past first
and then check whether a write touched them.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg

from services.jobs.effects.users import UserRepository

PAST = datetime(2000, 1, 1, tzinfo=UTC)


def _email() -> str:
    return f"User-{uuid.uuid4().hex}@Example.COM"


async def _age(conn: asyncpg.Connection, email: str) -> None:
    """Move the row's timestamps into the past, so that a later write shows."""
    await conn.execute(
        "UPDATE users SET created_at = $2::timestamptz, updated_at = $2::timestamptz, "
        "welcome_email_sent_at = CASE WHEN welcome_email_sent_at IS NULL THEN NULL ELSE $2::timestamptz END "
        "WHERE email = $1",
        email.lower(),
        PAST,
    )


async def test_upsert_creates_the_row_with_a_lower_cased_email(conn: asyncpg.Connection) -> None:
    users = UserRepository(conn)
    email = _email()

    assert await users.upsert(email=email, name="Ada Lovelace") is True

    user = await users.get(email)
    assert user is not None
    assert user.email == email.lower()
    assert user.name == "Ada Lovelace"
    assert user.welcome_email_sent_at is None
    assert await conn.fetchval("SELECT count(*) FROM users WHERE lower(email) = lower($1)", email) == 1
    assert await conn.fetchval("SELECT email FROM users WHERE email = $1", email.lower()) == email.lower()


async def test_get_is_case_insensitive_and_none_for_unknown(conn: asyncpg.Connection) -> None:
    users = UserRepository(conn)
    email = _email()
    await users.upsert(email=email, name="Ada")

    assert await users.get(email.upper()) is not None
    assert await users.get(_email()) is None


async def test_upsert_with_the_same_name_changes_nothing(conn: asyncpg.Connection) -> None:
    users = UserRepository(conn)
    email = _email()
    await users.upsert(email=email, name="Ada")
    await _age(conn, email)

    assert await users.upsert(email=email.upper(), name="Ada") is False

    user = await users.get(email)
    assert user is not None
    assert user.name == "Ada"
    assert user.updated_at == PAST
    assert user.created_at == PAST


async def test_upsert_with_a_new_name_updates_it(conn: asyncpg.Connection) -> None:
    users = UserRepository(conn)
    email = _email()
    await users.upsert(email=email, name="Ada")
    await _age(conn, email)

    assert await users.upsert(email=email, name="Ada King") is True

    user = await users.get(email)
    assert user is not None
    assert user.name == "Ada King"
    assert user.updated_at > PAST
    assert user.created_at == PAST
    assert await conn.fetchval("SELECT count(*) FROM users WHERE email = $1", email.lower()) == 1


async def test_mark_welcome_sent_the_first_time_only(conn: asyncpg.Connection) -> None:
    users = UserRepository(conn)
    email = _email()
    await users.upsert(email=email, name="Ada")

    assert await users.mark_welcome_sent(email=email) is True
    first = await users.get(email)
    assert first is not None
    assert first.welcome_email_sent_at is not None
    await _age(conn, email)

    assert await users.mark_welcome_sent(email=email.upper()) is False

    second = await users.get(email)
    assert second is not None
    assert second.welcome_email_sent_at == PAST
    assert second.updated_at == PAST
    assert second.name == "Ada"


async def test_mark_welcome_sent_before_upsert_creates_the_row(conn: asyncpg.Connection) -> None:
    users = UserRepository(conn)
    email = _email()

    assert await users.mark_welcome_sent(email=email) is True

    created = await users.get(email)
    assert created is not None
    assert created.email == email.lower()
    assert created.name is None
    assert created.welcome_email_sent_at is not None
    await _age(conn, email)

    assert await users.upsert(email=email, name="Ada") is True

    user = await users.get(email)
    assert user is not None
    assert user.name == "Ada"
    assert user.welcome_email_sent_at == PAST
    assert user.updated_at > PAST


async def test_writes_of_one_user_leave_others_alone(conn: asyncpg.Connection) -> None:
    users = UserRepository(conn)
    ada, grace = _email(), _email()
    await users.upsert(email=ada, name="Ada")
    await users.upsert(email=grace, name="Grace")

    await users.mark_welcome_sent(email=ada)
    await users.upsert(email=ada, name="Ada King")

    other = await users.get(grace)
    assert other is not None
    assert other.name == "Grace"
    assert other.welcome_email_sent_at is None


# Concurrent writes share a statement (services.core.batching): each caller still gets its own answer.


async def test_concurrent_upserts_each_get_their_own_answer(conn: asyncpg.Connection) -> None:
    users = UserRepository(conn)
    known = [_email() for _ in range(5)]
    for email in known:
        await users.upsert(email=email, name="Same")
    new = [_email() for _ in range(5)]

    answers = await asyncio.gather(
        *(users.upsert(email=email, name="Same") for email in known),  # unchanged
        *(users.upsert(email=email, name=f"New {i}") for i, email in enumerate(new)),
        users.upsert(email=known[0].upper(), name="Renamed"),  # the same user again, in the same batch
    )

    assert answers == [False] * 5 + [True] * 5 + [True]
    names = {u: (await users.get(u)).name for u in [*known, *new]}  # type: ignore[union-attr]
    assert names[known[0]] == "Renamed"  # the later write of one email wins, as one after the other
    assert [names[email] for email in known[1:]] == ["Same"] * 4
    assert [names[email] for email in new] == [f"New {i}" for i in range(5)]


async def test_the_same_email_twice_in_one_batch_is_written_once_then_found_done(conn: asyncpg.Connection) -> None:
    users = UserRepository(conn)
    email = _email()

    upserts = await asyncio.gather(users.upsert(email=email, name="Ada"), users.upsert(email=email, name="Ada"))
    welcomes = await asyncio.gather(users.mark_welcome_sent(email=email), users.mark_welcome_sent(email=email))

    assert list(upserts) == [True, False]
    assert list(welcomes) == [True, False]
    assert await conn.fetchval("SELECT count(*) FROM users WHERE email = $1", email.lower()) == 1


async def test_two_workers_writing_the_same_users_in_opposite_orders_never_deadlock(database_dsn: str) -> None:
    # Each batch locks its rows in email order: two workers' batches cannot wait on each other in a cycle.
    deadlocks = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    before = await _fetchval(database_dsn, deadlocks)
    pools = [await asyncpg.create_pool(database_dsn, min_size=1, max_size=2) for _ in range(2)]
    emails = sorted(_email().lower() for _ in range(30))
    try:
        first, second = UserRepository(pools[0]), UserRepository(pools[1])
        for round_ in range(20):
            await asyncio.gather(
                *(first.upsert(email=email, name=f"a{round_}") for email in emails),
                *(second.upsert(email=email, name=f"b{round_}") for email in reversed(emails)),
                *(first.mark_welcome_sent(email=email) for email in reversed(emails)),
                *(second.mark_welcome_sent(email=email) for email in emails),
            )
        written = await pools[0].fetchval(
            "SELECT count(*) FROM users WHERE email = ANY($1::text[]) AND welcome_email_sent_at IS NOT NULL", emails
        )
    finally:
        await pools[0].execute("DELETE FROM users WHERE email = ANY($1::text[])", emails)
        for pool in pools:
            await pool.close()  # their server processes report their statistics as they exit
    await asyncio.sleep(0.5)
    after = await _fetchval(database_dsn, deadlocks)

    assert written == len(emails)
    assert after == before, "a deadlock was detected (and the batch written again one by one)"


async def _fetchval(dsn: str, query: str) -> object:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(query)
    finally:
        await connection.close()
