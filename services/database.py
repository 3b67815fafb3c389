"""The Postgres connection pools of both services.

asyncpg's pool runs a reset query (``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
RESET ALL``) every time a connection goes back to the pool: one more round trip per use, which
the bench measured as the largest single cost after the queries themselves. Our code leaves no
session state behind (no ``SET``, ``LISTEN``, advisory lock or cursor outside a transaction; the
gateway's LISTEN has a connection of its own), so :func:`create_pool` skips that query. asyncpg
still rolls back a transaction left open on a connection before it is reused.
"""

from __future__ import annotations

from typing import Any

import asyncpg


async def _nothing_to_reset(connection: asyncpg.Connection) -> None:
    """asyncpg's own clean-up (ending an open transaction) has run; there is nothing else to undo."""


async def create_pool(dsn: str, **options: Any) -> asyncpg.Pool:
    """An asyncpg pool on ``dsn`` (``options`` as for ``asyncpg.create_pool``) without the reset query."""
    pool: asyncpg.Pool = await asyncpg.create_pool(dsn, reset=_nothing_to_reset, **options)
    return pool
