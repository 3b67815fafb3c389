"""The users table, as the signup jobs change it.

A worker runs several jobs at once; an upsert or welcome stamp written as a statement and a
commit of its own would wait on the others in Postgres, and these two writes are a large part of
a signup job's cost. Concurrent writes of one kind share a statement (``services.core.batching``): one
round trip and one commit per batch. A statement locks its rows in email order, so that two workers'
batches never wait on each other in a cycle; an email named twice in a batch goes into a second
statement after the first, as it would have run after it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import asyncpg

from services.core.batching import Batcher
from services.core.failures import POSTGRES_CONNECTION_LOST


@dataclass(frozen=True)
class User:
    """One row of ``users``."""

    email: str
    name: str | None
    welcome_email_sent_at: datetime | None
    created_at: datetime
    updated_at: datetime


_UPSERT = (
    "INSERT INTO users (email, name) SELECT * FROM unnest($1::text[], $2::text[]) AS u(email, name) ORDER BY email "
    "ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name, updated_at = now() "
    "WHERE users.name IS DISTINCT FROM EXCLUDED.name RETURNING email"
)
_WELCOME_SENT = (
    "INSERT INTO users (email, welcome_email_sent_at) SELECT email, now() FROM unnest($1::text[]) AS u(email) "
    "ORDER BY email "
    "ON CONFLICT (email) DO UPDATE SET welcome_email_sent_at = now(), updated_at = now() "
    "WHERE users.welcome_email_sent_at IS NULL RETURNING email"
)


class UserRepository:
    """Guarded writes to ``users``: running one twice changes nothing the second time."""

    def __init__(self, db: asyncpg.Pool | asyncpg.Connection) -> None:
        self._db = db
        self._upserts: Batcher[tuple[str, str], bool] = Batcher(
            self._upsert_many, fail_together=POSTGRES_CONNECTION_LOST, name="users-upsert"
        )
        self._welcomes: Batcher[tuple[str], bool] = Batcher(
            self._welcome_many, fail_together=POSTGRES_CONNECTION_LOST, name="users-welcome"
        )

    async def upsert(self, *, email: str, name: str) -> bool:
        """Create the user or set its name; True when a row was written."""
        return await self._upserts.submit((email.lower(), name))

    async def mark_welcome_sent(self, *, email: str) -> bool:
        """Record that the welcome email went out; the first time only. True when written."""
        return await self._welcomes.submit((email.lower(),))

    async def _upsert_many(self, items: list[tuple[str, str]]) -> list[bool]:
        return await _each_email_once(items, lambda batch: self._written(_UPSERT, *zip(*batch, strict=True)))

    async def _welcome_many(self, items: list[tuple[str]]) -> list[bool]:
        return await _each_email_once(items, lambda batch: self._written(_WELCOME_SENT, [e for (e,) in batch]))

    async def _written(self, query: str, *columns: Sequence[str]) -> set[str]:
        return {row["email"] for row in await self._db.fetch(query, *(list(column) for column in columns))}

    async def get(self, email: str) -> User | None:
        """The user with this email, or None."""
        row = await self._db.fetchrow(
            "SELECT email, name, welcome_email_sent_at, created_at, updated_at FROM users WHERE email = $1",
            email.lower(),
        )
        return None if row is None else User(**dict(row))


Item = TypeVar("Item", bound=tuple[str, ...])


async def _each_email_once(items: list[Item], write: Callable[[list[Item]], Awaitable[set[str]]]) -> list[bool]:
    """Write ``items`` (email first) in as few statements as no email twice in one allows; per item,
    whether its row was written. A repeated email goes into a later statement, in order."""
    written = [False] * len(items)
    pending = list(enumerate(items))
    while pending:
        batch: dict[str, tuple[int, Item]] = {}
        later = []
        for index, item in pending:
            if item[0] in batch:
                later.append((index, item))
            else:
                batch[item[0]] = (index, item)
        emails = await write([item for _, item in batch.values()])
        for email, (index, _) in batch.items():
            written[index] = email in emails
        pending = later
    return written
