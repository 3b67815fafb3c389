"""A pytest plugin: the ``afterword_jobs`` fixture, Afterword in the test's process without Redis.

Load it with ``pytest_plugins = ["services.testing.plugin"]`` in your top ``conftest.py`` (or
``pytest -p services.testing.plugin``). Its fixtures:

* ``afterword_jobs``: an :class:`~services.testing.afterword.InProcessAfterword` of a database of
  the test's own, its mail going to ``afterword_mail``, its files under the test's ``tmp_path``;
* ``afterword_settings``: settings to change for ``afterword_jobs`` (field names of
  ``services.core.settings.Settings`` and their values); override it to set them, ``{}`` by default;
* ``afterword_mail``: the SMTP server the jobs' emails go to (one per session, emptied for each test);
* ``afterword_postgres_url``: a Postgres role that may create databases, from
  ``AFTERWORD_TEST_POSTGRES_URL`` (``postgresql://postgres@127.0.0.1:5432/postgres`` if unset);
  override it to take it from elsewhere;
* ``afterword_databases``: the session's migrated template, copied for each test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.testing.afterword import InProcessAfterword, in_process_settings, run_in_thread
from services.testing.databases import Databases, admin_url
from services.testing.mail import MailSink


@pytest.fixture(scope="session")
def afterword_postgres_url() -> str:
    """A Postgres role that may create databases (``AFTERWORD_TEST_POSTGRES_URL``, or the local default)."""
    return admin_url()


@pytest.fixture(scope="session")
def afterword_databases(afterword_postgres_url: str) -> Iterator[Databases]:
    """Afterword's migrated schema, copied into a database of its own for each test."""
    databases = Databases(afterword_postgres_url)
    try:
        yield databases
    finally:
        run_in_thread(databases.close)


@pytest.fixture(scope="session")
def afterword_mail() -> Iterator[MailSink]:
    """The SMTP server the in-process Afterword's emails go to."""
    sink = MailSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def afterword_settings() -> dict[str, Any]:
    """Settings the test changes for ``afterword_jobs`` (override this fixture): none."""
    return {}


@pytest.fixture
def afterword_jobs(
    afterword_databases: Databases,
    afterword_mail: MailSink,
    afterword_settings: dict[str, Any],
    tmp_path: Path,
) -> Iterator[InProcessAfterword]:
    """Afterword in this process, on a new database: queue through its clients, then ``run_all()``."""
    database_url = run_in_thread(afterword_databases.copy)
    try:
        settings = in_process_settings(
            database_url=database_url, mail=afterword_mail, directory=tmp_path / "afterword", **afterword_settings
        )
        afterword_mail.clear()
        with InProcessAfterword.start(settings, mail=afterword_mail) as afterword:
            yield afterword
    finally:
        run_in_thread(afterword_databases.drop, database_url)
