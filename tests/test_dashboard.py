"""The dashboard at `/`: its files and headers, and, in headless Chromium against a real server,
that it shows what the API answers, follows new events and keeps a tenant's key to its tenant."""

import asyncio
import re
import shutil
import struct
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, ViewportSize
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.browsers import LAPTOP, WAIT_MS, Tab, chromium, open_tab
from tests.conftest import ClientFactory, Keys, bearer
from tests.factories import event
from tests.servers import Server, running_server
from tokenpulse.instants import format_rfc3339
from tokenpulse.simulator.launchday import LaunchDay, occurred_at
from tokenpulse.simulator.prices import table_prices

PHONE = ViewportSize(width=390, height=844)
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "dashboard.png"
SEND_BATCH = 5000
SEND_IN_FLIGHT = 2


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@contextmanager
def tokenpulse(database_url: str, log_dir: Path, *args: str) -> Iterator[Server]:
    """A real server with the default rate limits: the page must live within them."""
    # The launch is loaded as fast as the server takes it, past a tenant's events a second.
    env = {"TOKENPULSE_DATABASE_URL": database_url, "TOKENPULSE_RATE_LIMIT_INGEST_EVENTS": "0"}
    with running_server(log_dir, *args, env=env) as server:
        yield server


class Dashboard(Tab):
    async def wait_for_title(self, selector: str, title: str) -> None:
        await self.page.wait_for_function(
            "([selector, title]) => document.querySelector(selector)?.title === title",
            arg=[selector, title],
            timeout=WAIT_MS,
        )

    async def wait_for_text(self, selector: str, text: str) -> None:
        await self.page.wait_for_function(
            "([selector, text]) => document.querySelector(selector)?.textContent === text",
            arg=[selector, text],
            timeout=WAIT_MS,
        )

    async def tenants(self) -> list[tuple[str, str]]:
        """(tenant, exact tokens) of each row of the top tenants."""
        rows = self.page.locator("#tenants li[data-tenant]")
        return [
            (
                await row.get_attribute("data-tenant") or "",
                await row.locator(".value").get_attribute("title") or "",
            )
            for row in await rows.all()
        ]


@asynccontextmanager
async def dashboard(browser: Browser, server: Server, key: str) -> AsyncIterator[Dashboard]:
    """The page opened on `server`, `key` pasted into its prompt, noting errors and requests."""
    async with open_tab(
        browser, server.url + "/", Dashboard, timezone_id="UTC", locale="en-GB"
    ) as opened:
        await opened.page.fill("#key", key)
        await opened.page.click("#key-form button[type=submit]")
        yield opened


def tokens(total: int) -> str:
    """An exact count as the page's hover titles write it."""
    return f"{total:,} tokens"


def minute_floor(instant: datetime) -> datetime:
    return instant.replace(second=0, microsecond=0)


async def put_launch(http: httpx.AsyncClient, admin: str, model: str, at: datetime) -> None:
    response = await http.put(
        f"/v1/launches/{model}", json={"launched_at": format_rfc3339(at)}, headers=bearer(admin)
    )
    assert response.status_code in (200, 201), response.text


async def send(http: httpx.AsyncClient, ingest: str, events: list[dict[str, Any]]) -> None:
    response = await http.post("/v1/events", json={"events": events}, headers=bearer(ingest))
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(events)


async def since_launch(http: httpx.AsyncClient, read: str, model: str) -> int:
    response = await http.get(f"/v1/launches/{model}", headers=bearer(read))
    assert response.status_code == 200, response.text
    total: int = response.json()["since_launch"]["total_tokens"]
    return total


async def top_tenants(http: httpx.AsyncClient, read: str) -> list[tuple[str, str]]:
    response = await http.get(
        "/v1/totals", params={"window": "24h", "group_by": "tenant"}, headers=bearer(read)
    )
    results = sorted(response.json()["results"], key=lambda r: (-r["total_tokens"], r["tenant"]))
    return [(r["tenant"], tokens(r["total_tokens"])) for r in results[:10]]


def charted(model: str, hovers: list[str]) -> int:
    """The tokens of `model` that the chart's minutes say, added up from their hover titles."""
    line = re.compile(rf"^{re.escape(model)}: ([\d,]+) tokens$", re.M)
    return sum(int(found.replace(",", "")) for hover in hovers for found in line.findall(hover))


def usage_of(
    tenant: str, model: str, count: int, end: datetime, *, scale: int = 1
) -> list[dict[str, Any]]:
    """`count` events of `tenant`, one a minute up to `end`, of growing size (times `scale`)."""
    return [
        event(
            tenant=tenant,
            model=model,
            at=end - timedelta(minutes=minute),
            input_tokens=scale * (1000 * (minute + 1) + len(tenant)),
            cached_input_tokens=scale * 100 * minute,
            output_tokens=scale * 300 * minute,
        )
        for minute in range(count)
    ]


async def test_the_page_loads_without_a_key_and_may_run_only_its_own_files(
    make_client: ClientFactory,
) -> None:
    async with make_client(token=None) as client:
        page = await client.get("/")
        linked = re.findall(r'(?:src|href)="(/[^"]*)"', page.text)
        files = {path: await client.get(path) for path in linked}

    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    assert page.headers["x-content-type-options"] == "nosniff"
    assert re.findall(r"<script(?![^>]*\ssrc=)", page.text) == []
    assert not re.search(r"\s(style|on\w+)=", page.text)
    assert {
        path: (answer.status_code, answer.headers["content-type"]) for path, answer in files.items()
    } == {
        "/dashboard/favicon.svg": (200, "image/svg+xml"),
        "/dashboard/dashboard.css": (200, "text/css; charset=utf-8"),
        "/dashboard/dashboard.js": (200, "text/javascript; charset=utf-8"),
    }
    assert all(answer.headers["x-content-type-options"] == "nosniff" for answer in files.values())


async def test_a_file_the_browser_holds_already_is_answered_304_and_others_404(
    client: httpx.AsyncClient,
) -> None:
    first = await client.get("/dashboard/dashboard.js")
    again = await client.get(
        "/dashboard/dashboard.js", headers={"If-None-Match": first.headers["etag"]}
    )
    changed = await client.get("/dashboard/dashboard.js", headers={"If-None-Match": '"old"'})
    unknown = await client.get("/dashboard/router.py")

    assert first.headers["cache-control"] == "no-cache"
    assert (again.status_code, again.content) == (304, b"")
    assert (changed.status_code, changed.content) == (200, first.content)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"


@pytest.mark.process
async def test_the_page_shows_the_totals_the_api_answers_and_follows_new_events(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path, browser: Browser
) -> None:
    now = datetime.now(UTC)
    ingest, read = await keys.create("ingest"), await keys.create("read")
    with tokenpulse(database_url, tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            await put_launch(http, keys.admin, "m-large", minute_floor(now) - timedelta(minutes=30))
            await send(http, ingest, usage_of("acme", "m-large", 20, now))
            await send(http, ingest, usage_of("globex", "m-large", 5, now))
            await send(http, ingest, usage_of("initech", "m-small", 8, now))
            before = await since_launch(http, read, "m-large")

            async with dashboard(browser, server, read) as page:
                await page.wait_for_title("#counter", tokens(before))
                assert await page.tenants() == await top_tenants(http, read)
                legend = await page.page.locator("#legend .model").all_inner_texts()
                assert sorted(legend) == ["m-large", "m-small"]

                await send(http, ingest, usage_of("hooli", "m-large", 3, datetime.now(UTC)))
                after = await since_launch(http, read, "m-large")
                await page.wait_for_title("#counter", tokens(after))
                await page.wait_for_text("#counter", f"{after:,}")
                tenants_after = await page.tenants()
                readiness = await page.page.inner_text("#readiness")
                stored = await page.page.evaluate("localStorage.getItem('tokenpulse.key')")

            assert tenants_after == await top_tenants(http, read)

    assert after > before
    assert "hooli" in dict(tenants_after)
    assert readiness == "ready"
    assert page.errors == []
    assert stored == read
    api_calls = [request for request in page.requests if "/v1/" in request.url]
    assert api_calls
    assert all(request.headers.get("authorization") == f"Bearer {read}" for request in api_calls)
    assert not any(read in request.url for request in page.requests)


@pytest.mark.process
async def test_a_tenant_bound_key_shows_only_its_own_tenant(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path, browser: Browser
) -> None:
    now = datetime.now(UTC)
    ingest, platform = await keys.create("ingest"), await keys.create("read")
    acme = await keys.create("read", tenant="acme")
    with tokenpulse(database_url, tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            await put_launch(http, keys.admin, "m-large", minute_floor(now) - timedelta(hours=1))
            # Whole minutes only, which is what the chart draws.
            await send(http, ingest, usage_of("acme", "m-large", 10, now - timedelta(minutes=1)))
            await send(http, ingest, usage_of("globex", "m-large", 30, now - timedelta(minutes=1)))
            everyone = await since_launch(http, platform, "m-large")
            own = await since_launch(http, acme, "m-large")

            async with dashboard(browser, server, acme) as page:
                await page.wait_for_title("#counter", tokens(own))
                await page.page.wait_for_selector("#tenants li[data-tenant]", timeout=WAIT_MS)
                shown_tenants = await page.tenants()
                hovers = await page.page.locator("#chart rect.hover title").all_text_contents()
            own_tenants = await top_tenants(http, acme)

    assert 0 < own < everyone
    assert shown_tenants == own_tenants
    assert [tenant for tenant, _ in shown_tenants] == ["acme"]
    assert charted("m-large", hovers) == own
    assert page.errors == []


def dollars(amount: str) -> str:
    """An exact amount as the page's hover titles write it."""
    return f"{amount} usd"


async def put_prices(http: httpx.AsyncClient, admin: str, model: str, at: datetime) -> None:
    body = {
        "effective_from": format_rfc3339(minute_floor(at)),
        "per_million_tokens": {"input": "50", "cached_input": "5", "output": "150"},
    }
    response = await http.put(f"/v1/prices/{model}", json=body, headers=bearer(admin))
    assert response.status_code == 201, response.text


@pytest.mark.process
async def test_the_page_shows_spend_beside_tokens_once_prices_exist(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path, browser: Browser
) -> None:
    now = datetime.now(UTC)
    launched = minute_floor(now) - timedelta(minutes=30)
    ingest, read = await keys.create("ingest"), await keys.create("read")
    with tokenpulse(database_url, tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            await put_launch(http, keys.admin, "m-large", launched)
            await put_prices(http, keys.admin, "m-large", launched)
            # Some $2,000 of m-large, past the first spend milestone of $1,000; m-small
            # is not priced.
            await send(http, ingest, usage_of("acme", "m-large", 20, now, scale=100))
            await send(http, ingest, usage_of("globex", "m-large", 5, now, scale=100))
            await send(http, ingest, usage_of("initech", "m-small", 8, now))
            summary = (await http.get("/v1/launches/m-large", headers=bearer(read))).json()
            thousand = await http.get(
                "/v1/milestones",
                params={"model": "m-large", "metric": "cost", "threshold": "1000"},
                headers=bearer(read),
            )
            tenants = await http.get(
                "/v1/totals", params={"window": "24h", "group_by": "tenant"}, headers=bearer(read)
            )
            hour = await http.get(
                "/v1/usage",
                params={
                    "bucket": "1m",
                    "start": format_rfc3339(minute_floor(now) - timedelta(minutes=60)),
                    "group_by": "model",
                },
                headers=bearer(read),
            )

            async with dashboard(browser, server, read) as page:
                spent = summary["since_launch"]["cost"]
                await page.wait_for_title("#spend", dollars(spent))
                spend_text = await page.page.inner_text("#spend")
                spends = {
                    await row.get_attribute("data-tenant"): await row.locator(
                        ".spend"
                    ).get_attribute("title")
                    for row in await page.page.locator("#tenants li[data-tenant]").all()
                }
                milestones = page.page.locator('#milestones li[data-metric="cost"]')
                await milestones.first.wait_for(timeout=WAIT_MS)
                cost_milestones = [
                    (
                        await item.get_attribute("class"),
                        await item.locator(".detail").get_attribute("title"),
                    )
                    for item in await milestones.all()
                ]
                tokens_title = await page.page.text_content("#chart-title")
                await page.page.click("#show-cost")
                await page.wait_for_text("#chart-title", "cost per minute, last hour")
                hovers = await page.page.locator("#chart rect.hover title").all_text_contents()
                pressed = await page.page.get_attribute("#show-cost", "aria-pressed")
                remembered = await page.page.evaluate("localStorage.getItem('tokenpulse.chart')")

    assert spent is not None
    assert spend_text == f"${float(spent):,.2f} spent since launch"
    assert spends == {
        r["tenant"]: "not priced" if r["cost"] is None else dollars(r["cost"])
        for r in tenants.json()["results"]
    }
    assert spends["initech"] == "not priced"
    reached = thousand.json()
    assert reached["reached"] is True
    assert cost_milestones[0] == (
        "reached",
        f"{reached['crossed_at']}, event {reached['event_id']}",
    )
    assert [state for state, _ in cost_milestones[1:]] == ["next", "later", "later"]
    to_go = format((Decimal("10000") - Decimal(spent)).normalize(), "f")
    assert cost_milestones[1][1] == f"{dollars(to_go)} to go"
    assert tokens_title == "tokens per minute, last hour"
    # Every priced minute of the hour, as /v1/usage prices it; the minute still running is not
    # drawn.
    charted_costs = sorted(
        line.removeprefix("m-large: ")
        for hover in hovers
        for line in hover.splitlines()
        if line.startswith("m-large: ") and line != "m-large: not priced"
    )
    priced_minutes = sorted(
        dollars(result["cost"])
        for bucket in hour.json()["data"][:-1]
        for result in bucket["results"]
        if result["model"] == "m-large"
    )
    assert charted_costs == priced_minutes
    assert pressed == "true"
    assert remembered == "cost"
    assert page.errors == []


@pytest.mark.process
async def test_a_key_the_api_refuses_brings_back_the_prompt_with_the_reason(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path, browser: Browser
) -> None:
    ingest = await keys.create("ingest")
    with tokenpulse(database_url, tmp_path) as server:
        async with dashboard(browser, server, "tp_0123456789abcdef_not-a-secret") as page:
            await page.wait_for_text("#key-problem", "the API key is unknown or revoked")
            await page.page.fill("#key", ingest)
            await page.page.click("#key-form button[type=submit]")
            await page.wait_for_text(
                "#key-problem", "this key has the ingest scope; this needs read"
            )
            prompted = await page.page.is_visible("#key-dialog")
            stored = await page.page.evaluate("localStorage.getItem('tokenpulse.key')")

    assert prompted
    assert stored is None


# A launch two hours ago, busy enough for pulse-2 to pass its first milestone, 10^9 tokens. The
# day runs a little past now: what lies ahead is never sent (see `send_so_far`).
def launch_day(start: datetime) -> LaunchDay:
    return LaunchDay(
        start=start,
        seed=22,
        models=("pulse-2", "pulse-2-mini"),
        events=200_000,
        duration=timedelta(hours=2, minutes=10),
        tenants=300,
        api_keys=3000,
    )


async def send_so_far(http: httpx.AsyncClient, ingest: str, day: LaunchDay) -> None:
    """Send the day's events up to the present moment, two requests at a time: the minutes that
    have passed arrive whole, as they would from gateways, however long the sending takes."""
    in_flight: set[asyncio.Task[None]] = set()

    async def dispatch(batch: list[dict[str, Any]]) -> None:
        nonlocal in_flight
        if len(in_flight) == SEND_IN_FLIGHT:
            done, in_flight = await asyncio.wait(in_flight, return_when=FIRST_COMPLETED)
            for task in done:
                task.result()
        in_flight.add(asyncio.create_task(send(http, ingest, batch)))

    batch: list[dict[str, Any]] = []
    for index, minute in enumerate(day.minutes()):
        now = datetime.now(UTC)
        batch.extend(e for e in minute if occurred_at(e) <= now)
        ahead = day.start + (index + 1) * timedelta(minutes=1) > now
        if len(batch) >= SEND_BATCH or ahead:
            await dispatch(batch)
            batch = []
        if ahead:
            break
    if batch:
        await dispatch(batch)
    await asyncio.gather(*in_flight)


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


@pytest.mark.process
async def test_a_simulated_launch_reads_well_on_a_laptop_and_a_phone(
    db: AsyncEngine,
    keys: Keys,
    database_url: str,
    tmp_path: Path,
    browser: Browser,
    pytestconfig: pytest.Config,
) -> None:
    start = minute_floor(datetime.now(UTC)) - timedelta(hours=2)
    day = launch_day(start)
    ingest, read = await keys.create("ingest"), await keys.create("read")
    laptop, phone = tmp_path / "dashboard.png", tmp_path / "phone.png"
    with tokenpulse(database_url, tmp_path, "--workers", "2") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
            for model in day.models:
                await put_launch(http, keys.admin, model, start)
                priced = {
                    "effective_from": format_rfc3339(start),
                    "per_million_tokens": table_prices(model).as_json(),
                }
                response = await http.put(
                    f"/v1/prices/{model}", json=priced, headers=bearer(keys.admin)
                )
                assert response.status_code == 201, response.text
            await send_so_far(http, ingest, day)
            summary = (await http.get("/v1/launches/pulse-2", headers=bearer(read))).json()

            async with dashboard(browser, server, read) as page:
                total = summary["since_launch"]["total_tokens"]
                await page.wait_for_title("#counter", tokens(total))
                await page.wait_for_text("#counter", f"{total:,}")
                await page.wait_for_title("#spend", f"{summary['since_launch']['cost']} usd")
                reached = await page.page.locator(
                    '#milestones li.reached[data-metric="total_tokens"]'
                ).count()
                await page.page.mouse.move(0, 0)
                await page.page.screenshot(path=laptop, full_page=True)
                await page.page.set_viewport_size(PHONE)
                overflow = await page.page.evaluate(
                    "document.documentElement.scrollWidth - window.innerWidth"
                )
                panels = [
                    await panel.bounding_box() for panel in await page.page.locator(".panel").all()
                ]
                await page.page.screenshot(path=phone, full_page=True)

    assert reached == sum(m["crossed_at"] is not None for m in summary["milestones"]) >= 1
    assert png_size(laptop)[0] == LAPTOP["width"]
    assert png_size(phone)[0] == PHONE["width"]
    assert overflow <= 0
    assert len({(box["x"], box["width"]) for box in panels if box}) == 1, "one column on a phone"
    assert page.errors == []
    if pytestconfig.getoption("--update-screenshot"):
        shutil.copyfile(laptop, SCREENSHOT)
