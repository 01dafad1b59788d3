"""`/metrics`: what ops see of events, batches, the queue, the database and HTTP requests, added
up across worker processes."""

import asyncio
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import UNLIMITED_ENV, ClientFactory, Keys, bearer
from tests.factories import event
from tests.servers import running_server
from tokenpulse.app import create_app
from tokenpulse.metrics import MULTIPROCESS_DIR, Metrics
from tokenpulse.settings import Settings
from tokenpulse.tables import metadata

WAIT_SECONDS = 30.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(exposition: str) -> Samples:
    """Every sample of a scrape, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(scraped: Samples, name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


def deltas(
    before: Samples, after: Samples, wanted: Mapping[str, dict[str, str]]
) -> dict[str, float]:
    return {
        name: value(after, name.split("{")[0], **labels)
        - value(before, name.split("{")[0], **labels)
        for name, labels in wanted.items()
    }


def now_event(**fields: object) -> dict[str, object]:
    """A valid event dated a minute ago by the real clock, for a real server."""
    return event(at=datetime.now(UTC) - timedelta(minutes=1), **fields)


@pytest.mark.process
def test_a_scrape_across_two_workers_changes_by_exactly_what_was_sent(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path
) -> None:
    env = {"TOKENPULSE_DATABASE_URL": database_url, **UNLIMITED_ENV}
    with running_server(tmp_path, "--workers", "2", env=env) as server:
        headers = bearer(keys.admin)

        def scrape() -> Samples:
            response = httpx.get(f"{server.url}/metrics")
            assert response.status_code == 200
            return samples(response.text)

        before = scrape()
        # New connections each time, so that the requests may land on either worker.
        first = httpx.post(
            f"{server.url}/v1/events",
            json={
                "events": [now_event(event_id="m-1"), now_event(event_id="m-2"), now_event(model=7)]
            },
            headers=headers,
        )
        second = httpx.post(
            f"{server.url}/v1/events",
            json={
                "events": [
                    now_event(event_id="m-1"),
                    now_event(event_id="m-3"),
                    now_event(event_id="m-3"),
                ]
            },
            headers=headers,
        )
        missing = httpx.get(f"{server.url}/v1/launches/m-unknown", headers=headers)
        nowhere = httpx.get(f"{server.url}/no/such/path/12345")
        after = scrape()

    assert [first.status_code, second.status_code, missing.status_code, nowhere.status_code] == [
        200,
        200,
        404,
        404,
    ]
    assert deltas(
        before,
        after,
        {
            "tokenpulse_events_total{accepted}": {"outcome": "accepted"},
            "tokenpulse_events_total{duplicate}": {"outcome": "duplicate"},
            "tokenpulse_events_total{rejected}": {"outcome": "rejected"},
            "tokenpulse_batch_events_count": {},
            "tokenpulse_batch_events_sum": {},
            "tokenpulse_flush_seconds_count": {},
            "tokenpulse_http_requests_total{events}": {
                "route": "/v1/events",
                "method": "POST",
                "status": "200",
            },
            "tokenpulse_http_requests_total{launch}": {
                "route": "/v1/launches/{model}",
                "method": "GET",
                "status": "404",
            },
            "tokenpulse_http_requests_total{unmatched}": {
                "route": "unmatched",
                "method": "GET",
                "status": "404",
            },
            "tokenpulse_http_request_seconds_count": {"route": "/v1/events", "method": "POST"},
        },
    ) == {
        "tokenpulse_events_total{accepted}": 3,
        "tokenpulse_events_total{duplicate}": 2,
        "tokenpulse_events_total{rejected}": 1,
        "tokenpulse_batch_events_count": 2,
        "tokenpulse_batch_events_sum": 5,
        "tokenpulse_flush_seconds_count": 2,
        "tokenpulse_http_requests_total{events}": 2,
        "tokenpulse_http_requests_total{launch}": 1,
        "tokenpulse_http_requests_total{unmatched}": 1,
        "tokenpulse_http_request_seconds_count": 2,
    }
    assert not any("/no/such/path" in labels for (_, label_set) in after for labels in label_set)
    assert value(after, "tokenpulse_held_events") == 0
    assert value(after, "tokenpulse_workers") == 2, "every scrape adds up both workers"


@pytest.mark.process
async def test_events_held_while_the_database_stalls_show_in_the_gauge_of_every_worker(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path
) -> None:
    env = {"TOKENPULSE_DATABASE_URL": database_url, **UNLIMITED_ENV}
    with running_server(tmp_path, "--workers", "2", env=env) as server:
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=WAIT_SECONDS) as scraper,
            httpx.AsyncClient(base_url=server.url, timeout=WAIT_SECONDS) as sender,
        ):

            async def held_becomes(expected: float) -> None:
                for _ in range(int(WAIT_SECONDS / 0.1)):
                    scraped = samples((await scraper.get("/metrics")).text)
                    if value(scraped, "tokenpulse_held_events") == expected:
                        return
                    await asyncio.sleep(0.1)
                raise AssertionError(f"tokenpulse_held_events never became {expected}")

            async with db.connect() as blocker:
                # Every flush waits on this lock: a stalled database.
                await blocker.exec_driver_sql("LOCK TABLE usage_event IN ACCESS EXCLUSIVE MODE")
                posts = [
                    asyncio.create_task(
                        sender.post(
                            "/v1/events",
                            json={"events": [now_event() for _ in range(size)]},
                            headers=bearer(keys.admin),
                        )
                    )
                    for size in (1, 2)
                ]
                await held_becomes(3)
                await blocker.rollback()
            answers = await asyncio.gather(*posts)
            await held_becomes(0)

    assert [answer.status_code for answer in answers] == [200, 200]


@contextmanager
def worker_holding(directory: Path, events: int, *, stays: bool) -> Iterator[None]:
    """A process that writes its figures to `directory` as a worker does, holding `events`."""
    script = (
        "import sys; from tokenpulse.metrics import Metrics; m = Metrics(); "
        f"m.holding({events}); m.events.labels('accepted').inc(); print('ready', flush=True); "
        + ("sys.stdin.read()" if stays else "")
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        env={MULTIPROCESS_DIR: str(directory), "PATH": ""},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"
    try:
        yield
    finally:
        process.communicate(timeout=WAIT_SECONDS)


@pytest.mark.process
def test_a_worker_that_exited_leaves_its_counts_but_not_its_gauges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MULTIPROCESS_DIR, str(tmp_path))
    with worker_holding(tmp_path, 5, stays=False):
        pass
    assert len(list(tmp_path.glob("gauge_livesum_*.db"))) == 1, "the exited worker's gauge file"

    with worker_holding(tmp_path, 7, stays=True):
        scraped = samples(Metrics().exposition().decode())

    assert value(scraped, "tokenpulse_held_events") == 7
    assert value(scraped, "tokenpulse_workers") == 1
    assert value(scraped, "tokenpulse_events_total", outcome="accepted") == 2


async def test_a_key_lookup_on_an_unreachable_database_is_counted_as_unavailable() -> None:
    app = create_app(
        Settings(
            database_url="postgresql://tokenpulse@127.0.0.1:1/tokenpulse", db_connect_timeout=1
        )
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", timeout=10
        ) as client:
            forged = bearer("tp_0123456789abcdef_" + "A" * 43)
            answer = await client.post("/v1/events", json=event(), headers=forged)
            scraped = samples((await client.get("/metrics")).text)

    assert answer.status_code == 503
    assert value(scraped, "tokenpulse_database_errors_total", kind="unavailable") == 1
    assert value(scraped, "tokenpulse_database_errors_total", kind="other") == 0


async def test_a_read_that_times_out_in_the_database_is_counted_as_unavailable(
    settings: Settings, keys: Keys, db: AsyncEngine
) -> None:
    stalled = [name for name in metadata.tables if name != "api_key"]
    app = create_app(settings.model_copy(update={"db_statement_timeout": timedelta(seconds=0.5)}))
    async with app.router.lifespan_context(app):
        # The failure is answered, and not raised on: an outage logs no traceback per request.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=bearer(keys.admin)
        ) as client:
            await client.get("/v1/launches")  # the key is looked up, and remembered
            async with db.connect() as blocker:
                await blocker.exec_driver_sql(
                    f"LOCK TABLE {', '.join(stalled)} IN ACCESS EXCLUSIVE MODE"
                )
                answer = await client.get("/v1/totals", params={"window": "1h"})
                await blocker.rollback()
            scraped = samples((await client.get("/metrics")).text)

    assert answer.status_code == 503
    assert value(scraped, "tokenpulse_database_errors_total", kind="unavailable") == 1


async def test_metrics_count_events_by_outcome_and_requests_by_route(
    make_client: ClientFactory,
) -> None:
    async with make_client() as client:
        await client.post(
            "/v1/events",
            json={"events": [event(event_id="a"), event(event_id="a"), event(model=7)]},
        )
        await client.get("/v1/totals", params={"window": "1h"})

        response = await client.get("/metrics", headers={"Authorization": ""})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    for outcome in ("accepted", "duplicate", "rejected"):
        assert f'tokenpulse_events_total{{outcome="{outcome}"}} 1.0' in lines
    assert (
        'tokenpulse_http_requests_total{method="GET",route="/v1/totals",status="200"} 1.0' in lines
    )
    assert "tokenpulse_batch_events_count 1.0" in lines


async def test_protected_metrics_ask_for_a_platform_read_or_admin_key(
    make_client: ClientFactory, keys: Keys
) -> None:
    read = await keys.create("read")
    tenant_read = await keys.create("read", tenant="acme")
    ingest = await keys.create("ingest")
    async with make_client(token=None, metrics_public=False) as client:
        statuses = {
            name: (await client.get("/metrics", headers=headers)).status_code
            for name, headers in {
                "none": {},
                "platform read": bearer(read),
                "admin": bearer(keys.admin),
                "tenant read": bearer(tenant_read),
                "ingest": bearer(ingest),
            }.items()
        }

    assert statuses == {
        "none": 401,
        "platform read": 200,
        "admin": 200,
        "tenant read": 403,
        "ingest": 403,
    }
