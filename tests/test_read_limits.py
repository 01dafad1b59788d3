"""What reads answer at their bounds: no more groups than configured, said with how to narrow
the query."""

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlalchemy.event import listen, remove

from tests.conftest import ClientFactory
from tests.factories import event, measures

KEYS = [f"key-{number:02}" for number in range(60)]


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
    # Only the read's own statements are recorded: the key stays cached (the test's monotonic
    # clock does not move), the materialiser waits.
    async with make_client(max_groups=50, materialise_interval=3600) as client:
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
