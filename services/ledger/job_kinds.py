"""The jobs ``afterword_enqueue`` accepts: the ``job_kinds`` table, written from the contract.

``SELECT afterword_enqueue(name, payload, ...)`` (migration 0012) refuses, inside the caller's
transaction, a name that has no row here, a payload field the job does not have and a required
field missing. The rows are the contract's (``services.contract``: :class:`JobName` and each
job's payload model); :func:`sync` writes them, and the migrator (after the migrations) and every
worker (at its start) call it. It adds and updates, never deletes: a worker of an earlier
release may still be running a job that a later contract dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import asyncpg

from services.contract import PAYLOADS, JobName, Payload


@dataclass(frozen=True)
class JobKind:
    """A job's row of ``job_kinds``: its name, its payload's fields (None: any) and the required ones."""

    name: str
    fields: tuple[str, ...] | None
    required: tuple[str, ...]


def kind_of(name: JobName, model: type[Payload]) -> JobKind:
    """What ``afterword_enqueue`` checks of a job whose payload is ``model``."""
    names = [field.alias or field_name for field_name, field in model.model_fields.items()]
    required = [field.alias or field_name for field_name, field in model.model_fields.items() if field.is_required()]
    closed = model.model_config.get("extra") == "forbid"
    return JobKind(name=name.value, fields=tuple(names) if closed else None, required=tuple(required))


def contract_kinds() -> list[JobKind]:
    """Every job of the contract, as ``job_kinds`` holds it."""
    return [kind_of(name, PAYLOADS[name]) for name in JobName]


async def sync(db: asyncpg.Connection | asyncpg.Pool) -> None:
    """Write the contract's jobs into ``job_kinds`` (insert or update; nothing is deleted)."""
    kinds = [{"name": kind.name, "fields": kind.fields, "required": kind.required} for kind in contract_kinds()]
    await db.execute(
        "INSERT INTO job_kinds (name, fields, required) "
        "SELECT k.name, CASE WHEN jsonb_typeof(k.fields) = 'array' "
        "THEN ARRAY(SELECT jsonb_array_elements_text(k.fields)) END, "
        "ARRAY(SELECT jsonb_array_elements_text(k.required)) "
        "FROM jsonb_to_recordset($1::jsonb) AS k(name text, fields jsonb, required jsonb) "
        "ON CONFLICT (name) DO UPDATE SET fields = excluded.fields, required = excluded.required, "
        "updated_at = clock_timestamp() "
        "WHERE job_kinds.fields IS DISTINCT FROM excluded.fields OR job_kinds.required <> excluded.required",
        json.dumps(kinds),
    )


async def known(db: asyncpg.Connection | asyncpg.Pool) -> list[JobKind]:
    """Every row of ``job_kinds``, by name."""
    rows = await db.fetch("SELECT name, fields, required FROM job_kinds ORDER BY name")
    return [
        JobKind(
            name=row["name"],
            fields=None if row["fields"] is None else tuple(row["fields"]),
            required=tuple(row["required"]),
        )
        for row in rows
    ]
