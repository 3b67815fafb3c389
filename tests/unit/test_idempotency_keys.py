"""The Idempotency-Key table: keys written with their request's jobs, looked up, purged, measured.

Each test runs in the rolled-back ``conn``.
"""

from __future__ import annotations

import uuid

import asyncpg

from services import ledger
from services.ledger import idempotency as idempotency_keys
from services.ledger.idempotency import KeyRecord
from tests.support.ledger_jobs import new_job


def record(key: str | None = None, *, scope: str = "", fingerprint: str = "f" * 64, status: int = 202) -> KeyRecord:
    return KeyRecord(
        scope=scope,
        key=key or f"key-{uuid.uuid4()}",
        fingerprint=fingerprint,
        status=status,
        headers=[(b"content-type", b"application/json"), (b"x-odd", "é".encode("latin-1"))],
        body=b'{"ok": true}',
    )


async def job_ids(conn: asyncpg.Connection, ids: list[str]) -> set[str]:
    rows = await conn.fetch("SELECT id FROM jobs WHERE id = ANY($1::text[])", ids)
    return {row["id"] for row in rows}


async def insert_aged(conn: asyncpg.Connection, prefix: str, *, count: int, age: str) -> None:
    """Insert keys ``<prefix>-1`` to ``<prefix>-<count>``, recorded ``age`` ago."""
    await conn.execute(
        "INSERT INTO idempotency_keys (scope, key, fingerprint, response_status, response_headers, response_body, "
        "created_at) SELECT '', $1 || '-' || n, 'f', 202, '[]', '', clock_timestamp() - $2::text::interval "
        "FROM generate_series(1, $3) AS n",
        prefix,
        age,
        count,
    )


async def test_a_key_is_written_with_its_jobs_and_read_back(conn: asyncpg.Connection) -> None:
    key, jobs = record(), [new_job(), new_job()]

    assert await ledger.insert_jobs(conn, [], keyed=[(key, jobs)]) == [True]

    assert await job_ids(conn, [j.id for j in jobs]) == {j.id for j in jobs}
    stored = await idempotency_keys.look_up(conn, scope=key.scope, key=key.key)
    assert stored == idempotency_keys.Stored(
        fingerprint=key.fingerprint, status=202, headers=key.headers, body=key.body
    )


async def test_a_key_already_recorded_writes_neither_itself_nor_its_jobs(conn: asyncpg.Connection) -> None:
    first, again = record(), [new_job()]
    await ledger.insert_jobs(conn, [], keyed=[(first, [new_job()])])
    plain, other = new_job(), record()
    second = KeyRecord(first.scope, first.key, "0" * 64, 422, [], b"{}")

    written = await ledger.insert_jobs(conn, [plain], keyed=[(second, again), (other, [])])

    assert written == [False, True]
    assert await job_ids(conn, [plain.id, again[0].id]) == {plain.id}
    stored = await idempotency_keys.look_up(conn, scope=first.scope, key=first.key)
    assert stored is not None
    assert stored.fingerprint == first.fingerprint, "the first request's answer stands"
    assert await idempotency_keys.look_up(conn, scope=other.scope, key=other.key) is not None


async def test_the_same_key_in_another_scope_is_another_key(conn: asyncpg.Connection) -> None:
    shared = f"key-{uuid.uuid4()}"
    one, two = record(shared, scope="a" * 64), record(shared, scope="b" * 64)

    assert await ledger.insert_jobs(conn, [], keyed=[(one, [new_job()]), (two, [new_job()])]) == [True, True]
    assert await idempotency_keys.look_up(conn, scope="", key=shared) is None


async def test_an_expired_key_is_not_found_and_is_taken_over(conn: asyncpg.Connection) -> None:
    old = record()
    await ledger.insert_jobs(conn, [], keyed=[(old, [])])
    await conn.execute(
        "UPDATE idempotency_keys SET created_at = created_at - interval '24 hours 1 minute' WHERE key = $1", old.key
    )
    assert await idempotency_keys.look_up(conn, scope=old.scope, key=old.key) is None

    new, jobs = KeyRecord(old.scope, old.key, "1" * 64, 202, [], b"new"), [new_job()]
    assert await ledger.insert_jobs(conn, [], keyed=[(new, jobs)]) == [True]

    stored = await idempotency_keys.look_up(conn, scope=old.scope, key=old.key)
    assert stored is not None
    assert (stored.fingerprint, stored.body) == (new.fingerprint, b"new")
    assert await job_ids(conn, [jobs[0].id]) == {jobs[0].id}


async def test_the_purge_deletes_every_expired_key_in_one_run_and_keeps_the_young(conn: asyncpg.Connection) -> None:
    prefix = f"purge-{uuid.uuid4()}"
    # 2,500 expired keys (more than one batch), 5 a minute short of 24 hours, 5 new ones.
    await insert_aged(conn, f"{prefix}-expired", count=2500, age="24 hours 1 second")
    await insert_aged(conn, f"{prefix}-almost", count=5, age="23 hours 59 minutes")
    await insert_aged(conn, f"{prefix}-new", count=5, age="0 seconds")

    purged = await idempotency_keys.purge_expired(conn)

    assert purged >= 2500
    left = await conn.fetch("SELECT key FROM idempotency_keys WHERE key LIKE $1 || '%' ORDER BY key", prefix)
    assert sorted(row["key"] for row in left) == sorted(
        [f"{prefix}-almost-{n}" for n in range(1, 6)] + [f"{prefix}-new-{n}" for n in range(1, 6)]
    )


async def test_the_table_size_is_read_from_the_catalog(conn: asyncpg.Connection) -> None:
    size = await idempotency_keys.table_size(conn)

    assert size.rows >= 0
    assert size.bytes > 0
