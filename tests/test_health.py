"""Operations: liveness, readiness (also while stopping) and the service's own metrics."""

import signal
import time
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import UNLIMITED_ENV, ClientFactory, Keys, bearer
from tests.factories import event
from tests.servers import running_server


def test_readiness_turns_503_at_once_on_sigterm_while_the_worker_drains(
    db: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    env = {
        "TOKENPULSE_DATABASE_URL": database_url,
        "TOKENPULSE_SHUTDOWN_DRAIN": "3",
        **UNLIMITED_ENV,
    }
    with running_server(tmp_path, env=env) as server:
        assert httpx.get(f"{server.url}/readyz").status_code == 200

        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        draining = httpx.get(f"{server.url}/readyz")
        alive = httpx.get(f"{server.url}/healthz")

        assert draining.status_code == 503
        assert draining.json()["checks"]["shutdown"] == "shutting down"
        assert alive.json() == {"status": "ok"}
        assert server.process.wait(timeout=30) == 0


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
