"""The users table, as the signup jobs change it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class User:
    """One row of ``users``."""

    email: str
    name: str | None
    welcome_email_sent_at: datetime | None
    created_at: datetime
    updated_at: datetime


class UserRepository:
    """Guarded writes to ``users``: running one twice changes nothing the second time."""

    def __init__(self, db: asyncpg.Pool | asyncpg.Connection) -> None:
        self._db = db

    async def upsert(self, *, email: str, name: str) -> bool:
        """Create the user or set its name; True when a row was written."""
        status = await self._db.execute(
            "INSERT INTO users (email, name) VALUES ($1, $2) "
            "ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name, updated_at = now() "
            "WHERE users.name IS DISTINCT FROM EXCLUDED.name",
            email.lower(),
            name,
        )
        return bool(status.endswith(" 1"))

    async def mark_welcome_sent(self, *, email: str) -> bool:
        """Record that the welcome email went out; the first time only. True when written."""
        status = await self._db.execute(
            "INSERT INTO users (email, welcome_email_sent_at) VALUES ($1, now()) "
            "ON CONFLICT (email) DO UPDATE SET welcome_email_sent_at = now(), updated_at = now() "
            "WHERE users.welcome_email_sent_at IS NULL",
            email.lower(),
        )
        return bool(status.endswith(" 1"))

    async def get(self, email: str) -> User | None:
        """The user with this email, or None."""
        row = await self._db.fetchrow(
            "SELECT email, name, welcome_email_sent_at, created_at, updated_at FROM users WHERE email = $1",
            email.lower(),
        )
        return None if row is None else User(**dict(row))
