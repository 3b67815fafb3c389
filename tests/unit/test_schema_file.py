"""``migrations/schema.sql`` is the schema a database migrated from zero holds; ``make schema`` rewrites it."""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator

import pytest

from services.core.settings import Settings
from services.ledger.migrate import discover
from services.ledger.schema_dump import (
    SCHEMA_FILE,
    SchemaDumpError,
    _without_password,
    build,
    dump,
    find_pg_dump,
    normalise,
    render,
)
from tests.support.database import ADMIN_DSN, create_database, database_dsn, drop_database

PG_DUMP = find_pg_dump()
needs_pg_dump = pytest.mark.skipif(
    PG_DUMP is None, reason="pg_dump (PostgreSQL's client tools) is not installed, so the schema cannot be dumped"
)


@pytest.fixture
async def migrated_dsn() -> AsyncIterator[str]:
    """A database migrated from zero by the project's migrations, dropped after the test."""
    dsn = await create_database("afterword_schema_test")
    try:
        yield dsn
    finally:
        await drop_database(dsn)


@needs_pg_dump
async def test_the_schema_file_is_the_schema_the_migrations_build(migrated_dsn: str) -> None:
    assert PG_DUMP is not None
    built = await render(migrated_dsn, discover(), pg_dump=PG_DUMP)
    committed = SCHEMA_FILE.read_text("utf-8") if SCHEMA_FILE.exists() else ""

    if committed != built:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                built.splitlines(keepends=True),
                "migrations/schema.sql (committed)",
                "migrations/schema.sql (what the migrations build)",
            )
        )
        pytest.fail(
            f"migrations/schema.sql is not the schema the migrations build: run make schema\n{diff}", pytrace=False
        )


@needs_pg_dump
async def test_make_schema_builds_the_same_text_on_a_throwaway_database_of_its_own(migrated_dsn: str) -> None:
    assert PG_DUMP is not None
    settings = Settings(_env_file=None, database_url=ADMIN_DSN)

    assert await build(settings) == await render(migrated_dsn, discover(), pg_dump=PG_DUMP)


@needs_pg_dump
async def test_a_failing_pg_dump_is_reported_with_its_message() -> None:
    assert PG_DUMP is not None
    missing = database_dsn("afterword_schema_never_created")

    with pytest.raises(SchemaDumpError, match=r"pg_dump failed: .*afterword_schema_never_created"):
        await dump(missing, pg_dump=PG_DUMP)


PG_DUMP_OUTPUT = """\
--
-- PostgreSQL database dump
--

\\restrict Bu0UkFLAculrjBDaTjgxeOiX0g9CbW9Kxd8NTvFsGXLY5yFrAWL137DkmTDe6Rq

-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET client_encoding = 'UTF8';
SELECT pg_catalog.set_config('search_path', '', false);
SET row_security = off;

--
-- Name: touch(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.touch() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    -- a comment of the function's own
    SET LOCAL lock_timeout = 0;
    RETURN NEW;
END;
$$;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: notes; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.notes (
    id integer NOT NULL
);


--
-- PostgreSQL database dump complete
--

\\unrestrict Bu0UkFLAculrjBDaTjgxeOiX0g9CbW9Kxd8NTvFsGXLY5yFrAWL137DkmTDe6Rq

"""


def test_normalise_keeps_the_statements_and_drops_what_varies_by_version_or_run() -> None:
    assert normalise(PG_DUMP_OUTPUT) == (
        "CREATE FUNCTION public.touch() RETURNS trigger\n"
        "    LANGUAGE plpgsql\n"
        "    AS $$\n"
        "BEGIN\n"
        "    -- a comment of the function's own\n"
        "    SET LOCAL lock_timeout = 0;\n"
        "    RETURN NEW;\n"
        "END;\n"
        "$$;\n"
        "\n"
        "CREATE TABLE public.notes (\n"
        "    id integer NOT NULL\n"
        ");\n"
    )


@pytest.mark.parametrize(
    ("dsn", "target", "password"),
    [
        ("postgresql://postgres@127.0.0.1:5432/app", "postgresql://postgres@127.0.0.1:5432/app", None),
        (
            "postgresql://app:s%40cret@db:5432/app?sslmode=require",
            "postgresql://app@db:5432/app?sslmode=require",
            "s@cret",
        ),
        ("postgresql://db/app", "postgresql://db/app", None),
    ],
)
def test_the_password_is_kept_off_pg_dumps_command_line(dsn: str, target: str, password: str | None) -> None:
    assert _without_password(dsn) == (target, password)
