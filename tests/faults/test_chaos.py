"""Chaos: a steady keyed load while workers are SIGKILLed every few seconds, Redis and the gateway once.

Clients post signups and sends, each with an ``Idempotency-Key``, and send the same request with
the same key again on every connection error, 409, 429 and 5xx, as a careful client does. The SMTP
sink answers each DATA slowly, so most kills land on running jobs. Afterwards every job a 202
named has ended, each effect happened once, and the ledger holds no job that no 202 named.

The one duplicate the design admits is an email whose 250 reached a worker that died before it
recorded the effect: the next try sends it again with the same Message-ID. The test counts those
(each must belong to a job whose earlier attempt was interrupted) and prints how often it saw them.

``CHAOS_SECONDS`` sets the length of the chaos phase (``make chaos`` runs a long one).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.faults.conftest import FaultStack, kill
from tests.support.jobs_client import wait_for_job

CHAOS_SECONDS = float(os.environ.get("CHAOS_SECONDS", "24"))
WORKER_KILL_EVERY = 3.0
CLIENTS = 4
RETRYABLE = {409, 429, 500, 502, 503, 504}


@dataclass
class Load:
    """What the clients sent and what the gateway acknowledged."""

    acknowledged: dict[str, str] = field(default_factory=dict)  # job id -> job name
    signups: list[str] = field(default_factory=list)  # addresses whose signup was acknowledged
    retries: Counter[str] = field(default_factory=Counter)  # why a request was sent again
    unacknowledged: list[str] = field(default_factory=list)  # requests never answered 202


async def keyed_post(client: httpx.AsyncClient, path: str, body: dict[str, Any], load: Load) -> dict[str, Any] | None:
    """POST with a fresh Idempotency-Key, retried with the same key until 202 (None if never)."""
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        try:
            response = await client.post(path, json=body, headers=headers)
        except httpx.TransportError as exc:
            load.retries[type(exc).__name__] += 1
        else:
            if response.status_code == 202:
                answer: dict[str, Any] = response.json()
                return answer
            assert response.status_code in RETRYABLE, f"{path} {body}: {response.status_code} {response.text}"
            load.retries[str(response.status_code)] += 1
        await asyncio.sleep(0.2)
    load.unacknowledged.append(f"{path} {body}")
    return None


async def client_loop(stack: FaultStack, load: Load, stop: asyncio.Event, number: int) -> None:
    """One client: signups and sends, one after the other, until ``stop``."""
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        sequence = 0
        while not stop.is_set():
            sequence += 1
            if sequence % 2:
                address = f"chaos-{number}-{sequence}-{uuid.uuid4().hex[:6]}@example.com"
                answer = await keyed_post(client, "/signup", {"email": address, "name": "Chaos"}, load)
                if answer is not None:
                    load.signups.append(address)
            else:
                answer = await keyed_post(client, "/send", {"message": f"chaos {number} {sequence}"}, load)
            if answer is not None:
                for job in answer["jobs"]:
                    load.acknowledged[job["id"]] = job["name"]
            await asyncio.sleep(0.05)


async def chaos(stack: FaultStack, stop: asyncio.Event) -> Counter[str]:
    """Kill a worker every few seconds (a new one replaces it); Redis and the gateway once each."""
    done: Counter[str] = Counter()
    started = time.monotonic()
    redis_at, gateway_at = CHAOS_SECONDS * 0.3, CHAOS_SECONDS * 0.6
    while (elapsed := time.monotonic() - started) < CHAOS_SECONDS:
        await asyncio.sleep(WORKER_KILL_EVERY)
        victim = random.choice(stack.workers)
        kill(victim)
        stack.drop_worker(victim)
        stack.add_worker()
        done["worker SIGKILL"] += 1
        if elapsed >= redis_at and not done["redis SIGKILL"]:
            stack.redis.kill()
            await asyncio.sleep(1)
            stack.redis.start()
            done["redis SIGKILL"] += 1
        if elapsed >= gateway_at and not done["gateway SIGKILL"]:
            assert stack.gateway is not None
            stack.gateway.signal(signal.SIGKILL)
            stack.gateway.wait(timeout=10)
            await asyncio.sleep(0.5)
            stack.gateway.start()
            done["gateway SIGKILL"] += 1
    stop.set()
    return done


@pytest.mark.timeout(CHAOS_SECONDS + 240)
async def test_chaos_loses_nothing_and_repeats_no_effect(stack: FaultStack) -> None:
    since = await stack.db.fetchval("SELECT clock_timestamp()")
    stack.sink.slow_down(0.3)  # kills land on emails in flight
    load = Load()
    stop = asyncio.Event()
    clients = [asyncio.create_task(client_loop(stack, load, stop, n)) for n in range(CLIENTS)]
    done = await chaos(stack, stop)
    await asyncio.gather(*clients)
    stack.sink.slow_down(0)
    await stack.heal()

    assert not load.unacknowledged, f"requests never acknowledged: {load.unacknowledged}"
    assert done["redis SIGKILL"] == 1
    assert done["gateway SIGKILL"] == 1
    assert len(load.acknowledged) > 50, "too little load to mean anything"

    # Every acknowledged job ended, and succeeded: nothing here fails for good.
    jobs = [await wait_for_job(stack.http, job_id, within=60) for job_id in load.acknowledged]
    unfinished = [job for job in jobs if job["status"] != "succeeded"]
    assert not unfinished, unfinished

    # Nothing in the ledger that no 202 named.
    ledger_ids = {row["id"] for row in await stack.db.fetch("SELECT id FROM jobs WHERE enqueued_at >= $1", since)}
    assert ledger_ids - set(load.acknowledged) == set(), "jobs in the ledger that no 202 named"

    # Each effect once: a log line per write_log job, a row per signup, an email per send_email.
    lines = Counter(line["job_id"] for line in stack.log_lines())
    logs = [job_id for job_id, name in load.acknowledged.items() if name == "write_log"]
    assert all(lines[job_id] == 1 for job_id in logs), {j: lines[j] for j in logs if lines[j] != 1}
    rows = await stack.db.fetch("SELECT email FROM users WHERE email = ANY($1::text[])", load.signups)
    assert sorted(row["email"] for row in rows) == sorted(load.signups)

    by_job = {job["id"]: job for job in jobs}
    emails = [job_id for job_id, name in load.acknowledged.items() if name == "send_email"]
    with stack.sink.lock:
        delivered = Counter(r.message["Message-ID"].strip("<>").split("@")[0] for r in stack.sink.received)
    assert all(delivered[job_id] >= 1 for job_id in emails), [j for j in emails if not delivered[j]]
    window = [job_id for job_id in emails if delivered[job_id] > 1]
    for job_id in window:
        outcomes = [attempt["outcome"] for attempt in by_job[job_id]["attempts"]]
        assert delivered[job_id] <= outcomes.count("interrupted") + 1, (job_id, outcomes, delivered[job_id])
        stack.window_duplicates.add(job_id)
    interrupted = sum(1 for job in jobs for attempt in job["attempts"] if attempt["outcome"] == "interrupted")
    print(
        f"\nchaos {CHAOS_SECONDS:.0f}s: {len(load.acknowledged)} jobs acknowledged "
        f"({len(emails)} emails), {dict(done)}, client retries {dict(load.retries)}, "
        f"{interrupted} attempts interrupted, {len(window)} emails sent twice in the SMTP window"
    )
