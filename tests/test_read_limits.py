"""What reads answer at their bounds: no more groups than configured, said with how to narrow
the query; and every stored model name, slashes included, reachable by its launch routes."""

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import Engine
from sqlalchemy.event import listen, remove
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import UNLIMITED_ENV, ClientFactory, Keys, bearer
from tests.factories import event
from tests.servers import running_server

KEYS = [f"key-{number:02}" for number in range(60)]
SLASHED = "meta-llama/Llama-3-70b"


def measures(*events: dict[str, Any]) -> dict[str, int]:
    sums = {
        name: sum(e.get(name, 0) for e in events)
        for name in ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")
    }
    return {
        "requests": len(events),
        **sums,
        "total_tokens": sums["input_tokens"] + sums["output_tokens"],
    }


async def post(client: httpx.AsyncClient, *events: dict[str, Any]) -> None:
    response = await client.post("/v1/events", json={"events": list(events)})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(events)


def one_event_per_key() -> list[dict[str, Any]]:
    """An event for each of the 60 keys, the first 50 in project "a", the last 10 in "b"."""
    return [
        event(api_key_id=key, project="a" if number < 50 else "b", input_tokens=100 + number)
        for number, key in enumerate(KEYS)
    ]


async def test_totals_past_the_most_groups_are_refused_saying_how_to_narrow_them(
    make_client: ClientFactory,
) -> None:
    events = one_event_per_key()
    async with make_client(max_groups=50) as client:
        await post(client, *events)
        refused = await client.get("/v1/totals?window=1h&group_by=api_key_id")
        narrowed = await client.get("/v1/totals?window=1h&group_by=api_key_id&project=a")
        coarser = await client.get("/v1/totals?window=1h&group_by=project")

    assert refused.status_code == 422
    assert refused.json()["error"]["errors"] == [
        {
            "field": "group_by",
            "message": "the answer would hold more than 50 groups (TOKENPULSE_MAX_GROUPS); "
            "narrow it with filters (tenant, project, model, api_key_id), group by fewer "
            "dimensions, or ask for a shorter range",
        }
    ]
    # Exactly as many groups as the limit allows is still an answer, and an exact one.
    assert narrowed.status_code == 200
    assert narrowed.json()["results"] == [
        {"api_key_id": key, **measures(e)} for key, e in zip(KEYS[:50], events, strict=False)
    ]
    assert coarser.json()["results"] == [
        {"project": "a", **measures(*events[:50])},
        {"project": "b", **measures(*events[50:])},
    ]


async def test_a_series_is_bounded_by_its_results_over_all_buckets_not_by_its_groups(
    make_client: ClientFactory,
) -> None:
    # 30 keys, each used in two hours: 30 groups, but 60 results in hour buckets.
    nine = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
    first = [event(at=nine, api_key_id=key) for key in KEYS[:30]]
    second = [event(at=nine + timedelta(hours=1), api_key_id=key) for key in KEYS[:30]]
    async with make_client(max_series_results=50) as client:
        await post(client, *first, *second)
        hourly = await client.get(
            "/v1/usage?bucket=1h&start=2026-11-27T09:00:00Z&end=2026-11-27T11:00:00Z"
            "&group_by=api_key_id"
        )
        one_hour = await client.get(
            "/v1/usage?bucket=1h&start=2026-11-27T09:00:00Z&end=2026-11-27T10:00:00Z"
            "&group_by=api_key_id"
        )
        daily = await client.get(
            "/v1/usage?bucket=1d&start=2026-11-27T00:00:00Z&end=2026-11-28T00:00:00Z"
            "&group_by=api_key_id"
        )

    assert hourly.status_code == 422
    (problem,) = hourly.json()["error"]["errors"]
    assert problem["field"] == "group_by"
    assert problem["message"].startswith(
        "the answer would hold more than 50 results over its buckets "
        "(TOKENPULSE_MAX_SERIES_RESULTS); narrow it"
    )
    assert "shorter range or larger buckets" in problem["message"]
    assert [bucket["results"] for bucket in one_hour.json()["data"]] == [
        [{"api_key_id": e["api_key_id"], **measures(e)} for e in first]
    ]
    assert [bucket["results"] for bucket in daily.json()["data"]] == [
        [
            {"api_key_id": a["api_key_id"], **measures(a, b)}
            for a, b in zip(first, second, strict=True)
        ]
    ]


async def test_a_refused_read_fetches_at_most_one_group_past_the_limit(
    make_client: ClientFactory,
) -> None:
    # Only the read's own statements are recorded: the key stays cached, the materialiser waits.
    async with make_client(
        max_groups=50, key_cache_seconds=3600, materialise_interval=3600
    ) as client:
        await post(client, *one_event_per_key())
        await client.get("/v1/totals?window=1h")  # the key is looked up once
        executed: list[tuple[str, Any]] = []

        def record(*args: Any) -> None:
            executed.append((args[2], args[3]))

        listen(Engine, "before_cursor_execute", record)
        try:
            refused = await client.get("/v1/totals?window=1h&group_by=api_key_id")
        finally:
            remove(Engine, "before_cursor_execute", record)

    assert refused.status_code == 422
    limits = [
        parameters[int(number) - 1]
        for statement, parameters in executed
        for number in re.findall(r"LIMIT \$(\d+)", statement)
    ]
    assert limits == [51]


async def test_a_model_name_with_a_slash_is_launched_and_read_with_the_slash_literal_or_escaped(
    client: httpx.AsyncClient,
) -> None:
    ours = [event(model=SLASHED, input_tokens=10), event(model=SLASHED, output_tokens=5)]
    # Its parts as model names of their own, which must not be mistaken for it.
    await post(client, *ours, event(model="meta-llama"), event(model="Llama-3-70b"))

    created = await client.put(
        "/v1/launches/meta-llama/Llama-3-70b", json={"launched_at": "2026-11-27T09:00:00Z"}
    )
    moved = await client.put(
        "/v1/launches/meta-llama%2FLlama-3-70b", json={"launched_at": "2026-11-27T10:00:00Z"}
    )
    literal = await client.get("/v1/launches/meta-llama/Llama-3-70b")
    escaped = await client.get("/v1/launches/meta-llama%2FLlama-3-70b")
    listed = await client.get("/v1/launches")
    milestone = await client.get("/v1/milestones?model=meta-llama/Llama-3-70b&threshold=1")
    unknown = await client.get("/v1/launches/meta-llama/Llama-3-8b")

    assert created.status_code == 201
    assert created.json() == {"model": SLASHED, "launched_at": "2026-11-27T09:00:00Z"}
    assert moved.status_code == 200
    assert moved.json() == {"model": SLASHED, "launched_at": "2026-11-27T10:00:00Z"}
    assert literal.status_code == 200
    assert escaped.json() == literal.json()
    summary = literal.json()
    assert (summary["model"], summary["launched_at"]) == (SLASHED, "2026-11-27T10:00:00Z")
    assert summary["since_launch"] == measures(*ours)
    assert listed.json() == {
        "launches": [{"model": SLASHED, "launched_at": "2026-11-27T10:00:00Z"}]
    }
    assert milestone.json()["since"] == "2026-11-27T10:00:00Z"
    assert milestone.json()["current"] == measures(*ours)["total_tokens"]
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"].startswith("no launch is set for this model")


async def test_any_model_name_ingest_accepts_has_a_launch_route_and_the_bare_path_lists_them(
    client: httpx.AsyncClient,
) -> None:
    names = ["line\nbreak", "trailing/", "a//b"]
    await post(client, *(event(model=name) for name in names))

    put = [
        await client.put(
            f"/v1/launches/{quote(name, safe='')}", json={"launched_at": "2026-11-27T09:00:00Z"}
        )
        for name in names
    ]
    got = [(await client.get(f"/v1/launches/{quote(name, safe='')}")).json() for name in names]
    bare = await client.get("/v1/launches/")

    assert [answer.status_code for answer in put] == [201, 201, 201]
    assert [(summary["model"], summary["since_launch"]["requests"]) for summary in got] == [
        (name, 1) for name in names
    ]
    assert (bare.status_code, bare.headers["location"]) == (
        307,
        "http://tokenpulse.test/v1/launches",
    )


def test_a_real_server_routes_a_model_name_with_a_slash_sent_literal_or_as_2f(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path
) -> None:
    env = {"TOKENPULSE_DATABASE_URL": database_url, **UNLIMITED_ENV}
    now = datetime.now(UTC)
    with (
        running_server(tmp_path, env=env) as server,
        httpx.Client(base_url=server.url, headers=bearer(keys.admin)) as http,
    ):
        sent = event(at=now - timedelta(minutes=1), model=SLASHED)
        assert http.post("/v1/events", json=sent).json()["accepted"] == 1
        launched_at = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        created = http.put(
            "/v1/launches/meta-llama%2FLlama-3-70b", json={"launched_at": launched_at}
        )
        moved = http.put("/v1/launches/meta-llama/Llama-3-70b", json={"launched_at": launched_at})
        literal = http.get("/v1/launches/meta-llama/Llama-3-70b")
        escaped = http.get("/v1/launches/meta-llama%2FLlama-3-70b")

    assert (created.status_code, moved.status_code) == (201, 200)
    assert created.json() == {"model": SLASHED, "launched_at": launched_at}
    for answer in (literal, escaped):
        assert answer.status_code == 200
        assert answer.json()["model"] == SLASHED
        assert answer.json()["since_launch"] == measures(sent)
