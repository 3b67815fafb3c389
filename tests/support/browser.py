"""Headless Chromium for the browser tests: Debian's ``chromium`` package, driven by Playwright.

Playwright never downloads a browser of its own here (``make browser`` installs Debian's). A
:class:`Watched` page records its console errors, uncaught exceptions and Content-Security-Policy
violations; the tests fail on any.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, ConsoleMessage, Error, Page, async_playwright

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MISSING = (
    f"{CHROMIUM} is missing: install Debian's chromium (`sudo apt-get install chromium`, or `make browser` "
    "as root) to run the browser tests"
)

_REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.__reportCspViolation(`${event.violatedDirective} blocked ${event.blockedURI || "inline"}`);
});
"""
"""Runs in every document before its own scripts (Playwright's init scripts are exempt from the CSP)."""


@dataclass
class Watched:
    """A page, and the console errors, uncaught exceptions and CSP violations it produced."""

    page: Page
    problems: list[str] = field(default_factory=list)
    expected: tuple[str, ...] = ()
    """Substrings of console errors and CSP violations a test expects (and checks by itself)."""

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self._problem(f"console error: {message.text} ({message.location})")

    def _page_error(self, error: Error) -> None:
        self._problem(f"page error: {error.message}")

    def _violation(self, text: str) -> None:
        self._problem(f"CSP violation: {text}")

    def _problem(self, text: str) -> None:
        if not any(expected in text for expected in self.expected):
            self.problems.append(text)

    async def watch(self) -> Watched:
        self.page.on("console", self._console)
        self.page.on("pageerror", self._page_error)
        await self.page.expose_function("__reportCspViolation", self._violation)
        await self.page.add_init_script(_REPORT_VIOLATIONS)
        return self


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def watched_page(browser: Browser, viewport: dict[str, int], **options: Any) -> AsyncIterator[Watched]:
    """A new page in a context of its own; fails the test if the page had any problem."""
    context = await browser.new_context(viewport={"width": viewport["width"], "height": viewport["height"]}, **options)
    try:
        watched = await Watched(await context.new_page()).watch()
        yield watched
        assert watched.problems == [], f"the page logged errors: {watched.problems}"
    finally:
        await context.close()
