"""An Idempotency-Key is kept for the 24 hours promised: a key just short of a day old still replays.

``test_idempotency.py`` shows a key past 25 hours used afresh; this is the other side of the
promise. The key's row is aged in the database, as a day of waiting would leave it.
"""

from __future__ import annotations

import uuid

import httpx

from services.gateway.idempotency import purge
from tests.support.observers import Observer


async def test_a_key_a_minute_short_of_a_day_old_still_replays(client: httpx.AsyncClient, observer: Observer) -> None:
    key = f"test-{uuid.uuid4()}"
    headers = {"Idempotency-Key": key}
    body = {"message": f"kept a day {uuid.uuid4().hex}"}
    first = await client.post("/send", json=body, headers=headers)
    assert first.status_code == 202, first.text
    aged = await observer.db.execute(
        "UPDATE idempotency_keys SET created_at = created_at - interval '23 hours 59 minutes' WHERE key = $1", key
    )
    assert aged == "UPDATE 1"
    await purge(observer.db)  # the purge of expired keys leaves it too
    jobs_before = await observer.db.fetchval("SELECT count(*) FROM jobs")

    again = await client.post("/send", json=body, headers=headers)

    assert again.status_code == 202, again.text
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first.json()
    assert await observer.db.fetchval("SELECT count(*) FROM jobs") == jobs_before, "the repeat queued a job"
