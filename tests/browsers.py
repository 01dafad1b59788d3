"""Headless Chromium for the tests of the pages the service serves: the browser, and a page that
notes its errors and every request it makes."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Error,
    Page,
    Request,
    ViewportSize,
    async_playwright,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAPTOP = ViewportSize(width=1440, height=900)
# Bounds that fail only on a hang: pages poll every few seconds on a busy machine.
WAIT_MS = 60_000


@asynccontextmanager
async def chromium(*args: str) -> AsyncIterator[Browser]:
    """Debian's Chromium, with `args` after the usual ones: Playwright never downloads one."""
    if not CHROMIUM.is_file():  # noqa: ASYNC240 (one stat, before any browser runs)
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *args]
        )
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Tab:
    """An open page, with the errors it reported and the requests it made so far."""

    page: Page
    errors: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def note_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def note_error(self, error: Error) -> None:
        self.errors.append(str(error))

    def note_request(self, request: Request) -> None:
        self.requests.append(request)


T = TypeVar("T", bound=Tab)


@asynccontextmanager
async def open_tab(browser: Browser, url: str, kind: type[T], **context: Any) -> AsyncIterator[T]:
    """`url` opened in a context of its own (a laptop's screen unless `context` says otherwise),
    noting from the start what the page reports and asks for."""
    opened_context = await browser.new_context(**{"viewport": LAPTOP, **context})
    page = await opened_context.new_page()
    tab = kind(page)
    page.on("console", tab.note_console)
    page.on("pageerror", tab.note_error)
    page.on("request", tab.note_request)
    try:
        await page.goto(url)
        yield tab
    finally:
        await opened_context.close()
