"""Apply ``migrations/NNNN_name.sql`` in order: ``python -m services.ledger.migrate``.

Each file runs in its own transaction under a Postgres advisory lock, so two migrators never
race, and is recorded with its SHA-256. A file that changed after it was applied is refused,
except for the comment-only rewordings listed in ``REWORDED``. The target database is created
first when it does not exist yet. Afterwards the contract's jobs are written into ``job_kinds``
(the names ``afterword_enqueue`` accepts). ``migrations/schema.sql`` is no migration: it shows the schema
the migrations build (``python -m services.ledger.schema_dump`` rewrites it), and is never applied.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from services.core.settings import Settings, load_settings
from services.ledger import job_kinds

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
_LOCK_KEY = 0x61667477  # "aftw": one advisory lock for every migrator of this schema
_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
SCHEMA_FILE_NAME = "schema.sql"
"""The current schema beside the migrations, which :func:`discover` leaves out."""


REWORDED: dict[str, frozenset[str]] = {
    "0002": frozenset({"1d83c7dbd349c4bc0a43243d1a04d9a7cfed9b269acc06b1cee6c0717f6c21c6"}),
    "0003": frozenset({"a9b1ae6c38950a75456def7a57ff33c8119bfd37a295de5ab8e0a8a51da941d4"}),
    "0004": frozenset({"ada14a62a3af3eeae1561f490f43551c20631624e69447ab5f90e5976437748e"}),
    "0006": frozenset({"db6b06bdecf37073da9c098784ac0d757ee584b34d2e04b462697021f16ee474"}),
    "0007": frozenset(
        {
            "93fc65c7f5c37513fb5fec89b3e7ce2e022d0dc31f1ef4057a213b1895585007",
            "ebd3719b84fb177a54bf204994558eb9fb5b985a772d0ebbfc6857d8e6fadae5",
        }
    ),
    "0008": frozenset({"14e3025cd08af09fb4c20bd5fc1bb1ef4d05f1afd8af421da493b71f81d13dd5"}),
    "0009": frozenset(
        {
            "65dff8c72237a99879cff05acbbfce5b0a25a4f4d771b64ec231b47632dc7f73",
            "688bab23ce1a5b93f72f7f98349b1b6d9bd331666509d464ba602307be4e20ba",
        }
    ),
    "0010": frozenset({"dfc3445aa5df622d484c6941b1c64a27d6e1a74facf33b6f84216dfb7c5675fe"}),
    "0011": frozenset({"4cfd08daa9493d77d3906bdd046d026706aa82e73895ab92286b1a3bda190a28"}),
}
"""Earlier checksums of files whose comments were reworded after they were applied, by version.

Their statements are unchanged (``tests/unit/test_migrate.py`` pins the statements' hash), so a
database that recorded an earlier checksum is up to date: its record takes the current one.
"""


def statements(sql: str) -> str:
    """``sql`` without its comment lines and blank lines: what a comment-only edit leaves as it was."""
    kept = (line.rstrip() for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return "\n".join(line for line in kept if line)


class MigrationError(Exception):
    """A migration cannot be applied: a bad file name, or an applied file that changed."""


@dataclass(frozen=True)
class Migration:
    """One SQL file of the migrations directory."""

    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text, recorded when it is applied."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Read every migration file of ``directory`` in version order (not its ``schema.sql``)."""
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        if path.name == SCHEMA_FILE_NAME:
            continue
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lower_case_name.sql")
        migrations.append(Migration(version=match.group(1), name=path.name, sql=path.read_text("utf-8")))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version number in {directory}")
    return migrations


async def apply(conn: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
    """Apply the migrations not applied yet; return the names of those applied now.

    Then, once the schema has the ``job_kinds`` table, write the contract's jobs into it
    (:func:`services.ledger.job_kinds.sync`), whether or not a migration was applied.
    """
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version text PRIMARY KEY,
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {row["version"]: row for row in rows}
        done: list[str] = []
        for migration in migrations:
            row = applied.get(migration.version)
            if row is not None:
                if row["checksum"] in REWORDED.get(migration.version, ()):
                    await conn.execute(
                        "UPDATE schema_migrations SET checksum = $2 WHERE version = $1",
                        migration.version,
                        migration.checksum,
                    )
                elif row["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"{migration.name} was changed after it was applied (as {row['name']}); "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            done.append(migration.name)
        if await conn.fetchval("SELECT to_regclass('job_kinds') IS NOT NULL"):
            await job_kinds.sync(conn)  # the jobs afterword_enqueue accepts (migration 0012)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def ensure_database(settings: Settings) -> None:
    """Create the configured database when it does not exist (a fresh machine's first run)."""
    try:
        conn = await asyncpg.connect(settings.database_dsn)
    except asyncpg.InvalidCatalogNameError:
        database = (settings.database_url.path or "").lstrip("/")
        admin = await asyncpg.connect(settings.database_dsn, database="postgres")
        try:
            await admin.execute(f"CREATE DATABASE {_quote_ident(database)}")
        finally:
            await admin.close()
    else:
        await conn.close()


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def migrate(settings: Settings, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Create the database if needed and apply pending migrations."""
    migrations = discover(directory)
    await ensure_database(settings)
    conn = await asyncpg.connect(settings.database_dsn)
    try:
        return await apply(conn, migrations)
    finally:
        await conn.close()


def main() -> None:
    """Entry point of ``make migrate``."""
    settings = load_settings()
    try:
        done = asyncio.run(migrate(settings))
    except MigrationError as exc:
        sys.stderr.write(f"migrate: {exc}\n")
        raise SystemExit(1) from None
    print("migrate: applied " + ", ".join(done) if done else "migrate: database is up to date")


if __name__ == "__main__":
    main()
