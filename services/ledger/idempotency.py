"""The ``idempotency_keys`` table: each Idempotency-Key used, with the response its request got.

A row is written once, when its request is answered, in the same statement as the request's jobs
(:func:`services.ledger.insert_jobs` builds it with :func:`insert_keys` and :func:`insert_arguments`): the
key's response and its jobs commit together or not at all. A key is scoped by the API key that
used it (:class:`KeyRecord.scope`). Rows are kept :data:`KEEP_SECONDS`; an expired row is ignored,
may be taken over by a new request, and is deleted by :func:`purge_expired` (a worker cron).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.ledger.executor import Executor

KEEP_SECONDS = 24 * 3600.0
"""How long a key and its response are kept (the README promises 24 hours)."""

PURGE_BATCH = 1000
"""Expired keys deleted per statement by :func:`purge_expired`: each statement's locks stay short."""


@dataclass(frozen=True)
class KeyRecord:
    """An Idempotency-Key and the response its request got, as stored."""

    scope: str
    """SHA-256 (hex) of the API key the request carried; '' when the gateway has no API keys."""
    key: str
    fingerprint: str
    """SHA-256 (hex) of the request's method, path and body: the same key with another request is refused."""
    status: int
    headers: list[tuple[bytes, bytes]]
    """As the app sent them (latin-1)."""
    body: bytes


def insert_arguments(keys: Sequence[KeyRecord]) -> list[Any]:
    """The 7 arguments of :func:`insert_keys` for ``keys``, in its order."""
    return [
        [k.scope for k in keys],
        [k.key for k in keys],
        [k.fingerprint for k in keys],
        [k.status for k in keys],
        [json.dumps([[n.decode("latin-1"), v.decode("latin-1")] for n, v in k.headers]) for k in keys],
        [k.body for k in keys],
        KEEP_SECONDS,
    ]


def insert_keys(first: int) -> str:
    """An INSERT of keys whose 7 arguments start at ``$first``, returning the keys it wrote.

    A key already in the table is left alone (not returned) unless its row expired: then it is
    taken over. A key whose row another transaction is writing waits for that one to end.
    """
    p = [f"${first + i}" for i in range(7)]
    return (
        "INSERT INTO idempotency_keys AS k "
        "(scope, key, fingerprint, response_status, response_headers, response_body) "
        f"SELECT * FROM unnest({p[0]}::text[], {p[1]}::text[], {p[2]}::text[], {p[3]}::int[], "
        f"{p[4]}::jsonb[], {p[5]}::bytea[]) "
        "ON CONFLICT (scope, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
        "response_status = EXCLUDED.response_status, response_headers = EXCLUDED.response_headers, "
        "response_body = EXCLUDED.response_body, created_at = clock_timestamp() "
        f"WHERE k.created_at < clock_timestamp() - make_interval(secs => {p[6]}) "
        "RETURNING k.scope, k.key"
    )


@dataclass(frozen=True)
class Stored:
    """A key's row: which request used it, and the response that request got."""

    fingerprint: str
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


async def look_up(db: Executor, *, scope: str, key: str) -> Stored | None:
    """The unexpired row of ``key`` in ``scope``, or None."""
    row = await db.fetchrow(
        "SELECT fingerprint, response_status, response_headers, response_body FROM idempotency_keys "
        "WHERE scope = $1 AND key = $2 AND created_at >= clock_timestamp() - make_interval(secs => $3)",
        scope,
        key,
        KEEP_SECONDS,
    )
    if row is None:
        return None
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in json.loads(row["response_headers"])]
    return Stored(
        fingerprint=row["fingerprint"], status=row["response_status"], headers=headers, body=row["response_body"]
    )


async def purge_expired(db: Executor, *, keep_seconds: float = KEEP_SECONDS, batch: int = PURGE_BATCH) -> int:
    """Delete every key older than ``keep_seconds``, ``batch`` per statement; return how many.

    Each statement commits on its own, oldest keys first through the ``created_at`` index; the
    loop ends with the first statement that finds fewer than ``batch``, so a call deletes whatever
    expired, however many. A row locked by someone else (a request taking the key over) is skipped.
    """
    purged = 0
    while True:
        deleted = await db.fetchval(
            "WITH doomed AS ("
            "  SELECT scope, key FROM idempotency_keys "
            "  WHERE created_at < clock_timestamp() - make_interval(secs => $1) "
            "  ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED"
            "), gone AS ("
            "  DELETE FROM idempotency_keys k USING doomed d WHERE k.scope = d.scope AND k.key = d.key RETURNING 1"
            ") SELECT count(*) FROM gone",
            keep_seconds,
            batch,
        )
        purged += int(deleted)
        if deleted < batch:
            return purged


@dataclass(frozen=True)
class TableSize:
    """How big the table is: live rows (Postgres' statistics, an estimate) and bytes on disk."""

    rows: int
    bytes: int


async def table_size(db: Executor) -> TableSize:
    """The table's live-row estimate and its total size, indexes and TOAST included; no row is read."""
    row = await db.fetchrow(
        "SELECT coalesce(s.n_live_tup, 0) AS rows, pg_total_relation_size(c.oid) AS bytes "
        "FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
        "WHERE c.oid = 'idempotency_keys'::regclass"
    )
    assert row is not None
    return TableSize(rows=int(row["rows"]), bytes=int(row["bytes"]))
