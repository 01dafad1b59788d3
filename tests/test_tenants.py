"""Tenant isolation: a tenant-bound key writes and reads only its own tenant, whatever it asks."""

from typing import Any

import httpx

from tests.conftest import ClientFactory, Keys
from tests.factories import event

SERIES = {"bucket": "1h", "start": "2026-11-27T11:00:00Z", "end": "2026-11-27T12:00:00Z"}


async def seed_two_tenants(keys: Keys, make_client: ClientFactory) -> None:
    """acme and globex, with the same event ids and project names and different counts."""
    for tenant, tokens in (("acme", 100), ("globex", 7)):
        ingest = await keys.create("ingest", tenant=tenant)
        async with make_client(token=ingest) as client:
            response = await client.post(
                "/v1/events",
                json={
                    "events": [
                        event(event_id=f"req-{n}", project="chat", input_tokens=tokens)
                        | {"tenant": tenant}
                        for n in range(3)
                    ]
                },
            )
            assert response.json()["accepted"] == 3


async def read_as(make_client: ClientFactory, token: str, path: str, **params: Any) -> Any:
    async with make_client(token=token) as client:
        response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_tenant_bound_read_key_sees_only_its_own_tenant_in_totals_and_series(
    make_client: ClientFactory, keys: Keys
) -> None:
    await seed_two_tenants(keys, make_client)
    acme = await keys.create("read", tenant="acme")

    totals = await read_as(make_client, acme, "/v1/totals", window="1h", group_by="tenant")
    asked_for_globex = await read_as(
        make_client, acme, "/v1/totals", window="1h", tenant="globex", group_by="tenant"
    )
    by_project = await read_as(make_client, acme, "/v1/totals", window="1h", group_by="project")
    series = await read_as(make_client, acme, "/v1/usage", **SERIES, group_by="tenant")

    assert [(r["tenant"], r["input_tokens"]) for r in totals["results"]] == [("acme", 300)]
    assert asked_for_globex["results"] == []
    assert [(r["project"], r["input_tokens"]) for r in by_project["results"]] == [("chat", 300)]
    assert [(r["tenant"], r["requests"]) for r in series["data"][0]["results"]] == [("acme", 3)]


async def test_a_platform_read_key_sees_every_tenant(
    make_client: ClientFactory, keys: Keys
) -> None:
    await seed_two_tenants(keys, make_client)
    platform = await keys.create("read")

    totals = await read_as(make_client, platform, "/v1/totals", window="1h", group_by="tenant")
    overall = await read_as(make_client, platform, "/v1/totals", window="1h")

    assert [(r["tenant"], r["input_tokens"]) for r in totals["results"]] == [
        ("acme", 300),
        ("globex", 21),
    ]
    assert overall["results"][0]["requests"] == 6


async def test_a_tenant_bound_ingest_key_writes_only_its_own_tenant(
    make_client: ClientFactory, keys: Keys
) -> None:
    ingest = await keys.create("ingest", tenant="acme")
    async with make_client(token=ingest) as client:
        response = await client.post(
            "/v1/events",
            json={
                "events": [
                    event(event_id="own", tenant="acme"),
                    event(event_id="implied", tenant=...),
                    event(event_id="foreign", tenant="globex"),
                ]
            },
        )

    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert body["errors"] == [
        {
            "index": 2,
            "event_id": "foreign",
            "errors": [
                {
                    "field": "tenant",
                    "message": "names another tenant than the one the key is bound to",
                }
            ],
        }
    ]
    platform = await keys.create("read")
    totals = await read_as(make_client, platform, "/v1/totals", window="1h", group_by="tenant")
    assert [(r["tenant"], r["requests"]) for r in totals["results"]] == [("acme", 2)]


async def test_a_platform_ingest_key_must_name_the_tenant_of_each_event(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/events", json=event(tenant=...))

    assert response.status_code == 422
    assert response.json()["errors"][0]["errors"] == [{"field": "tenant", "message": "is required"}]
