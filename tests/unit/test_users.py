"""The users repository: guarded writes that change nothing when repeated.

Inside one transaction ``now()`` never moves, so the tests push timestamps into the past first
and then check whether a write touched them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg

from services.jobs.users import UserRepository

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
