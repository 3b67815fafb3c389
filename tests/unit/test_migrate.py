"""The migrator, on empty throwaway databases and migration files written by the tests."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from services.core.settings import Settings
from services.ledger.migrate import REWORDED, MigrationError, apply, discover, migrate, statements
from tests.support.database import ADMIN_DSN, database_dsn, drop_database

CREATE = "CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL);\n"
SEED = "INSERT INTO notes (id, body) VALUES (1, 'first');\n"
ALTER = "ALTER TABLE notes ADD COLUMN tag text;\nUPDATE notes SET tag = 'seeded';\n"


@pytest.fixture
async def empty_dsn() -> AsyncIterator[str]:
    """An empty database (no schema at all), dropped after the test."""
    name = f"afterword_migrate_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = database_dsn(name)
    try:
        yield dsn
    finally:
        await drop_database(dsn)


@pytest.fixture
async def db(empty_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(empty_dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def _advisory_locks(conn: asyncpg.Connection) -> int:
    """Advisory locks held in this database, by anyone."""
    count = await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    return int(count)


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql, "utf-8")
    return directory


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    return _write(
        tmp_path / "migrations",
        {"0002_seed_notes.sql": SEED, "0001_create_notes.sql": CREATE, "0003_tag_notes.sql": ALTER},
    )


def test_discover_reads_files_in_version_order(migrations_dir: Path) -> None:
    (migrations_dir / "README.md").write_text("not a migration")

    migrations = discover(migrations_dir)

    assert [(m.version, m.name) for m in migrations] == [
        ("0001", "0001_create_notes.sql"),
        ("0002", "0002_seed_notes.sql"),
        ("0003", "0003_tag_notes.sql"),
    ]
    assert migrations[0].sql == CREATE
    assert migrations[0].checksum == hashlib.sha256(CREATE.encode()).hexdigest()


@pytest.mark.parametrize(
    "bad", ["1_short.sql", "0004-dash.sql", "0004_Upper.sql", "0004_.sql", "abcd_x.sql", "schema2.sql", "Schema.sql"]
)
def test_discover_refuses_a_badly_named_file(migrations_dir: Path, bad: str) -> None:
    (migrations_dir / bad).write_text("SELECT 1;")

    with pytest.raises(MigrationError, match=bad):
        discover(migrations_dir)


def test_discover_leaves_out_the_schema_file(migrations_dir: Path) -> None:
    (migrations_dir / "schema.sql").write_text("CREATE TABLE notes (id integer PRIMARY KEY);")

    assert [m.name for m in discover(migrations_dir)] == [
        "0001_create_notes.sql",
        "0002_seed_notes.sql",
        "0003_tag_notes.sql",
    ]


def test_discover_refuses_two_files_with_one_version(migrations_dir: Path) -> None:
    (migrations_dir / "0002_other.sql").write_text("SELECT 1;")

    with pytest.raises(MigrationError, match="share a version"):
        discover(migrations_dir)


def test_the_projects_own_migrations_are_well_formed() -> None:
    migrations = discover()

    assert migrations
    assert migrations[0].version == "0001"


async def test_apply_runs_every_migration_in_order_and_records_checksums(
    db: asyncpg.Connection, migrations_dir: Path
) -> None:
    migrations = discover(migrations_dir)

    done = await apply(db, migrations)

    assert done == ["0001_create_notes.sql", "0002_seed_notes.sql", "0003_tag_notes.sql"]
    assert [tuple(r) for r in await db.fetch("SELECT id, body, tag FROM notes")] == [(1, "first", "seeded")]
    rows = await db.fetch("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version")
    assert [(r["version"], r["name"], r["checksum"]) for r in rows] == [
        (m.version, m.name, hashlib.sha256(m.sql.encode()).hexdigest()) for m in migrations
    ]
    assert all(r["applied_at"] is not None for r in rows)


async def test_a_second_apply_applies_nothing(db: asyncpg.Connection, migrations_dir: Path) -> None:
    await apply(db, discover(migrations_dir))

    assert await apply(db, discover(migrations_dir)) == []

    assert await db.fetchval("SELECT count(*) FROM notes") == 1
    assert await db.fetchval("SELECT count(*) FROM schema_migrations") == 3


async def test_a_new_file_is_applied_alone(db: asyncpg.Connection, migrations_dir: Path) -> None:
    await apply(db, discover(migrations_dir))
    _write(migrations_dir, {"0004_more_notes.sql": "INSERT INTO notes (id, body) VALUES (2, 'second');"})

    assert await apply(db, discover(migrations_dir)) == ["0004_more_notes.sql"]

    assert await db.fetchval("SELECT count(*) FROM notes") == 2


async def test_an_edited_applied_file_is_refused(db: asyncpg.Connection, migrations_dir: Path) -> None:
    await apply(db, discover(migrations_dir))
    _write(migrations_dir, {"0002_seed_notes.sql": SEED + "-- an edit\n"})
    _write(migrations_dir, {"0004_more_notes.sql": "INSERT INTO notes (id, body) VALUES (2, 'second');"})

    with pytest.raises(MigrationError, match=r"0002_seed_notes\.sql"):
        await apply(db, discover(migrations_dir))

    assert await db.fetchval("SELECT count(*) FROM notes") == 1
    assert await db.fetchval("SELECT count(*) FROM schema_migrations") == 3


async def test_a_refused_apply_releases_the_lock(db: asyncpg.Connection, empty_dsn: str, migrations_dir: Path) -> None:
    await apply(db, discover(migrations_dir))
    _write(migrations_dir, {"0001_create_notes.sql": CREATE + "-- edited\n"})
    with pytest.raises(MigrationError):
        await apply(db, discover(migrations_dir))

    other = await asyncpg.connect(empty_dsn)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", 0x61667477) is True
        await other.execute("SELECT pg_advisory_unlock($1)", 0x61667477)
    finally:
        await other.close()
    assert await _advisory_locks(db) == 0


async def test_a_failing_migration_is_rolled_back_and_not_recorded(db: asyncpg.Connection, tmp_path: Path) -> None:
    directory = _write(
        tmp_path / "m",
        {
            "0001_create_notes.sql": CREATE,
            "0002_half_done.sql": "INSERT INTO notes (id, body) VALUES (5, 'x');\nINSERT INTO missing VALUES (1);\n",
            "0003_never.sql": SEED,
        },
    )

    with pytest.raises(asyncpg.UndefinedTableError):
        await apply(db, discover(directory))

    assert await db.fetchval("SELECT count(*) FROM notes") == 0
    versions = [r["version"] for r in await db.fetch("SELECT version FROM schema_migrations")]
    assert versions == ["0001"]
    assert await _advisory_locks(db) == 0


async def test_concurrent_applies_run_each_migration_once(empty_dsn: str, tmp_path: Path) -> None:
    directory = _write(
        tmp_path / "m",
        {
            "0001_create_counter.sql": "CREATE TABLE applied (name text NOT NULL);\n",
            "0002_slow.sql": "SELECT pg_sleep(0.2);\nINSERT INTO applied VALUES ('0002');\n",
            "0003_count.sql": "INSERT INTO applied VALUES ('0003');\n",
        },
    )
    migrations = discover(directory)
    first, second = await asyncpg.connect(empty_dsn), await asyncpg.connect(empty_dsn)
    try:
        done_first, done_second = await asyncio.gather(apply(first, migrations), apply(second, migrations))

        assert sorted(done_first + done_second) == [m.name for m in migrations]
        assert [] in (done_first, done_second)
        names = [r["name"] for r in await first.fetch("SELECT name FROM applied ORDER BY name")]
        assert names == ["0002", "0003"]
        assert await first.fetchval("SELECT count(*) FROM schema_migrations") == 3
    finally:
        await first.close()
        await second.close()


async def test_migrate_creates_a_missing_database(tmp_path: Path) -> None:
    name = f"afterword_missing_{uuid.uuid4().hex[:10]}"
    dsn = database_dsn(name)
    settings = Settings(_env_file=None, database_url=dsn)
    directory = _write(tmp_path / "m", {"0001_create_notes.sql": CREATE})
    try:
        assert await migrate(settings, directory) == ["0001_create_notes.sql"]
        assert await migrate(settings, directory) == []

        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT current_database()") == name
            assert await conn.fetchval("SELECT count(*) FROM notes") == 0
        finally:
            await conn.close()
    finally:
        await drop_database(dsn)


STATEMENTS_OF_REWORDED = {
    "0002": "d379aa6017c3e923cf8f19af723693df09d2e7dbcacef41337e59905ae6ed30e",
    "0003": "12a454afbb5d46d2815c817a8a84c49f4ad83979e964e2faeb5ff9c3cb604172",
    "0004": "e7a7fe2c092f7fa1a6c23934f2e26efc4893b7b77c9d1e8a902e98ded9078b73",
    "0006": "30764087901f94f82b8a1f56d67ff4275ab55de1dfc3da8894e06cc389196692",
    "0007": "7aa3b4380cf885b0b718fff8da88cd283ce5cd6020852fcb2d61a1b8200b15e8",
    "0008": "624f139849aeb2e72e31462ea7c107555222013878b1bfc2a620899a7094b2f6",
    "0009": "bae143301be936beefc75ba0ce1a10d6a80948aa67dc7db9df7f1dec98db0b89",
    "0010": "352b55a346a6dbeea8276bc11e006d68be8da2ffd70541d9ac804820bedb95e5",
    "0011": "430b949b7365b67c34c007f09bc52f15c69e5b4c28598167a749c78733174313",
}
"""The SHA-256 of each reworded file's statements, taken from the file as it was first applied."""


def test_a_reworded_migration_changed_only_its_comments() -> None:
    by_version = {migration.version: migration for migration in discover()}

    assert set(REWORDED) == set(STATEMENTS_OF_REWORDED)
    for version, pinned in STATEMENTS_OF_REWORDED.items():
        migration = by_version[version]
        assert hashlib.sha256(statements(migration.sql).encode()).hexdigest() == pinned, migration.name
        assert migration.checksum not in REWORDED[version], "the current checksum is not an earlier one"


async def test_a_database_that_recorded_an_earlier_checksum_of_a_reworded_file_is_up_to_date(
    db: asyncpg.Connection,
) -> None:
    project = discover()
    await apply(db, project)
    earlier = sorted(REWORDED["0009"])[0]  # any earlier checksum of it
    await db.execute("UPDATE schema_migrations SET checksum = $1 WHERE version = '0009'", earlier)

    assert await apply(db, project) == []

    current = next(m for m in project if m.version == "0009").checksum
    assert await db.fetchval("SELECT checksum FROM schema_migrations WHERE version = '0009'") == current
    await db.execute("UPDATE schema_migrations SET checksum = $1 WHERE version = '0009'", "0" * 64)
    with pytest.raises(MigrationError, match="0009"):
        await apply(db, project)


def test_statements_leave_out_comments_and_blank_lines_only() -> None:
    sql = "-- why\n\nCREATE TABLE t (a int); -- kept: not a comment line\n   -- indented comment\nSELECT 1;\n"

    assert statements(sql) == "CREATE TABLE t (a int); -- kept: not a comment line\nSELECT 1;"
