"""The dashboard at `/`: its files and headers, and, in headless Chromium against a real server,
that it shows what the API answers, follows new events, keeps a tenant's key to its tenant and
shows budgets and notifications to an admin key only."""

import asyncio
import re
import shutil
import struct
import threading
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, ViewportSize
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.browsers import LAPTOP, WAIT_MS, Tab, chromium, open_tab
from tests.conftest import ClientFactory, Keys, bearer
from tests.factories import event
from tests.servers import Server, running_server
from tokenpulse.instants import format_rfc3339, parse_rfc3339
from tokenpulse.simulator.launchday import LaunchDay, occurred_at
from tokenpulse.simulator.prices import table_prices

PHONE = ViewportSize(width=390, height=844)
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "dashboard.png"
SEND_BATCH = 5000
SEND_IN_FLIGHT = 2
# How Chromium reports a request answered 403, on the console, whatever the page does with it.
REFUSED = "Failed to load resource: the server responded with a status of 403"
NOTIFY_INTERVAL = {
    "TOKENPULSE_NOTIFY_INTERVAL": "0.2",
    # The test's receiver listens on 127.0.0.1.
    "TOKENPULSE_WEBHOOK_PRIVATE_ADDRESSES": "true",
}
NOTIFICATION_SEARCHES = 300


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@contextmanager
def tokenpulse(
    database_url: str, log_dir: Path, *args: str, settings: dict[str, str] | None = None
) -> Iterator[Server]:
    """A real server with the default rate limits: the page must live within them."""
    # The launch is loaded as fast as the server takes it, past a tenant's events a second.
    env = {"TOKENPULSE_DATABASE_URL": database_url, "TOKENPULSE_RATE_LIMIT_INGEST_EVENTS": "0"}
    with running_server(log_dir, *args, env={**env, **(settings or {})}) as server:
        yield server


@dataclass
class Dashboard(Tab):
    refused: list[str] = field(default_factory=list)
    """The URLs the API refused the page's key (403): Chromium reports each on the console."""

    def note_console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and message.text.startswith(REFUSED):
            self.refused.append(message.location["url"])
        else:
            super().note_console(message)

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

    async def wait_for_shown(self, script: str, expected: Any) -> None:
        """Until what `script` reads off the page is `expected`."""
        await self.page.wait_for_function(
            f"expected => JSON.stringify(({script})()) === JSON.stringify(expected)",
            arg=expected,
            timeout=WAIT_MS,
        )

    async def notes(self) -> dict[str, tuple[str, str]]:
        """(text, title) of the notes of the budgets and notifications panels, once shown."""
        panels = ("budgets", "notifications")
        for panel in panels:
            await self.page.wait_for_selector(f"#{panel}-note:not([hidden])", timeout=WAIT_MS)
        return {
            panel: (
                await self.page.text_content(f"#{panel}-note") or "",
                await self.page.get_attribute(f"#{panel}-note", "title") or "",
            )
            for panel in panels
        }

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
                notes = await page.notes()

            assert tenants_after == await top_tenants(http, read)

    assert after > before
    assert "hooli" in dict(tenants_after)
    assert readiness == "ready"
    assert page.errors == []
    assert stored == read
    # Budgets and notifications are an admin key's: asked once, refused, and said so.
    reason = "this key has the read scope; this needs admin"
    assert notes == {
        "budgets": ("an admin key shows the budgets here", reason),
        "notifications": ("an admin key shows the notifications here", reason),
    }
    assert page.refused == [f"{server.url}/v1/budgets"]
    assert not any("/v1/notifications" in request.url for request in page.requests)
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


@contextmanager
def webhook_endpoint() -> Iterator[str]:
    """An endpoint that takes every notification posted to it (204): its URL."""

    class Taking(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    endpoint = ThreadingHTTPServer(("127.0.0.1", 0), Taking)
    serving = threading.Thread(target=endpoint.serve_forever, daemon=True)
    serving.start()
    try:
        yield f"http://127.0.0.1:{endpoint.server_port}/tokenpulse"
    finally:
        endpoint.shutdown()
        endpoint.server_close()
        serving.join()


async def post(
    http: httpx.AsyncClient, admin: str, path: str, body: dict[str, Any]
) -> dict[str, Any]:
    response = await http.post(path, json=body, headers=bearer(admin))
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


async def notified(http: httpx.AsyncClient, admin: str, count: int) -> list[dict[str, Any]]:
    """The ten newest notifications, once `count` are listed and none is still to be delivered:
    crossings are searched for behind ingest, every notify interval."""
    listed: list[dict[str, Any]] = []
    for _ in range(NOTIFICATION_SEARCHES):
        response = await http.get("/v1/notifications?limit=10", headers=bearer(admin))
        listed = response.json()["notifications"]
        states = [d["state"] for n in listed for d in n["deliveries"]]
        if len(listed) >= count and "pending" not in states:
            return listed
        await asyncio.sleep(0.2)
    raise AssertionError(f"{count} notifications delivered were not listed: {listed}")


async def checked_budgets(
    http: httpx.AsyncClient, key: str, budgets: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Each budget's check, by its id, asked for the selection it names."""
    checked = {}
    for budget in budgets:
        call = {name: budget[name] for name in ("tenant", "project", "model", "api_key_id")}
        params = {name: value for name, value in call.items() if value is not None}
        response = await http.get("/v1/budgets/check", params=params, headers=bearer(key))
        assert response.status_code == 200, response.text
        checked[budget["id"]] = next(
            b for b in response.json()["budgets"] if b["id"] == budget["id"]
        )
    return checked


UNITS = {"requests": "requests", "total_tokens": "tokens", "input_tokens": "input tokens"}


def exactly(metric: str, amount: int | str | None) -> str:
    """An exact amount of `metric` as the page's hover titles write it."""
    if amount is None:
        return "not priced"
    if metric == "cost":
        assert isinstance(amount, str)
        return dollars(amount)
    assert isinstance(amount, int)
    return f"{amount:,} {UNITS[metric]}"


def budget_shown(budget: dict[str, Any], checked: dict[str, Any]) -> dict[str, str]:
    """The row of `budget` as the page should show it, from the API's list and check."""
    metric = budget["metric"]
    dimensions = {"project": "project", "model": "model", "api_key_id": "key"}
    named = [f"{word} {budget[name]}" for name, word in dimensions.items() if budget[name]]
    end = "on" if checked["window_end"] is None else f"to {checked['window_end']}"
    return {
        "budget": budget["id"],
        "tenant": budget["tenant"],
        "selection": ", ".join(named) or "all usage",
        "metric": "cost" if metric == "cost" else UNITS[metric],
        "window": f"from {checked['window_start']} {end}",
        "used": exactly(metric, checked["used"]),
        "limit": exactly(metric, checked["limit"]),
        "remaining": exactly(metric, checked["remaining"]),
        "state": "exceeded" if checked["exceeded"] else "within",
    }


def newest_first(notifications: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """In the page's order: the newest found first, and of those found in one search the latest
    crossing first."""

    def found_and_crossed(notification: dict[str, Any]) -> tuple[datetime, datetime]:
        crossed = notification["body"].get("crossed_at") or notification["found_at"]
        found, crossed_at = parse_rfc3339(notification["found_at"]), parse_rfc3339(crossed)
        assert found is not None
        assert crossed_at is not None
        return found, crossed_at

    return sorted(notifications, key=found_and_crossed, reverse=True)


def notification_shown(notification: dict[str, Any]) -> dict[str, str]:
    """The item of a budget's `notification` as the page should show it."""
    body = notification["body"]
    assert notification["type"] == "budget.threshold_crossed"
    metric = body["metric"]
    crossed = f"{body['threshold']}% of {exactly(metric, body['limit'])}"
    states = {delivery["state"] for delivery in notification["deliveries"]}
    return {
        "notification": notification["id"],
        "type": notification["type"],
        "subject": body["tenant"],
        "crossed": f"{crossed}: {exactly(metric, body['amount'])}",
        "at": body["crossed_at"],
        "event": body["event_id"],
        "delivery": states.pop() if len(states) == 1 else "",
    }


BUDGET_ROWS = """() => [...document.querySelectorAll('#budgets tr')].map((row) => {
  const title = (name) => row.querySelector(`.${name}`).title;
  const text = (name) => row.querySelector(`.${name}`).textContent;
  return {
    budget: row.dataset.budget, tenant: text('tenant'), selection: text('selection'),
    metric: text('metric'), window: title('window'), used: title('used'), limit: title('limit'),
    remaining: title('remaining'), state: text('state'),
  };
})"""
NOTIFICATION_ITEMS = """() => [...document.querySelectorAll('#notifications li')].map((item) => {
  const title = (name) => item.querySelector(`.${name}`).title;
  return {
    notification: item.dataset.notification, type: item.dataset.type,
    subject: item.querySelector('.subject').textContent, crossed: title('crossed'),
    at: title('at'), event: title('event'), delivery: item.querySelector('.delivery').textContent,
  };
})"""


@pytest.mark.process
async def test_an_admin_key_sees_each_budget_checked_and_the_notifications_of_its_crossings(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path, browser: Browser
) -> None:
    now = datetime.now(UTC)
    hour_ago = minute_floor(now) - timedelta(hours=1)
    ingest, admin = await keys.create("ingest"), keys.admin
    with (
        webhook_endpoint() as url,
        tokenpulse(database_url, tmp_path, settings=NOTIFY_INTERVAL) as server,
    ):
        async with httpx.AsyncClient(base_url=server.url) as http:
            await put_prices(http, admin, "m-large", hour_ago)
            webhook = await post(http, admin, "/v1/webhooks", {"url": url})
            # Some $18 of acme's m-large: past both thresholds of its $10, notified each once.
            spend = {"metric": "cost", "limit": "10", "thresholds": [50, 100]}
            since = {"window": "since", "since": format_rfc3339(hour_ago)}
            await post(
                http,
                admin,
                "/v1/budgets",
                {"tenant": "acme", **spend, **since, "webhook_id": webhook["id"]},
            )
            # Far from its limit; and a budget of a selection, which a check of the tenant alone
            # leaves out.
            daily = {"window": "day", "tz": "Europe/Berlin", "thresholds": [80]}
            await post(http, admin, "/v1/budgets", {"tenant": "globex", "limit": 10**7, **daily})
            await post(
                http,
                admin,
                "/v1/budgets",
                {"tenant": "acme", "model": "m-small", "metric": "requests", "limit": 50, **daily},
            )
            await send(http, ingest, usage_of("acme", "m-large", 20, now))
            await send(http, ingest, usage_of("acme", "m-small", 4, now))
            await send(http, ingest, usage_of("globex", "m-small", 5, now))
            notifications = await notified(http, admin, 2)
            budgets = (await http.get("/v1/budgets", headers=bearer(admin))).json()["budgets"]
            checked = await checked_budgets(http, admin, budgets)

            async with dashboard(browser, server, admin) as page:
                expected_items = [notification_shown(n) for n in newest_first(notifications)]
                await page.wait_for_shown(NOTIFICATION_ITEMS, expected_items)
                expected_rows = [budget_shown(b, checked[b["id"]]) for b in budgets]
                await page.wait_for_shown(BUDGET_ROWS, expected_rows)
                rows = await page.page.evaluate(BUDGET_ROWS)
                items = await page.page.evaluate(NOTIFICATION_ITEMS)
                shown = await page.page.locator("#notifications .crossed").all_inner_texts()
                kinds = await page.page.locator("#notifications .kind").all_text_contents()
                notes = await page.page.locator(".budgets .note, .notifications .note").all()
                hidden = [await note.is_hidden() for note in notes]
                await page.page.mouse.move(0, 0)
                await page.page.screenshot(path=tmp_path / "budgets.png", full_page=True)

    assert rows == expected_rows
    assert [row["state"] for row in rows] == ["exceeded", "within", "within"]
    assert items == expected_items
    assert sorted((n["body"]["threshold"], n["body"]["amount"]) for n in notifications) == [
        (50, "5"),
        (100, "10"),
    ]
    assert sorted(shown) == ["100% of $10.00", "50% of $10.00"]
    assert kinds == ["budget", "budget"]
    assert {item["delivery"] for item in items} == {"delivered"}
    assert hidden == [True, True]
    assert page.refused == []
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


def round_limit(used: Decimal, share: str) -> Decimal:
    """A limit of two significant digits of which `used` is about `share`."""
    return Decimal(f"{used / Decimal(share):.2g}")


async def budgets_of_the_largest(
    http: httpx.AsyncClient, admin: str, start: datetime, webhook_id: str
) -> None:
    """Budgets of the three largest tenants since `start`: the first over its spend, the second
    past half its tokens, the third far from its day's requests of one model."""
    response = await http.get(
        "/v1/totals",
        params={"start": format_rfc3339(start), "group_by": "tenant,model"},
        headers=bearer(admin),
    )
    results = response.json()["results"]
    tokens_of: dict[str, int] = {}
    for result in results:
        tokens_of[result["tenant"]] = tokens_of.get(result["tenant"], 0) + result["total_tokens"]
    first, second, third = sorted(tokens_of, key=lambda tenant: -tokens_of[tenant])[:3]
    spent = sum((Decimal(r["cost"]) for r in results if r["tenant"] == first), Decimal(0))
    requests = next(
        r["requests"] for r in results if (r["tenant"], r["model"]) == (third, "pulse-2")
    )
    since = {"window": "since", "since": format_rfc3339(start), "webhook_id": webhook_id}
    budgets: list[dict[str, Any]] = [
        {
            "tenant": first,
            "metric": "cost",
            "limit": format(round_limit(spent, "1.25"), "f"),
            "thresholds": [50, 80, 100],
            **since,
        },
        {
            "tenant": second,
            "limit": int(round_limit(Decimal(tokens_of[second]), "0.7")),
            "thresholds": [50, 80],
            **since,
        },
        {
            "tenant": third,
            "model": "pulse-2",
            "metric": "requests",
            "limit": int(round_limit(Decimal(requests), "0.3")),
            "window": "day",
            "tz": "America/New_York",
            "thresholds": [90],
        },
    ]
    for budget in budgets:
        await post(http, admin, "/v1/budgets", budget)


SHOWN_STATES = """() => [
  [...document.querySelectorAll('#notifications li')].map((item) => item.dataset.notification),
  [...document.querySelectorAll('#notifications .delivery')].map((state) => state.textContent),
  [...document.querySelectorAll('#budgets .state')].map((state) => state.textContent),
]"""


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
    ingest, read, admin = await keys.create("ingest"), await keys.create("read"), keys.admin
    laptop, phone = tmp_path / "dashboard.png", tmp_path / "phone.png"
    with (
        webhook_endpoint() as url,
        tokenpulse(database_url, tmp_path, "--workers", "2", settings=NOTIFY_INTERVAL) as server,
    ):
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
            for model in day.models:
                await put_launch(http, admin, model, start)
                priced = {
                    "effective_from": format_rfc3339(start),
                    "per_million_tokens": table_prices(model).as_json(),
                }
                response = await http.put(f"/v1/prices/{model}", json=priced, headers=bearer(admin))
                assert response.status_code == 201, response.text
            everything = ["budget.threshold_crossed", "launch.milestone_crossed"]
            webhook = await post(http, admin, "/v1/webhooks", {"url": url, "events": everything})
            await send_so_far(http, ingest, day)
            await budgets_of_the_largest(http, admin, start, webhook["id"])
            summaries = [
                (await http.get(f"/v1/launches/{model}", headers=bearer(read))).json()
                for model in day.models
            ]
            milestones = sum(
                m["crossed_at"] is not None for summary in summaries for m in summary["milestones"]
            )
            # Three thresholds of the first budget, one of the second, and the launches'.
            notifications = await notified(http, admin, 3 + 1 + milestones)
            budgets = (await http.get("/v1/budgets", headers=bearer(admin))).json()["budgets"]
            checked = await checked_budgets(http, admin, budgets)
            summary = summaries[0]

            async with dashboard(browser, server, admin) as page:
                total = summary["since_launch"]["total_tokens"]
                await page.wait_for_title("#counter", tokens(total))
                await page.wait_for_text("#counter", f"{total:,}")
                await page.wait_for_title("#spend", f"{summary['since_launch']['cost']} usd")
                await page.wait_for_shown(
                    SHOWN_STATES,
                    [
                        [n["id"] for n in newest_first(notifications)],
                        ["delivered"] * len(notifications),
                        ["exceeded" if checked[b["id"]]["exceeded"] else "within" for b in budgets],
                    ],
                )
                reached = await page.page.locator(
                    '#milestones li.reached[data-metric="total_tokens"]'
                ).count()
                launch_crossings = await page.page.locator(
                    '#notifications li[data-type="launch.milestone_crossed"] .crossed'
                ).evaluate_all("items => items.map((item) => item.title)")
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
    assert [checked[b["id"]]["exceeded"] for b in budgets] == [True, False, False]
    assert launch_crossings == [
        f"{n['body']['amount']:,} tokens since launch"
        for n in newest_first(notifications)
        if n["type"] == "launch.milestone_crossed"
    ]
    assert launch_crossings
    assert png_size(laptop)[0] == LAPTOP["width"]
    assert png_size(phone)[0] == PHONE["width"]
    assert overflow <= 0
    assert len({(box["x"], box["width"]) for box in panels if box}) == 1, "one column on a phone"
    assert page.errors == []
    assert page.refused == []
    if pytestconfig.getoption("--update-screenshot"):
        shutil.copyfile(laptop, SCREENSHOT)
