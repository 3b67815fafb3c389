"""The ``job_effects`` table: the side effects each job did, so that a re-run does not repeat them.

A job's code asks :func:`effect_done` before an effect and the worker records the effect once
it is done, in the statement of :func:`services.ledger.attempts.keep_books` (this module gives
that statement its part: :func:`effect_ctes`, :data:`REFUSED_EFFECTS`, :func:`effect_arguments`).
The effects' targets are no ledger tables: an email, a log line, the example application's own
``users`` table (``services/jobs/effects/``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.ledger.executor import Executor


@dataclass(frozen=True)
class Effect:
    """A side effect a job did (``email``, ``log_line``), with what identifies it.

    With ``attempt`` it is recorded only while that attempt is the job's current one (fenced);
    without, always.
    """

    job_id: str
    effect: str
    detail: dict[str, Any]
    attempt: int | None = None


def effect_ctes(first: int) -> str:
    """The CTEs ``effect_input`` and ``effects`` of a bookkeeping statement, arguments from ``$first``.

    An effect that names its attempt is written only while that attempt is the job's current one
    (``current``); an effect already recorded is left as it is.
    """
    p = [f"${first + i}" for i in range(4)]
    return (
        f"effect_input AS (SELECT e.*, e.attempt IS NULL OR EXISTS (SELECT 1 FROM jobs c "
        f"WHERE c.id = e.job_id AND c.tries = e.attempt) AS current FROM "
        f"unnest({p[0]}::text[], {p[1]}::text[], {p[2]}::jsonb[], {p[3]}::int[]) "
        "AS e(job_id, effect, detail, attempt)), "
        "effects AS (INSERT INTO job_effects (job_id, effect, detail) SELECT job_id, effect, detail "
        "FROM effect_input WHERE current ON CONFLICT DO NOTHING RETURNING 1)"
    )


REFUSED_EFFECTS = (
    "SELECT 'effect' AS kind, job_id AS id, effect AS previous, NULL::text AS request_id, attempt, "
    "NULL::bool AS crash_rerun, NULL::int AS superseded_by FROM effect_input WHERE NOT current"
)
"""The rows of the effects refused by :func:`effect_ctes` (kind ``effect``, the effect as ``previous``)."""


def effect_arguments(effects: Sequence[Effect]) -> list[Any]:
    """The 4 arguments of :func:`effect_ctes` for ``effects``, in its order."""
    return [
        [e.job_id for e in effects],
        [e.effect for e in effects],
        [json.dumps(e.detail) for e in effects],
        [e.attempt for e in effects],
    ]


async def effect_done(db: Executor, *, job_id: str, effect: str) -> bool:
    """True when this job already did this side effect (a re-run must skip it)."""
    found = await db.fetchval("SELECT 1 FROM job_effects WHERE job_id = $1 AND effect = $2", job_id, effect)
    return found is not None
