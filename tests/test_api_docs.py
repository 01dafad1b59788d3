"""The API's documentation at `/docs` (Swagger UI) and `/redoc` (ReDoc): served from the package
under a policy that lets them talk only to this service, and, in headless Chromium against a real
server, showing every operation and trying one out with a pasted key, asking no other host."""

import json
import re
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.browsers import WAIT_MS, Tab, chromium, open_tab
from tests.conftest import UNLIMITED_ENV, ClientFactory, Keys
from tests.servers import Server, running_server
from tokenpulse.app import create_app
from tokenpulse.settings import Settings

# The pages are browsed at a name, as a deployment's are: viewers may spare a loopback address
# what they do elsewhere, such as Swagger UI's asking a public validator about the document.
HOST = "api.tokenpulse.test"
POLICY = (
    "default-src 'none'; script-src 'self'; "
    "style-src 'self' 'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=' "
    "'sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc='; img-src 'self' data:; "
    "connect-src 'self'; worker-src blob:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def operations() -> list[dict[str, Any]]:
    # Building the document needs no database connection.
    document = create_app(Settings(database_url="postgresql://unused@127.0.0.1/unused")).openapi()
    return [operation for methods in document["paths"].values() for operation in methods.values()]


def summaries() -> set[str]:
    return {operation["summary"] for operation in operations()}


def secured() -> int:
    """How many operations take a key."""
    return sum("security" in operation for operation in operations())


async def test_the_pages_load_without_a_key_and_may_run_only_this_services_files(
    make_client: ClientFactory,
) -> None:
    async with make_client(token=None) as client:
        pages = {path: await client.get(path) for path in ("/docs", "/redoc")}
        linked = {
            path
            for page in pages.values()
            for path in re.findall(r'(?:src|href)="(/[^"]*)"', page.text)
        }
        files = {path: await client.get(path) for path in sorted(linked)}
        fastapi_own = await client.get("/docs/oauth2-redirect")

    for page in pages.values():
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["content-security-policy"] == POLICY
        assert page.headers["x-content-type-options"] == "nosniff"
        assert re.findall(r"<script(?![^>]*\ssrc=)", page.text) == []
        assert not re.search(r"\s(style|on\w+)=", page.text)
        assert not re.search(r"https?://", page.text)
    assert {
        path: (answer.status_code, answer.headers["content-type"]) for path, answer in files.items()
    } == {
        "/dashboard/favicon.svg": (200, "image/svg+xml"),
        "/docs/swagger-ui/swagger-ui.css": (200, "text/css; charset=utf-8"),
        "/docs/swagger-ui/swagger-ui-bundle.js": (200, "text/javascript; charset=utf-8"),
        "/docs/swagger-init.js": (200, "text/javascript; charset=utf-8"),
        "/docs/redoc/redoc.standalone.js": (200, "text/javascript; charset=utf-8"),
    }
    assert fastapi_own.status_code == 404


async def test_the_viewers_come_with_their_licences_and_nothing_else_is_served(
    client: httpx.AsyncClient,
) -> None:
    licences = {
        path: await client.get(path)
        for path in ("/docs/swagger-ui/LICENSE", "/docs/swagger-ui/NOTICE", "/docs/redoc/LICENSE")
    }
    bundle = await client.get("/docs/redoc/redoc.standalone.js")
    again = await client.get(
        "/docs/redoc/redoc.standalone.js", headers={"If-None-Match": bundle.headers["etag"]}
    )
    unknown = [
        await client.get(path)
        for path in ("/docs/router.py", "/docs/docs.html", "/docs/../app.py", "/docs/")
    ]

    assert {path: answer.status_code for path, answer in licences.items()} == dict.fromkeys(
        licences, 200
    )
    assert "Apache License" in licences["/docs/swagger-ui/LICENSE"].text
    assert "SmartBear" in licences["/docs/swagger-ui/NOTICE"].text
    assert "MIT License" in licences["/docs/redoc/LICENSE"].text
    assert bundle.headers["cache-control"] == "no-cache"
    assert (again.status_code, again.content) == (304, b"")
    assert [answer.status_code for answer in unknown] == [404] * len(unknown)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium(f"--host-resolver-rules=MAP {HOST} 127.0.0.1") as launched:
        yield launched


class Viewer(Tab):
    def origins(self) -> set[str]:
        """Where the page's requests went; a blob's is the origin that made it."""
        return {
            f"{parts.scheme}://{parts.netloc}"
            for request in self.requests
            if not request.url.startswith("data:")
            for parts in [urlsplit(request.url.removeprefix("blob:"))]
        }


@asynccontextmanager
async def viewer(browser: Browser, server: Server, path: str) -> AsyncIterator[Viewer]:
    """`path` opened on `server`, noting errors and every request the page makes."""
    async with open_tab(browser, site(server) + path, Viewer, locale="en-GB") as opened:
        yield opened


def site(server: Server) -> str:
    return f"http://{HOST}:{server.port}"


def serve(database_url: str, log_dir: Path) -> AbstractContextManager[Server]:
    return running_server(log_dir, env={"TOKENPULSE_DATABASE_URL": database_url, **UNLIMITED_ENV})


@pytest.mark.process
async def test_swagger_ui_shows_every_operation_and_tries_one_out_with_a_pasted_key(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path, browser: Browser
) -> None:
    read = await keys.create("read")
    with serve(database_url, tmp_path) as server:
        async with viewer(browser, server, "/docs") as docs:
            page = docs.page
            totals = page.locator("#operations-aggregates-getTotals")
            await totals.wait_for(timeout=WAIT_MS)
            shown = set(await page.locator(".opblock-summary-description").all_inner_texts())
            await page.click("button.authorize")
            await page.fill("#auth-bearer-value", read)
            await page.click(".auth-btn-wrapper button[type=submit]")
            await page.click(".auth-btn-wrapper button.btn-done")
            await totals.locator(".opblock-summary").click()
            await totals.locator("button.try-out__btn").click()
            await totals.locator('tr[data-param-name="window"] select').select_option("24h")
            await totals.locator("button.execute").click()
            answer = totals.locator(".live-responses-table tr.response")
            await answer.wait_for(timeout=WAIT_MS)
            answered = await answer.locator(".response-col_status").inner_text()
            body = await answer.locator("code.language-json").inner_text()

    assert shown == summaries()
    assert answered.strip() == "200"
    assert json.loads(body)["results"] == []
    tried = [request for request in docs.requests if "/v1/totals" in request.url]
    assert [request.headers.get("authorization") for request in tried] == [f"Bearer {read}"]
    assert docs.origins() == {site(server)}
    assert docs.errors == []


@pytest.mark.process
async def test_redoc_shows_every_operation_and_the_scope_of_the_key_each_needs(
    database_url: str, tmp_path: Path, browser: Browser
) -> None:
    with serve(database_url, tmp_path) as server:
        async with viewer(browser, server, "/redoc") as docs:
            page = docs.page
            await page.locator("h2").filter(has_text="Totals").wait_for(timeout=WAIT_MS)
            headings = {heading.strip() for heading in await page.locator("h2").all_inner_texts()}
            text = await page.inner_text("body")

    assert summaries() <= headings
    assert "Needs a key with the read scope." in text
    assert text.lower().count("authorizations:") == secured()
    assert docs.origins() == {site(server)}
    assert docs.errors == []
