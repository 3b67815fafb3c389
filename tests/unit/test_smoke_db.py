"""The database fixtures work: the schema is migrated and a test's writes are rolled back."""

import asyncpg


async def test_schema_is_migrated(conn: asyncpg.Connection) -> None:
    tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert {"users", "jobs", "job_attempts", "job_effects", "schema_migrations"} <= tables
