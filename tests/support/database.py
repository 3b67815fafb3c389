"""Throwaway Postgres databases on the local server, created and dropped by the tests."""

from __future__ import annotations

import os
import uuid

import asyncpg

from services.ledger.migrate import apply, discover

ADMIN_DSN = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
"""A role on the local server that may create databases (trust auth on this machine and CI)."""


def database_dsn(name: str) -> str:
    """The DSN of database ``name`` on the admin DSN's server."""
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{name}"


async def create_database(prefix: str = "afterword_test", *, name: str | None = None) -> str:
    """Create an empty, migrated database with a unique name (or ``name``); return its DSN."""
    name = name or f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = database_dsn(name)
    conn = await asyncpg.connect(dsn)
    try:
        await apply(conn, discover())
    finally:
        await conn.close()
    return dsn


async def drop_database(dsn: str) -> None:
    """Drop a database made by :func:`create_database`, disconnecting whoever is still on it."""
    name = dsn.rpartition("/")[2]
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
