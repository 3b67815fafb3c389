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
it takes the connection you have (asyncpg's ``Connection``, or a pool's connection).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol, overload

from afterword_client.models import PAYLOADS, JobName, Payload

_ENQUEUE = "SELECT afterword_enqueue($1::text, $2::jsonb, $3::timestamptz, $4::float8, $5::text)"
_NAME_OF: dict[type[Payload], JobName] = {model: name for name, model in PAYLOADS.items()}


class Connection(Protocol):
    """What this module needs of a connection: asyncpg's ``fetchval`` and ``is_in_transaction``."""

    async def fetchval(self, query: str, *args: Any) -> Any:
        """Run ``query`` and return the first column of its first row."""

    def is_in_transaction(self) -> bool:
        """True inside a transaction block."""


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
    required one, with SQLSTATE 22023 (asyncpg's ``InvalidParameterValueError``): the transaction
    is then aborted, as after any failed statement. Raises ``RuntimeError`` outside a transaction.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("enqueue_in_transaction needs an open transaction: async with conn.transaction(): ...")
    name, data = _job(job, payload)
    if defer_by is not None and run_at is not None:
        raise ValueError("give defer_by or run_at, not both")
    if run_at is not None and (run_at.tzinfo is None or run_at.utcoffset() is None):
        raise ValueError("run_at must be timezone-aware (datetime.now(UTC) + ..., say)")
    seconds = defer_by.total_seconds() if isinstance(defer_by, timedelta) else defer_by
    body = json.dumps(data, separators=(",", ":"), allow_nan=False)
    created: str = await conn.fetchval(_ENQUEUE, name, body, run_at, seconds, job_id)
    return created


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
