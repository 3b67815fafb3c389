"""Rewrite ``migrations/schema.sql``, the current schema in one file: ``python -m services.ledger.schema_dump``.

The file holds what a database migrated from zero contains: tables, indexes, constraints,
functions and triggers, as ``pg_dump --schema-only --no-owner --no-privileges`` prints them.
That includes the migrator's own ``schema_migrations`` table: every migrated database has it, so
the file lists the tables a real one shows, and a change to the migrator's table shows here too.
Lines that differ between pg_dump versions or runs are left out (its comments and version lines,
its ``SET`` statements, its ``\\restrict`` keys), so the file changes only when the schema does.
It is for reading and for review, where a migration's effect shows as a diff of this file;
databases are built by the migrations, never by loading it. ``tests/unit/test_schema_file.py``
fails when the file and the migrations disagree.

The throwaway database is created on the server of ``DATABASE_URL`` and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from services.core.settings import Settings, load_settings
from services.ledger.migrate import MIGRATIONS_DIR, SCHEMA_FILE_NAME, Migration, MigrationError, apply, discover

SCHEMA_FILE = MIGRATIONS_DIR / SCHEMA_FILE_NAME
PG_DUMP_SECONDS = 60.0
"""How long pg_dump may run before the dump is abandoned."""

_DROPPED_LINE = re.compile(
    r"--"  # the blank comment lines around each of pg_dump's headings
    r"|-- (?:Name|Dumped from|Dumped by|PostgreSQL database dump|TOC entry|Started on|Completed on)\b.*"
    r"|SET [a-z_]+ = .*;"
    r"|SELECT pg_catalog\.set_config\('search_path', '', false\);"
    r"|\\(?:un)?restrict .*"  # a random key per run
)
"""pg_dump's lines that vary by version or run, or only set up its own session."""


class SchemaDumpError(Exception):
    """The schema cannot be dumped: pg_dump is missing or failed."""


def find_pg_dump() -> str | None:
    """The ``pg_dump`` on ``PATH``, or None when PostgreSQL's client tools are not installed."""
    return shutil.which("pg_dump")


def normalise(dump: str) -> str:
    """``dump`` (pg_dump's output) without the lines that vary, objects one blank line apart."""
    kept = "\n".join(line for line in dump.splitlines() if not _DROPPED_LINE.fullmatch(line))
    return re.sub(r"\n{3,}", "\n\n", kept).strip() + "\n"


def header(migrations: list[Migration]) -> str:
    """The comment that opens the schema file: what it is, what built it, how to rewrite it."""
    built_by = f"migrations {migrations[0].version} to {migrations[-1].version}" if migrations else "no migrations"
    return (
        f"-- The current schema: what {built_by} build in an empty database, as pg_dump prints it.\n"
        "-- Written by `make schema` (python -m services.ledger.schema_dump); do not edit it by hand.\n"
        "-- For reading and review only: databases are built by the migrations (make migrate).\n\n"
    )


def _without_password(dsn: str) -> tuple[str, str | None]:
    """``dsn`` without its password (kept out of pg_dump's command line), and the password."""
    parts = urlsplit(dsn)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not at or not colon:
        return dsn, None
    return urlunsplit(parts._replace(netloc=f"{user}@{hosts}")), unquote(password)


def _with_database(dsn: str, database: str) -> str:
    """``dsn`` naming ``database`` instead of its own."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


async def dump(dsn: str, *, pg_dump: str) -> str:
    """The normalised schema-only dump of the database at ``dsn``."""
    target, password = _without_password(dsn)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    process = await asyncio.create_subprocess_exec(
        pg_dump,
        "--schema-only",
        "--no-owner",
        "--no-privileges",
        f"--dbname={target}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), PG_DUMP_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise SchemaDumpError(f"pg_dump did not finish within {PG_DUMP_SECONDS:.0f} s") from None
    if process.returncode != 0:
        raise SchemaDumpError(f"pg_dump failed: {err.decode(errors='replace').strip()}")
    return normalise(out.decode())


async def render(dsn: str, migrations: list[Migration], *, pg_dump: str) -> str:
    """The schema file's text for the database at ``dsn``, which ``migrations`` built."""
    return header(migrations) + await dump(dsn, pg_dump=pg_dump)


async def build(settings: Settings, directory: Path = MIGRATIONS_DIR) -> str:
    """Migrate a throwaway database from zero on ``settings``' server and return its schema file text."""
    migrations = discover(directory)
    pg_dump = find_pg_dump()
    if pg_dump is None:
        raise SchemaDumpError("pg_dump is not installed; install PostgreSQL's client tools (postgresql-client)")
    name = f"afterword_schema_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(settings.database_dsn, database="postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            dsn = _with_database(settings.database_dsn, name)
            conn = await asyncpg.connect(dsn)
            try:
                await apply(conn, migrations)
            finally:
                await conn.close()
            return await render(dsn, migrations, pg_dump=pg_dump)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def main() -> None:
    """Entry point of ``make schema``."""
    settings = load_settings()
    try:
        text = asyncio.run(build(settings))
    except OSError as exc:
        sys.stderr.write(f"schema: cannot reach the Postgres server of DATABASE_URL: {exc}\n")
        raise SystemExit(1) from None
    except (SchemaDumpError, MigrationError, asyncpg.PostgresError) as exc:
        sys.stderr.write(f"schema: {exc}\n")
        raise SystemExit(1) from None
    shown = SCHEMA_FILE.relative_to(MIGRATIONS_DIR.parent)
    if SCHEMA_FILE.exists() and SCHEMA_FILE.read_text("utf-8") == text:
        print(f"schema: {shown} is up to date")
        return
    SCHEMA_FILE.write_text(text, "utf-8")
    print(f"schema: wrote {shown}")


if __name__ == "__main__":
    main()
