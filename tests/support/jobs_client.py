"""Small HTTP conveniences for driving the gateway in tests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

FINAL = {"succeeded", "failed", "cancelled"}


async def wait_for_job(client: httpx.AsyncClient, job_id: str, *, within: float = 30) -> dict[str, Any]:
    """Poll ``GET /jobs/{id}`` until the job ends; fail with its last state if it never does."""
    deadline = time.monotonic() + within
    while True:
        response = await client.get(f"/jobs/{job_id}")
        if response.status_code == 503:  # the ledger is away (a fault test): ask again
            job: dict[str, Any] = {"status": "unknown: ledger unavailable"}
        else:
            assert response.status_code == 200, response.text
            job = response.json()
            if job["status"] in FINAL:
                return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} did not finish within {within}s: {job}")
        await asyncio.sleep(0.05)


async def wait_for_all(client: httpx.AsyncClient, job_ids: list[str], *, within: float = 30) -> list[dict[str, Any]]:
    """Wait for several jobs; return their final records in the same order."""
    return list(await asyncio.gather(*(wait_for_job(client, job_id, within=within) for job_id in job_ids)))


def job_ids(accepted: dict[str, Any]) -> dict[str, str]:
    """Map job name to id from a 202 answer's ``jobs`` list."""
    return {job["name"]: job["id"] for job in accepted["jobs"]}
