"""Throwaway Afterword databases for tests: one migrated template per session, one copy of it per test.

Each test gets a database of its own, so the jobs a test runs are that test's jobs and its users
table starts empty. Copying a migrated template (``CREATE DATABASE ... TEMPLATE``) costs a tenth
of a second, and does not grow with the migrations as migrating each database would.
"""

from __future__ import annotations

import os
import uuid

import asyncpg

from services.ledger.migrate import apply, discover

ADMIN_URL_VARIABLE = "AFTERWORD_TEST_POSTGRES_URL"
"""The environment variable naming a Postgres role that may create databases."""

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    """The Postgres URL the test databases are created with: :data:`ADMIN_URL_VARIABLE`, or the local default."""
    return os.environ.get(ADMIN_URL_VARIABLE) or DEFAULT_ADMIN_URL


class Databases:
    """Creates a migrated template on the server of ``admin`` (a role that may create databases), and copies of it."""

    def __init__(self, admin: str, *, prefix: str = "afterword_test") -> None:
        self._admin = admin
        self._prefix = prefix
        self._template: str | None = None

    def url_of(self, name: str) -> str:
        """The URL of database ``name`` on the admin URL's server, as the admin role."""
        address, mark, query = self._admin.partition("?")
        return f"{address.rpartition('/')[0]}/{name}{mark}{query}"

    async def copy(self) -> str:
        """A new database holding Afterword's schema, empty; its URL."""
        admin = await self._connect()
        try:
            if self._template is None:
                self._template = await self._migrated_template(admin)
            name = self._name()
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
        finally:
            await admin.close()
        return self.url_of(name)

    async def drop(self, url: str) -> None:
        """Drop a database made by :meth:`copy`, disconnecting whoever is still on it."""
        await self._drop(url.partition("?")[0].rpartition("/")[2])

    async def close(self) -> None:
        """Drop the template."""
        if self._template is not None:
            await self._drop(self._template)
            self._template = None

    async def _migrated_template(self, admin: asyncpg.Connection) -> str:
        name = self._name("template")
        await admin.execute(f'CREATE DATABASE "{name}"')
        conn = await asyncpg.connect(self.url_of(name))
        try:
            await apply(conn, discover())
        finally:
            await conn.close()  # a template is copied only while nobody is connected to it
        return name

    async def _drop(self, name: str) -> None:
        admin = await self._connect()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    async def _connect(self) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(self._admin)
        except (OSError, asyncpg.PostgresError) as exc:
            raise RuntimeError(
                f"the in-process Afterword needs a Postgres role that may create databases: "
                f"set {ADMIN_URL_VARIABLE} (or override the afterword_postgres_url fixture); "
                f"connecting failed with {type(exc).__name__}: {exc}"
            ) from exc

    def _name(self, kind: str = "") -> str:
        return f"{self._prefix}_{kind + '_' if kind else ''}{uuid.uuid4().hex[:10]}"
