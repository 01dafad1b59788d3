"""`GET /v1/totals`: exact sums of the seven measures over a range, per group, to the minute."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import NOW, Clock
from tests.factories import event
from tokenpulse.instants import format_rfc3339

MEASURES = (
    "requests",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
)
MICROSECOND = timedelta(microseconds=1)


def at(day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    """An instant in November 2026, UTC."""
    return datetime(2026, 11, day, hour, minute, second, micro, tzinfo=UTC)


async def post(client: httpx.AsyncClient, *events: dict[str, Any]) -> None:
    response = await client.post("/v1/events", json={"events": list(events)})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(events)


def expected_totals(
    events: Sequence[dict[str, Any]], start: datetime, end: datetime, group_by: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """What adding up the events in [start, end) by hand gives: one total per group, sorted."""
    sums: dict[tuple[str | None, ...], dict[str, int]] = {}
    for body in events:
        if not start <= datetime.fromisoformat(body["occurred_at"]) < end:
            continue
        defaults = {"project": "default", "api_key_id": None}
        key = tuple(body.get(name, defaults.get(name)) for name in group_by)
        total = sums.setdefault(key, dict.fromkeys(MEASURES, 0))
        total["requests"] += 1
        total["input_tokens"] += body["input_tokens"]
        total["cached_input_tokens"] += body.get("cached_input_tokens", 0)
        total["cache_write_input_tokens"] += body.get("cache_write_input_tokens", 0)
        total["output_tokens"] += body["output_tokens"]
        total["reasoning_tokens"] += body.get("reasoning_tokens", 0)
        total["total_tokens"] += body["input_tokens"] + body["output_tokens"]
    ordered = sorted(sums.items(), key=lambda item: [value or "" for value in item[0]])
    return [
        {**dict(zip(group_by, key, strict=True)), **total, "cost": None} for key, total in ordered
    ]


async def test_totals_hold_all_seven_measures_as_exact_integers(
    client: httpx.AsyncClient,
) -> None:
    await post(
        client,
        event(
            input_tokens=1000,
            cached_input_tokens=400,
            cache_write_input_tokens=250,
            output_tokens=300,
            reasoning_tokens=100,
        ),
        event(
            input_tokens=999_999_999,
            cached_input_tokens=999_999_999,
            output_tokens=1_000_000_000,
            reasoning_tokens=7,
        ),
        event(input_tokens=1_000_000_000, cache_write_input_tokens=1_000_000_000, output_tokens=0),
        event(input_tokens=0, output_tokens=0),
    )

    response = await client.get("/v1/totals", params={"window": "1h"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "start": "2026-11-27T11:00:00Z",
        "end": "2026-11-27T12:01:00Z",
        "results": [
            {
                "requests": 4,
                "input_tokens": 2_000_000_999,
                "cached_input_tokens": 1_000_000_399,
                "cache_write_input_tokens": 1_000_000_250,
                "output_tokens": 1_000_000_300,
                "reasoning_tokens": 107,
                # Cache writes are part of input tokens: never counted again.
                "total_tokens": 3_000_001_299,
                "cost": None,
            }
        ],
    }
    assert all(type(body["results"][0][measure]) is int for measure in MEASURES)


async def test_a_range_without_events_has_no_results(client: httpx.AsyncClient) -> None:
    await post(client, event(at=NOW - timedelta(hours=2)))

    ungrouped = await client.get("/v1/totals", params={"window": "1h"})
    grouped = await client.get("/v1/totals", params={"window": "1h", "group_by": "model"})

    assert ungrouped.status_code == 200, ungrouped.text
    assert ungrouped.json()["results"] == []
    assert grouped.status_code == 200, grouped.text
    assert grouped.json()["results"] == []


@pytest.mark.parametrize(
    ("window", "length"),
    [
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("30d", timedelta(days=30)),
    ],
)
async def test_a_window_counts_the_range_that_ends_now(
    client: httpx.AsyncClient, window: str, length: timedelta
) -> None:
    await post(
        client,
        event(at=NOW - length - MICROSECOND, input_tokens=1),
        event(at=NOW - length, input_tokens=20),
        event(at=NOW - MICROSECOND, input_tokens=300),
        event(at=NOW, input_tokens=4000),
    )

    response = await client.get("/v1/totals", params={"window": window})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["start"] == format_rfc3339(NOW - length)
    # The range runs to the end of the minute holding now: an event stamped now is counted.
    assert body["end"] == "2026-11-27T12:01:00Z"
    assert [(r["requests"], r["input_tokens"]) for r in body["results"]] == [(3, 4320)]


async def test_a_window_widens_to_whole_minutes_when_now_is_between_minutes(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    clock.now = NOW + timedelta(seconds=30)
    await post(
        client,
        event(at=at(27, 11, 54, 59, 999_999), input_tokens=1),
        event(at=at(27, 11, 55), input_tokens=20),
        event(at=at(27, 12, 0, 45), input_tokens=300),
        event(at=at(27, 12, 1), input_tokens=4000),
    )

    response = await client.get("/v1/totals", params={"window": "5m"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["start"], body["end"]) == ("2026-11-27T11:55:00Z", "2026-11-27T12:01:00Z")
    assert [(r["requests"], r["input_tokens"]) for r in body["results"]] == [(2, 320)]


async def test_start_is_floored_and_end_is_raised_to_whole_minutes(
    client: httpx.AsyncClient,
) -> None:
    await post(
        client,
        event(at=at(27, 10, 14, 59, 999_999), input_tokens=1),
        event(at=at(27, 10, 15), input_tokens=20),
        event(at=at(27, 10, 45, 59, 999_999), input_tokens=300),
        event(at=at(27, 10, 46), input_tokens=4000),
    )

    response = await client.get(
        "/v1/totals",
        params={"start": "2026-11-27T10:15:42.5Z", "end": "2026-11-27T10:45:00.000001Z"},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["start"], body["end"]) == ("2026-11-27T10:15:00Z", "2026-11-27T10:46:00Z")
    assert [(r["requests"], r["input_tokens"]) for r in body["results"]] == [(2, 320)]


async def test_a_start_with_an_offset_is_echoed_in_utc_and_end_defaults_to_the_minute_after_now(
    client: httpx.AsyncClient,
) -> None:
    await post(client, event(at=at(27, 10, 15), input_tokens=20))

    response = await client.get("/v1/totals", params={"start": "2026-11-27T11:15:00+01:00"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["start"], body["end"]) == ("2026-11-27T10:15:00Z", "2026-11-27T12:01:00Z")
    assert [r["input_tokens"] for r in body["results"]] == [20]


async def test_an_event_exactly_at_start_counts_and_one_exactly_at_end_does_not(
    client: httpx.AsyncClient,
) -> None:
    await post(
        client,
        event(at=at(27, 9, 59, 59, 999_999), input_tokens=1),
        event(at=at(27, 10), input_tokens=20),
        event(at=at(27, 10, 59, 59, 999_999), input_tokens=300),
        event(at=at(27, 11), input_tokens=4000),
    )

    response = await client.get(
        "/v1/totals", params={"start": "2026-11-27T10:00:00Z", "end": "2026-11-27T11:00:00Z"}
    )

    assert response.status_code == 200, response.text
    assert [(r["requests"], r["input_tokens"]) for r in response.json()["results"]] == [(2, 320)]


async def test_group_by_model_gives_one_sorted_total_per_model(client: httpx.AsyncClient) -> None:
    await post(
        client,
        event(model="m-small", input_tokens=10, output_tokens=1),
        event(model="m-large", input_tokens=200, output_tokens=2, reasoning_tokens=2),
        event(
            model="m-large",
            input_tokens=3000,
            cached_input_tokens=30,
            cache_write_input_tokens=2000,
            output_tokens=3,
        ),
    )

    response = await client.get("/v1/totals", params={"window": "1h", "group_by": "model"})

    assert response.status_code == 200, response.text
    assert response.json()["results"] == [
        {
            "model": "m-large",
            "requests": 2,
            "input_tokens": 3200,
            "cached_input_tokens": 30,
            "cache_write_input_tokens": 2000,
            "output_tokens": 5,
            "reasoning_tokens": 2,
            "total_tokens": 3205,
            "cost": None,
        },
        {
            "model": "m-small",
            "requests": 1,
            "input_tokens": 10,
            "cached_input_tokens": 0,
            "cache_write_input_tokens": 0,
            "output_tokens": 1,
            "reasoning_tokens": 0,
            "total_tokens": 11,
            "cost": None,
        },
    ]


@pytest.mark.parametrize(
    ("group_by", "order"),
    [
        ("model,tenant", [("m-a", "t-1"), ("m-a", "t-2"), ("m-b", "t-1")]),
        ("tenant,model", [("t-1", "m-a"), ("t-1", "m-b"), ("t-2", "m-a")]),
    ],
)
async def test_combined_group_by_sorts_by_the_keys_in_the_order_asked(
    client: httpx.AsyncClient, group_by: str, order: list[tuple[str, str]]
) -> None:
    await post(
        client,
        event(model="m-b", tenant="t-1", input_tokens=1),
        event(model="m-a", tenant="t-2", input_tokens=20),
        event(model="m-a", tenant="t-1", input_tokens=300),
        event(model="m-b", tenant="t-1", input_tokens=4000, project="other"),
    )
    names = group_by.split(",")

    response = await client.get("/v1/totals", params={"window": "1h", "group_by": group_by})

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [tuple(result[name] for name in names) for result in results] == order
    assert all(set(result) == {*names, *MEASURES, "cost"} for result in results)
    input_tokens = {(r["model"], r["tenant"]): r["input_tokens"] for r in results}
    assert input_tokens == {("m-b", "t-1"): 4001, ("m-a", "t-2"): 20, ("m-a", "t-1"): 300}


async def test_events_without_an_api_key_id_group_under_null(client: httpx.AsyncClient) -> None:
    await post(
        client,
        event(api_key_id="key-2", input_tokens=1),
        event(input_tokens=20),
        event(api_key_id="key-1", input_tokens=300),
        event(input_tokens=4000),
    )

    response = await client.get("/v1/totals", params={"window": "1h", "group_by": "api_key_id"})

    assert response.status_code == 200, response.text
    assert [(r["api_key_id"], r["input_tokens"]) for r in response.json()["results"]] == [
        (None, 4020),
        ("key-1", 300),
        ("key-2", 1),
    ]


async def test_filter_values_of_one_field_are_or_ed_and_fields_are_and_ed(
    client: httpx.AsyncClient,
) -> None:
    events = [
        event(tenant="acme", model="m-large", input_tokens=1),
        event(tenant="acme", model="m-small", input_tokens=20),
        event(tenant="globex", model="m-large", input_tokens=300),
        event(tenant="globex", model="m-large", project="lab", input_tokens=4000),
        event(tenant="initech", model="m-large", input_tokens=50_000),
        event(tenant="initech", model="m-mini", input_tokens=600_000),
    ]
    await post(client, *events)

    response = await client.get(
        "/v1/totals",
        params=[
            ("window", "1h"),
            ("group_by", "tenant"),
            ("tenant", "acme"),
            ("tenant", "globex"),
            ("model", "m-large"),
            ("model", "m-mini"),
        ],
    )

    assert response.status_code == 200, response.text
    assert [(r["tenant"], r["input_tokens"]) for r in response.json()["results"]] == [
        ("acme", 1),
        ("globex", 4300),
    ]


async def test_filters_on_project_and_api_key_id_narrow_the_totals(
    client: httpx.AsyncClient,
) -> None:
    await post(
        client,
        event(project="lab", api_key_id="key-1", input_tokens=1),
        event(project="lab", input_tokens=20),
        event(api_key_id="key-1", input_tokens=300),
    )

    response = await client.get(
        "/v1/totals", params={"window": "1h", "project": "lab", "api_key_id": "key-1"}
    )

    assert response.status_code == 200, response.text
    assert [r["input_tokens"] for r in response.json()["results"]] == [1]


# Events around day, hour and minute edges over a week, so that ranges read every rollup grain.
EDGE_EVENTS = [
    event(at=at(20, 9, 29, 59, 999_999), input_tokens=1, output_tokens=1),
    event(at=at(20, 9, 30), input_tokens=2, output_tokens=3, model="m-small"),
    event(at=at(20, 9, 59, 59, 999_999), input_tokens=4, cached_input_tokens=4, output_tokens=5),
    event(
        at=at(20, 10),
        input_tokens=8,
        cache_write_input_tokens=8,
        output_tokens=7,
        reasoning_tokens=7,
    ),
    event(at=at(20, 23, 59, 59, 999_999), input_tokens=16, output_tokens=11, model="m-small"),
    event(at=at(21), input_tokens=32, output_tokens=13, api_key_id="key-1"),
    event(
        at=at(21, 0, 0, 0, 1),
        input_tokens=64,
        cached_input_tokens=16,
        cache_write_input_tokens=48,
        output_tokens=17,
        project="lab",
    ),
    event(at=at(22, 12, 34, 56, 789_000), input_tokens=128, output_tokens=19, model="m-small"),
    event(at=at(22, 12, 34, 56, 789_000), input_tokens=256, output_tokens=23),
    event(at=at(23, 23, 59, 59, 999_999), input_tokens=512, output_tokens=29),
    event(at=at(24), input_tokens=1024, cached_input_tokens=1000, output_tokens=31),
    event(at=at(24, 13, 59, 59, 999_999), input_tokens=2048, output_tokens=37, tenant="globex"),
    event(at=at(24, 14), input_tokens=4096, output_tokens=41, reasoning_tokens=40),
    event(at=at(24, 14, 44, 59, 999_999), input_tokens=8192, output_tokens=43, model="m-small"),
    event(at=at(24, 14, 45), input_tokens=16384, cache_write_input_tokens=4000, output_tokens=47),
]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (at(20, 9, 30), at(24, 14, 45)),
        (at(20, 10), at(24)),
        (at(21), at(23)),
        (at(20, 23, 59), at(21, 0, 1)),
        (at(22, 12, 34), at(22, 12, 35)),
        (at(20, 9, 31), at(24, 14, 44)),
        (at(19), at(25)),
    ],
    ids=[
        "days-hours-and-minutes",
        "hours-and-days",
        "whole-days",
        "minutes-across-midnight",
        "one-minute",
        "inner-minutes-missed",
        "everything",
    ],
)
@pytest.mark.parametrize("group_by", ["", "model", "tenant,project,api_key_id"])
async def test_totals_over_several_days_match_a_plain_sum_of_the_events(
    client: httpx.AsyncClient, start: datetime, end: datetime, group_by: str
) -> None:
    await post(client, *EDGE_EVENTS)

    response = await client.get(
        "/v1/totals",
        params={"start": format_rfc3339(start), "end": format_rfc3339(end), "group_by": group_by},
    )

    assert response.status_code == 200, response.text
    names = [name for name in group_by.split(",") if name]
    assert response.json() == {
        "start": format_rfc3339(start),
        "end": format_rfc3339(end),
        "results": expected_totals(EDGE_EVENTS, start, end, names),
    }


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"window": "1h", "group_by": "colour"}, "group_by"),
        ({"window": "1h", "group_by": "model,colour"}, "group_by"),
        ({"window": "1h", "start": "2026-11-27T10:00:00Z"}, "window"),
        ({"window": "2h"}, "window"),
        ({}, "start"),
        ({"start": "2026-11-27T10:00:00"}, "start"),
        ({"start": "yesterday"}, "start"),
        ({"start": "2026-11-27T10:00:00Z", "end": "2026-11-27T10:00:00"}, "end"),
        ({"start": "2026-11-27T10:00:00Z", "end": "2026-11-27T09:00:00Z"}, "end"),
        ({"start": "2026-11-27T10:00:30Z", "end": "2026-11-27T10:00:10Z"}, "end"),
        ({"start": "2026-11-27T12:05:00Z"}, "start"),
        ({"window": "1h", "model": ""}, "model"),
    ],
    ids=[
        "unknown-group-by",
        "unknown-among-group-by",
        "window-and-start",
        "unknown-window",
        "neither-window-nor-start",
        "start-without-offset",
        "start-not-a-timestamp",
        "end-without-offset",
        "end-before-start",
        "end-before-start-within-one-minute",
        "start-after-now",
        "empty-filter-value",
    ],
)
async def test_invalid_parameters_are_refused_naming_the_parameter(
    client: httpx.AsyncClient, params: dict[str, str], parameter: str
) -> None:
    response = await client.get("/v1/totals", params=params)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert [problem["field"] for problem in error["errors"]] == [parameter]
    assert parameter in error["message"]
