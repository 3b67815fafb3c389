"""The dashboard in a real headless Chromium, driven by Playwright.

The browser is Debian's ``chromium`` package (``make browser`` installs it; tests/support/browser.py).
Each test fails on any console error, uncaught page error or Content-Security-Policy violation.
The screenshots go to ``test-artifacts/`` at the repository's root.

Against a running stack (``GATEWAY_URL``) these tests are skipped unless ``DASHBOARD_TESTS=1``.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from services.contract import JobStatus
from tests.support.browser import CHROMIUM, MISSING, Watched, chromium, watched_page
from tests.support.jobs_client import wait_for_job
from tests.support.ledger_rows import LEDGER, estimating_gateway
from tests.support.lone_gateway import lone_gateway
from tests.support.observers import Observer
from tests.support.services import REPO
from tests.support.sse import collapse

ARTIFACTS = REPO / "test-artifacts"
LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
UPDATE_MS = 15_000
"""How long a test waits for the page to show a change (it polls every 2 s)."""

if os.environ.get("GATEWAY_URL") and os.environ.get("DASHBOARD_TESTS") != "1":
    pytest.skip("dashboard tests run against a running stack only with DASHBOARD_TESTS=1", allow_module_level=True)
if not CHROMIUM.exists():
    pytest.skip(MISSING, allow_module_level=True)


async def open_dashboard(watched: Watched, url: str) -> None:
    """Load the dashboard and wait for its first round of data."""
    response = await watched.page.goto(url)
    assert response is not None
    assert response.status == 200
    await expect(watched.page.locator("body")).to_have_attribute("data-ready", "true", timeout=UPDATE_MS)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def laptop(browser: Browser) -> AsyncIterator[Watched]:
    """A laptop-size page; the test fails if it logs a console error or violates the CSP."""
    async for watched in watched_page(browser, LAPTOP):
        yield watched


async def _post(client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    response = await client.post("/jobs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def _write_log(**extra: Any) -> dict[str, Any]:
    return {"name": "write_log", "payload": {"message": f"dashboard {uuid.uuid4().hex}"}, **extra}


def _row(page: Page, table: str, job_id: str) -> Any:
    return page.locator(f'[data-testid="{table}"] tr[data-job-id="{job_id}"]')


async def test_a_new_job_shows_up_and_reaches_succeeded(
    laptop: Watched, base_url: str, client: httpx.AsyncClient
) -> None:
    page = laptop.page
    await open_dashboard(laptop, f"{base_url}/dashboard")
    await expect(page.get_by_test_id("queue-depth")).to_have_text(re.compile(r"^\d+$"))
    await expect(page.get_by_test_id("worker")).not_to_have_count(0)
    await expect(page.get_by_test_id("status-count")).to_have_count(7)
    await expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "live")

    others = [
        await _post(
            client, {"name": "update_user", "payload": {"email": f"u-{uuid.uuid4().hex[:8]}@example.com", "name": "U"}}
        ),
        await _post(client, {"name": "cleanup_temp_files", "payload": {}}),
        await _post(client, _write_log()),
    ]
    job_id = await _post(client, _write_log())

    row = _row(page, "recent-jobs", job_id)
    await expect(row).to_have_attribute("data-status", "succeeded", timeout=UPDATE_MS)
    await expect(row).to_contain_text("write_log")
    for other in others:
        await expect(_row(page, "recent-jobs", other)).to_have_attribute("data-status", "succeeded", timeout=UPDATE_MS)
    await expect(page.locator("#throughput-chart rect.ok")).not_to_have_count(0)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)


async def test_a_failed_job_is_listed_and_its_retry_button_runs_it_again(
    laptop: Watched, base_url: str, client: httpx.AsyncClient, observer: Observer
) -> None:
    sink = observer.require_sink()
    page = laptop.page
    address = f"dash-{uuid.uuid4().hex[:10]}@example.com"
    sink.refuse(address, 550)
    try:
        job_id = await _post(
            client, {"name": "send_email", "payload": {"to": address, "subject": "Dash", "body": "Hello"}}
        )
        assert (await wait_for_job(client, job_id))["status"] == "failed"
        await open_dashboard(laptop, f"{base_url}/dashboard")
        failed_row = _row(page, "failed-jobs", job_id)
        await expect(failed_row).to_have_attribute("data-status", "failed", timeout=UPDATE_MS)
        await expect(failed_row).to_contain_text("550")
        await expect(failed_row.locator('[data-action="cancel"]')).to_have_count(0)
    finally:
        sink.accept(address)

    await failed_row.locator('[data-action="retry"]').click()

    await expect(_row(page, "recent-jobs", job_id)).to_have_attribute("data-status", "succeeded", timeout=UPDATE_MS)
    await expect(failed_row).to_have_count(0, timeout=UPDATE_MS)
    job = (await client.get(f"/jobs/{job_id}")).json()
    assert job["status"] == "succeeded"
    assert [a["outcome"] for a in job["attempts"]] == ["failed", "succeeded"]
    assert len(await observer.emails_to(address)) == 1


async def test_a_job_opens_in_a_detail_view_that_follows_it_live(
    laptop: Watched, base_url: str, client: httpx.AsyncClient
) -> None:
    page = laptop.page
    await open_dashboard(laptop, f"{base_url}/dashboard")
    body = _write_log(defer_by=3)
    job_id = await _post(client, body)
    row = _row(page, "recent-jobs", job_id)
    await expect(row).to_have_attribute("data-status", "deferred", timeout=UPDATE_MS)

    await row.locator("td").first.click()

    await expect(page).to_have_url(f"{base_url}/dashboard#/jobs/{job_id}")
    detail = page.get_by_test_id("job-detail")
    await expect(detail).to_be_visible()
    await expect(page.get_by_test_id("detail-id")).to_have_text(job_id)
    await expect(page.get_by_test_id("detail-payload")).to_contain_text(body["payload"]["message"])
    await expect(page.get_by_test_id("detail-status")).to_have_attribute("data-status", "succeeded", timeout=UPDATE_MS)
    await expect(page.get_by_test_id("attempt")).to_have_count(1)
    await expect(page.get_by_test_id("attempt")).to_contain_text("succeeded")
    events = page.get_by_test_id("detail-event")
    await expect(events.last).to_have_attribute("data-status", "succeeded")
    statuses = [await e.get_attribute("data-status") or "" for e in await events.all()]
    assert collapse(statuses) == ["deferred", "in_progress", "succeeded"], "followed through the event stream"
    await page.screenshot(path=ARTIFACTS / "dashboard-job.png", full_page=True)

    await page.get_by_test_id("back").click()
    await expect(page.get_by_test_id("recent-jobs")).to_be_visible()


async def test_the_lists_filter_by_status_and_name(laptop: Watched, base_url: str, client: httpx.AsyncClient) -> None:
    page = laptop.page
    job_id = await _post(client, _write_log())
    await wait_for_job(client, job_id)
    await open_dashboard(laptop, f"{base_url}/dashboard")

    await page.get_by_test_id("filter-status").select_option("succeeded")
    await page.get_by_test_id("filter-name").select_option("write_log")

    await expect(page).to_have_url(f"{base_url}/dashboard#/?status=succeeded&name=write_log")
    rows = page.locator('[data-testid="recent-jobs"] tr')
    await expect(_row(page, "recent-jobs", job_id)).to_be_visible(timeout=UPDATE_MS)
    await expect(page.locator('[data-testid="recent-jobs"] tr:not([data-status="succeeded"])')).to_have_count(0)
    await expect(page.locator('[data-testid="recent-jobs"] tr:not([data-name="write_log"])')).to_have_count(0)
    assert set(await rows.locator("td:nth-child(2)").all_inner_texts()) == {"write_log"}

    await page.get_by_test_id("filter-status").select_option("failed")
    await expect(page.locator('[data-testid="recent-jobs"] tr:not([data-status="failed"])')).to_have_count(
        0, timeout=UPDATE_MS
    )


async def test_the_dashboard_fits_a_phone(browser: Browser, base_url: str, client: httpx.AsyncClient) -> None:
    await wait_for_job(client, await _post(client, _write_log()))
    async for phone in watched_page(
        browser, PHONE, device_scale_factor=2, is_mobile=True, has_touch=True, color_scheme="dark"
    ):
        await open_dashboard(phone, f"{base_url}/dashboard")
        await expect(phone.page.get_by_test_id("recent-jobs").locator("tr").first).to_be_visible(timeout=UPDATE_MS)
        overflow = await phone.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, "nothing sticks out sideways"
        ARTIFACTS.mkdir(exist_ok=True)
        await phone.page.screenshot(path=ARTIFACTS / "dashboard-phone.png", full_page=True)


async def test_another_page_cannot_frame_the_dashboard(browser: Browser, base_url: str) -> None:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        async with page.expect_console_message(lambda m: "frame-ancestors" in m.text, timeout=UPDATE_MS):
            await page.set_content(f'<iframe src="{base_url}/dashboard" width="1200" height="800"></iframe>')
        framed = page.frames[1]
        assert await framed.locator("[data-testid=overview]").count() == 0, "the dashboard was shown in the frame"
        assert await framed.locator("button").count() == 0
    finally:
        await context.close()


# A gateway with API keys: the page loads, its data calls get 401 and it asks for a key; a read key
# shows the data, a button asks for a full key on 403; every call, the event stream included,
# carries the key as X-API-Key and never in its URL.

KEY = "dashboard-key-" + uuid.uuid4().hex
READ_KEY = "dashboard-read-key-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
async def secured_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A gateway with a full and a read key, on a database and Redis of its own, and no worker (jobs wait)."""
    workdir = tmp_path_factory.mktemp("dashboard-secured")
    env = {"API_READ_KEYS": READ_KEY}
    async with lone_gateway(workdir, api_keys=KEY, extra_env=env, label="dashboard-gateway") as (url, _gateway):
        yield url


async def _give_key(page: Page, key: str, reason: str) -> None:
    await expect(page.get_by_test_id("api-key-dialog")).to_be_visible(timeout=UPDATE_MS)
    await expect(page.get_by_test_id("api-key-reason")).to_contain_text(reason)
    await page.get_by_test_id("api-key-input").fill(key)
    await page.get_by_test_id("api-key-save").click()


async def test_with_api_keys_the_page_asks_for_a_key_on_401_and_then_shows_the_data(
    laptop: Watched, secured_url: str
) -> None:
    page = laptop.page
    laptop.expected = ("status of 401", "status of 403")  # Chromium logs each refused call; the page asks
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    async with httpx.AsyncClient(base_url=secured_url, timeout=10, headers={"X-API-Key": KEY}) as secured:
        first = await _post(secured, _write_log(defer_by=3600))

        response = await page.goto(f"{secured_url}/dashboard")
        assert response is not None
        assert response.status == 200, "the page itself loads without a key"
        await _give_key(page, READ_KEY, "read key")

        await expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=UPDATE_MS)
        row = _row(page, "recent-jobs", first)
        await expect(row).to_have_attribute("data-status", "deferred", timeout=UPDATE_MS)
        await expect(page.get_by_test_id("status-count")).to_have_count(7)
        assert await page.evaluate("localStorage.getItem('afterword.apiKey')") == READ_KEY

        await row.locator('[data-action="cancel"]').click()  # a read key: 403, and the page asks for a full key
        await _give_key(page, KEY, "may only read")

        await expect(row).to_have_attribute("data-status", "cancelled", timeout=UPDATE_MS)
        assert await page.evaluate("localStorage.getItem('afterword.apiKey')") == KEY

        second = await _post(secured, _write_log(defer_by=3600))
        row = _row(page, "recent-jobs", second)
        await expect(row).to_have_attribute("data-status", "deferred", timeout=UPDATE_MS)
        await row.locator('[data-action="cancel"]').click()
        await expect(row).to_have_attribute("data-status", "cancelled", timeout=UPDATE_MS)
        await expect(page.get_by_test_id("api-key-dialog")).to_be_hidden()
        assert (await secured.get(f"/jobs/{second}")).json()["status"] == "cancelled"
    for key in (KEY, READ_KEY):
        assert not [url for url in urls if key in url], "a key travelled in a URL"


async def test_with_api_keys_the_detail_view_follows_the_event_stream_with_the_key(
    laptop: Watched, secured_url: str
) -> None:
    page = laptop.page
    streams: list[dict[str, str]] = []
    page.on("request", lambda request: streams.append(request.headers) if request.url.endswith("/events") else None)
    await page.add_init_script(f"localStorage.setItem('afterword.apiKey', '{READ_KEY}')")
    async with httpx.AsyncClient(base_url=secured_url, timeout=10, headers={"X-API-Key": KEY}) as secured:
        job_id = await _post(secured, _write_log(defer_by=3600))

        await open_dashboard(laptop, f"{secured_url}/dashboard#/jobs/{job_id}")
        events = page.get_by_test_id("detail-event")
        await expect(events.first).to_have_attribute("data-status", "deferred", timeout=UPDATE_MS)
        assert (await secured.delete(f"/jobs/{job_id}")).status_code == 200

        await expect(events.last).to_have_attribute("data-status", "cancelled", timeout=UPDATE_MS)
        await expect(page.get_by_test_id("detail-status")).to_have_attribute("data-status", "cancelled")
    assert streams, "the page opened the event stream"
    assert all(headers.get("x-api-key") == READ_KEY for headers in streams)


# A ledger larger than STATS_EXACT_COUNT_LIMIT: the estimated count is marked as such.


async def test_an_estimated_count_shows_as_approximate(laptop: Watched, tmp_path: Path) -> None:
    page = laptop.page
    async with estimating_gateway(tmp_path, label="dashboard-estimating-gateway") as url:
        await open_dashboard(laptop, f"{url}/dashboard")
        succeeded = page.locator('[data-testid="status-count"][data-status="succeeded"] b')
        failed = page.locator('[data-testid="status-count"][data-status="failed"] b')

        await expect(succeeded).to_have_text(re.compile(r"^≈ \d+$"))
        await expect(succeeded).to_have_attribute("title", "estimated by Postgres")
        await expect(failed).to_have_text(str(LEDGER[JobStatus.failed]))
        await page.goto("about:blank")  # no more polls: the gateway stops next
