"""GET /stats on a ledger of 30,000 jobs: a status above STATS_EXACT_COUNT_LIMIT is an estimate, and says so."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.contract import JobStatus
from tests.support.ledger_rows import LEDGER, estimating_gateway


@pytest.fixture(scope="module")
async def estimating_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    async with estimating_gateway(tmp_path_factory.mktemp("stats-counts"), label="stats-gateway") as url:
        yield url


async def test_stats_names_the_estimated_status_and_counts_the_others(estimating_url: str) -> None:
    async with httpx.AsyncClient(base_url=estimating_url, timeout=10) as client:
        response = await client.get("/stats")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["jobs_by_status_estimated"] == ["succeeded"]
    counts = body["jobs_by_status"]
    assert counts["succeeded"] == pytest.approx(LEDGER[JobStatus.succeeded], rel=0.05)
    assert {s: n for s, n in counts.items() if s != "succeeded"} == {
        status.value: LEDGER.get(status, 0) for status in JobStatus if status is not JobStatus.succeeded
    }
