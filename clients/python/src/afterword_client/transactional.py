"""Queue a job inside your own Postgres transaction: it runs if, and only if, the transaction commits.

::

    from afterword_client import SendEmail
    from afterword_client.transactional import enqueue_in_transaction

    async with conn.transaction():  # an asyncpg connection to Afterword's database
        order_id = await conn.fetchval("INSERT INTO orders (item) VALUES ($1) RETURNING id", "book")
        job_id = await enqueue_in_transaction(conn, SendEmail(to=..., subject=f"Order {order_id}", body=...))

The job's row is written by ``afterword_enqueue``, a function of Afterword's database, on your
connection and in your transaction: roll it back and the job never existed; commit it and the
workers queue the job at once. This module sends no HTTP request and imports no database driver:
it takes the connection you have: asyncpg's ``Connection`` (or a pool's connection), or
SQLAlchemy's ``AsyncSession`` or ``AsyncConnection`` (``pip install "afterword-client[sqlalchemy]"``)::

    async with session.begin():  # an SQLAlchemy AsyncSession on Afterword's database
        session.add(Order(item="book"))
        job_id = await enqueue_in_transaction(session, SendEmail(to=..., subject="Your order", body=...))
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol, overload, runtime_checkable

from afterword_client.models import PAYLOADS, JobName, Payload

_ENQUEUE = "SELECT afterword_enqueue($1::text, $2::jsonb, $3::timestamptz, $4::float8, $5::text)"
_ENQUEUE_NAMED = (
    "SELECT afterword_enqueue(CAST(:name AS text), CAST(:payload AS jsonb), CAST(:run_at AS timestamptz), "
    "CAST(:defer_by AS float8), CAST(:job_id AS text))"
)
"""The same statement with named parameters, as SQLAlchemy's ``text()`` takes them."""
_NAME_OF: dict[type[Payload], JobName] = {model: name for name, model in PAYLOADS.items()}


class AsyncpgConnection(Protocol):
    """What this module needs of an asyncpg connection: ``fetchval`` and ``is_in_transaction``."""

    async def fetchval(self, query: str, *args: Any) -> Any:
        """Run ``query`` and return the first column of its first row."""

    def is_in_transaction(self) -> bool:
        """True inside a transaction block."""


class SqlAlchemyConnection(Protocol):
    """What this module needs of SQLAlchemy's ``AsyncSession`` or ``AsyncConnection``."""

    async def execute(self, statement: Any, parameters: Any = None, /) -> Any:
        """Run ``statement`` in the session's transaction (begun by it if none is)."""

    def in_transaction(self) -> bool:
        """True once a transaction has begun."""


Connection = AsyncpgConnection | SqlAlchemyConnection
"""A connection this module can write a job on."""


@overload
async def enqueue_in_transaction(
    conn: Connection,
    job: Payload,
    /,
    *,
    defer_by: float | timedelta | None = None,
    run_at: datetime | None = None,
    job_id: str | None = None,
) -> str: ...


@overload
async def enqueue_in_transaction(
    conn: Connection,
    job: JobName | str,
    payload: Mapping[str, Any] | None = None,
    /,
    *,
    defer_by: float | timedelta | None = None,
    run_at: datetime | None = None,
    job_id: str | None = None,
) -> str: ...


async def enqueue_in_transaction(
    conn: Connection,
    job: Payload | JobName | str,
    payload: Mapping[str, Any] | None = None,
    /,
    *,
    defer_by: float | timedelta | None = None,
    run_at: datetime | None = None,
    job_id: str | None = None,
) -> str:
    """Write a job in ``conn``'s open transaction; return its id. It runs once the transaction commits.

    ``job`` is a payload model (``SendEmail(...)``), or a job's name with its payload. A payload
    of a job this client knows is validated by its model first: a bad field is a pydantic
    ``ValidationError`` and nothing is sent. ``defer_by`` (seconds or a timedelta, at most 7 days)
    or ``run_at`` (an aware datetime, by the database's clock) delays it. ``job_id`` (32 lowercase
    hex digits) gives the job an id of your choosing; a new uuid4 otherwise.

    The database refuses an unknown name, a payload field the job does not have and a missing
    required one, with SQLSTATE 22023 (asyncpg's ``InvalidParameterValueError``; SQLAlchemy wraps
    it in a ``DBAPIError``): the transaction is then aborted, as after any failed statement.
    asyncpg runs a statement outside a transaction block on its own, committed at once: on an
    asyncpg connection outside a transaction this raises ``RuntimeError``. SQLAlchemy begins a
    transaction with the statement when none is open, and the job is then written when you commit.
    """
    if isinstance(conn, _AsyncpgLike) and not conn.is_in_transaction():
        raise RuntimeError("enqueue_in_transaction needs an open transaction: async with conn.transaction(): ...")
    name, data = _job(job, payload)
    if defer_by is not None and run_at is not None:
        raise ValueError("give defer_by or run_at, not both")
    if run_at is not None and (run_at.tzinfo is None or run_at.utcoffset() is None):
        raise ValueError("run_at must be timezone-aware (datetime.now(UTC) + ..., say)")
    seconds = defer_by.total_seconds() if isinstance(defer_by, timedelta) else defer_by
    body = json.dumps(data, separators=(",", ":"), allow_nan=False)
    if isinstance(conn, _AsyncpgLike):
        created: str = await conn.fetchval(_ENQUEUE, name, body, run_at, seconds, job_id)
        return created
    if isinstance(conn, _SqlAlchemyLike):
        from sqlalchemy import text  # the sqlalchemy extra: only whoever passes a session has it

        parameters = {"name": name, "payload": body, "run_at": run_at, "defer_by": seconds, "job_id": job_id}
        result = await conn.execute(text(_ENQUEUE_NAMED), parameters)
        written: str = result.scalar_one()
        return written
    raise TypeError(
        f"not an asyncpg connection nor an SQLAlchemy AsyncSession or AsyncConnection: {type(conn).__name__}"
    )


@runtime_checkable
class _AsyncpgLike(AsyncpgConnection, Protocol):
    pass


@runtime_checkable
class _SqlAlchemyLike(SqlAlchemyConnection, Protocol):
    pass


def _job(job: Payload | JobName | str, payload: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The job's name and its payload as JSON data, validated by its model when the client knows the job."""
    if isinstance(job, Payload):
        if payload is not None:
            raise TypeError("a payload model carries its payload: pass no second argument")
        if type(job) not in _NAME_OF:
            raise TypeError(f"{type(job).__name__} is not the payload model of a job")
        return _NAME_OF[type(job)].value, job.model_dump(mode="json")
    name = str(job)
    try:
        known = JobName(name)
    except ValueError:  # not a job of this client's models: the database says whether it knows it
        return name, dict(payload or {})
    return name, PAYLOADS[known].model_validate(dict(payload or {})).model_dump(mode="json")
