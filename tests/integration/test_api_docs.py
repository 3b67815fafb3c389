"""/docs and /redoc are served whole by the gateway: no CDN, no inline script, working offline."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Request, Route, expect

from tests.support.browser import CHROMIUM, MISSING, Watched, chromium, watched_page

PAGES = ("/docs", "/redoc")
REDOCLY_LOGO = "https://cdn.redoc.ly/"
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class _References(HTMLParser):
    """The URLs a page loads, and any script or style written into the page itself."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href", "spec-url", "data-openapi-url"):
            if values.get(name):
                self.urls.append(str(values[name]))
        if "style" in values or any(name.startswith("on") for name in values):
            self.inline.append(f"<{tag}> with an inline style or handler")
        if tag in ("script", "style"):
            self._open = tag

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None and data.strip():
            self.inline.append(f"inline <{self._open}>")


async def _references(client: httpx.AsyncClient, page: str) -> _References:
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    parsed = _References()
    parsed.feed(response.text)
    return parsed


@pytest.mark.parametrize("page", PAGES)
async def test_the_docs_pages_load_only_the_gateways_own_files(client: httpx.AsyncClient, page: str) -> None:
    parsed = await _references(client, page)

    assert parsed.inline == [], "the CSP allows no inline script"
    assert parsed.urls
    for url in parsed.urls:
        parts = urlsplit(url)
        assert not parts.scheme, f"{url} is on another origin"
        assert not parts.netloc, f"{url} is on another origin"
        assert parts.path.startswith("/"), url


@pytest.mark.parametrize("page", PAGES)
async def test_every_file_the_docs_pages_load_is_served(client: httpx.AsyncClient, page: str) -> None:
    parsed = await _references(client, page)
    assets = [url for url in parsed.urls if not url.endswith(".json")]
    assert any(url.split("?")[0].endswith(".js") for url in assets)

    for url in assets:
        response = await client.get(url)
        assert response.status_code == 200, url
        suffix = "." + urlsplit(url).path.rsplit(".", 1)[-1]
        assert response.headers["content-type"].startswith(CONTENT_TYPES[suffix]), url
        assert response.headers["x-content-type-options"] == "nosniff"
        assert len(response.content) > 100, url
    spec = [url for url in parsed.urls if url.endswith("/openapi.json")]
    assert spec, "the page reads the gateway's schema"
    assert (await client.get(spec[0])).json()["paths"]


# In a browser that can reach nothing but the gateway.

skip_browser = pytest.mark.skipif(not CHROMIUM.exists(), reason=MISSING)
if os.environ.get("GATEWAY_URL") and os.environ.get("DASHBOARD_TESTS") != "1":
    skip_browser = pytest.mark.skip(reason="browser tests run against a running stack only with DASHBOARD_TESTS=1")


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def _offline(base_url: str, route: Route) -> None:
    """Let requests to the gateway through and fail every other one, as if offline."""
    if route.request.url.startswith(base_url + "/"):
        await route.continue_()
    else:
        await route.abort("internetdisconnected")


def _note(failed: list[str], request: Request) -> None:
    failed.append(f"{request.url} {request.failure}")


@pytest.fixture
async def offline(browser: Browser, base_url: str) -> AsyncIterator[tuple[Watched, list[str]]]:
    """A page that reaches the gateway only, and the requests that failed (URL and reason)."""
    async for watched in watched_page(browser, {"width": 1280, "height": 900}):
        failed: list[str] = []
        watched.page.on("requestfailed", functools.partial(_note, failed))
        await watched.page.route("**/*", functools.partial(_offline, base_url))
        yield watched, failed


@skip_browser
async def test_swagger_ui_shows_the_operations_with_only_the_gateway_reachable(
    offline: tuple[Watched, list[str]], base_url: str
) -> None:
    watched, failed = offline

    await watched.page.goto(f"{base_url}/docs")

    operations = watched.page.locator(".opblock")
    await expect(operations.first).to_be_visible(timeout=15_000)
    assert await operations.count() >= 8
    await expect(watched.page.locator(".opblock-summary-path", has_text="/jobs/{job_id}/retry")).to_be_visible()
    assert failed == [], "the page tried to load something from another origin"


@skip_browser
async def test_redoc_shows_the_operations_with_only_the_gateway_reachable(
    offline: tuple[Watched, list[str]], base_url: str
) -> None:
    watched, failed = offline
    watched.expected = (REDOCLY_LOGO,)

    await watched.page.goto(f"{base_url}/redoc")

    await expect(watched.page.get_by_role("heading", name="Retry Job").first).to_be_attached(timeout=15_000)
    await expect(watched.page.get_by_role("heading", name="Submit Job").first).to_be_attached()
    # ReDoc's side menu shows Redocly's logo from Redocly's site: the CSP stops it before it is asked for.
    stopped = [url for url in failed if url.startswith(REDOCLY_LOGO) and url.endswith(" csp")]
    assert [url for url in failed if url not in stopped] == [], "the page tried to load something elsewhere"
