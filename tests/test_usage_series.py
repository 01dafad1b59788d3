"""`GET /v1/usage`: the seven measures per group in every minute, hour or (local) day bucket."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import NOW, Clock
from tests.factories import event
from tokenpulse.rollups.fold import fold


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


async def post(client: httpx.AsyncClient, *events: dict[str, Any]) -> None:
    response = await client.post("/v1/events", json={"events": list(events)})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(events)


def summed(*events: dict[str, Any], **groups: str | None) -> dict[str, Any]:
    """One result: `groups`, then the seven measures added up from `events` by hand."""
    input_tokens = sum(body["input_tokens"] for body in events)
    output_tokens = sum(body["output_tokens"] for body in events)
    return {
        **groups,
        "requests": len(events),
        "input_tokens": input_tokens,
        "cached_input_tokens": sum(body.get("cached_input_tokens", 0) for body in events),
        "cache_write_input_tokens": sum(body.get("cache_write_input_tokens", 0) for body in events),
        "output_tokens": output_tokens,
        "reasoning_tokens": sum(body.get("reasoning_tokens", 0) for body in events),
        "total_tokens": input_tokens + output_tokens,
        "cost": None,
    }


def bucket(start: str, end: str, *results: dict[str, Any]) -> dict[str, Any]:
    return {"start": start, "end": end, "results": list(results)}


async def test_every_hour_of_the_range_is_present_in_order_with_empty_ones(
    client: httpx.AsyncClient,
) -> None:
    early = event(
        at=utc("2026-11-27T10:15:00Z"),
        input_tokens=100,
        cached_input_tokens=10,
        cache_write_input_tokens=60,
    )
    later = event(at=utc("2026-11-27T10:45:30Z"), output_tokens=50, reasoning_tokens=5)
    last = event(at=utc("2026-11-27T11:59:59.999999Z"), input_tokens=7, cache_write_input_tokens=7)
    await post(client, early, later, last)

    response = await client.get(
        "/v1/usage",
        params={"bucket": "1h", "start": "2026-11-27T09:00:00Z", "end": "2026-11-27T13:00:00Z"},
    )

    assert response.status_code == 200, response.text
    assert response.json() == {
        "bucket": "1h",
        "start": "2026-11-27T09:00:00Z",
        "end": "2026-11-27T13:00:00Z",
        "data": [
            bucket("2026-11-27T09:00:00Z", "2026-11-27T10:00:00Z"),
            bucket("2026-11-27T10:00:00Z", "2026-11-27T11:00:00Z", summed(early, later)),
            bucket("2026-11-27T11:00:00Z", "2026-11-27T12:00:00Z", summed(last)),
            bucket("2026-11-27T12:00:00Z", "2026-11-27T13:00:00Z"),
        ],
    }


async def test_minute_buckets_hold_the_events_of_their_minute(client: httpx.AsyncClient) -> None:
    first = event(at=utc("2026-11-27T11:56:00Z"))
    second = event(at=utc("2026-11-27T11:57:59.999999Z"), input_tokens=3)
    third = event(at=utc("2026-11-27T11:58:00Z"), input_tokens=5)
    await post(client, first, second, third)

    response = await client.get(
        "/v1/usage",
        params={"bucket": "1m", "start": "2026-11-27T11:57:00Z", "end": "2026-11-27T12:00:00Z"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["data"] == [
        bucket("2026-11-27T11:57:00Z", "2026-11-27T11:58:00Z", summed(second)),
        bucket("2026-11-27T11:58:00Z", "2026-11-27T11:59:00Z", summed(third)),
        bucket("2026-11-27T11:59:00Z", "2026-11-27T12:00:00Z"),
    ]


async def test_day_buckets_are_the_default_and_are_utc_days(client: httpx.AsyncClient) -> None:
    before_midnight = event(at=utc("2026-11-24T23:59:59.999999Z"), input_tokens=3)
    at_midnight = event(at=utc("2026-11-26T00:00:00Z"), input_tokens=5)
    midday = event(at=utc("2026-11-26T12:34:56.789Z"), input_tokens=7)
    await post(client, before_midnight, at_midnight, midday)

    response = await client.get(
        "/v1/usage", params={"start": "2026-11-24T00:00:00Z", "end": "2026-11-27T00:00:00Z"}
    )

    assert response.status_code == 200, response.text
    assert response.json() == {
        "bucket": "1d",
        "start": "2026-11-24T00:00:00Z",
        "end": "2026-11-27T00:00:00Z",
        "data": [
            bucket("2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z", summed(before_midnight)),
            bucket("2026-11-25T00:00:00Z", "2026-11-26T00:00:00Z"),
            bucket("2026-11-26T00:00:00Z", "2026-11-27T00:00:00Z", summed(at_midnight, midday)),
        ],
    }


@pytest.mark.parametrize("size", ["1m", "1h"])
async def test_an_event_a_microsecond_before_eleven_is_in_the_bucket_that_ends_at_eleven(
    client: httpx.AsyncClient, size: str
) -> None:
    before = event(at=utc("2026-11-27T10:59:59.999999Z"), input_tokens=3)
    on_the_hour = event(at=utc("2026-11-27T11:00:00Z"), input_tokens=5)
    await post(client, before, on_the_hour)

    response = await client.get(
        "/v1/usage",
        params={"bucket": size, "start": "2026-11-27T10:00:00Z", "end": "2026-11-27T12:00:00Z"},
    )

    assert response.status_code == 200, response.text
    holding = {
        (data["start"], data["end"]): data["results"]
        for data in response.json()["data"]
        if data["results"]
    }
    if size == "1h":
        assert holding == {
            ("2026-11-27T10:00:00Z", "2026-11-27T11:00:00Z"): [summed(before)],
            ("2026-11-27T11:00:00Z", "2026-11-27T12:00:00Z"): [summed(on_the_hour)],
        }
    else:
        assert holding == {
            ("2026-11-27T10:59:00Z", "2026-11-27T11:00:00Z"): [summed(before)],
            ("2026-11-27T11:00:00Z", "2026-11-27T11:01:00Z"): [summed(on_the_hour)],
        }


@pytest.mark.parametrize(
    ("params", "parameter", "nearest"),
    [
        ({"bucket": "1h", "start": "2026-11-27T10:29:00Z"}, "start", "2026-11-27T10:00:00Z"),
        ({"bucket": "1h", "start": "2026-11-27T10:31:00Z"}, "start", "2026-11-27T11:00:00Z"),
        ({"bucket": "1m", "start": "2026-11-27T10:00:31Z"}, "start", "2026-11-27T10:01:00Z"),
        (
            {"bucket": "1h", "start": "2026-11-27T09:00:00Z", "end": "2026-11-27T11:40:00Z"},
            "end",
            "2026-11-27T12:00:00Z",
        ),
        ({"start": "2026-11-26T13:00:00Z"}, "start", "2026-11-27T00:00:00Z"),
        (
            {"start": "2026-10-25T00:00:00Z", "tz": "Europe/Berlin"},
            "start",
            "2026-10-25T00:00:00+02:00",
        ),
        (
            {"start": "2026-11-20T00:00:00Z", "tz": "Asia/Kolkata"},
            "start",
            "2026-11-20T00:00:00+05:30",
        ),
    ],
    ids=[
        "hour-rounds-down",
        "hour-rounds-up",
        "minute-rounds-up",
        "end-of-hours",
        "utc-day",
        "berlin-midnight",
        "kolkata-midnight",
    ],
)
async def test_an_instant_off_the_bucket_boundaries_is_refused_naming_the_nearest_one(
    client: httpx.AsyncClient, params: dict[str, str], parameter: str, nearest: str
) -> None:
    response = await client.get("/v1/usage", params=params)

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert [problem["field"] for problem in error["errors"]] == [parameter]
    assert nearest in error["errors"][0]["message"]


@pytest.mark.parametrize(
    ("now", "params", "end", "buckets"),
    [
        (NOW, {"bucket": "1h", "start": "2026-11-27T09:00:00Z"}, "2026-11-27T13:00:00Z", 4),
        (
            utc("2026-11-27T12:34:56Z"),
            {"bucket": "1m", "start": "2026-11-27T12:30:00Z"},
            "2026-11-27T12:35:00Z",
            5,
        ),
        (
            utc("2026-11-27T12:34:56Z"),
            {"bucket": "1h", "start": "2026-11-27T09:00:00Z"},
            "2026-11-27T13:00:00Z",
            4,
        ),
        (NOW, {"start": "2026-11-25T00:00:00Z"}, "2026-11-28T00:00:00Z", 3),
        (
            utc("2026-11-27T23:30:00Z"),
            {"start": "2026-11-26T00:00:00+01:00", "tz": "Europe/Berlin"},
            "2026-11-29T00:00:00+01:00",
            3,
        ),
    ],
    ids=["hour-of-now", "minute-of-now", "hour-between-minutes", "utc-day", "berlin-day"],
)
async def test_end_defaults_to_the_end_of_the_bucket_that_holds_now(
    client: httpx.AsyncClient,
    clock: Clock,
    now: datetime,
    params: dict[str, str],
    end: str,
    buckets: int,
) -> None:
    clock.now = now
    current = event(at=now)
    await post(client, current)

    response = await client.get("/v1/usage", params=params)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["end"] == end
    assert len(body["data"]) == buckets
    assert body["data"][-1]["end"] == end
    assert body["data"][-1]["results"] == [summed(current)]


async def test_a_range_of_exactly_1440_buckets_is_answered(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/v1/usage",
        params={"bucket": "1m", "start": "2026-11-26T12:00:00Z", "end": "2026-11-27T12:00:00Z"},
    )

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert len(data) == 1440
    assert (data[0]["start"], data[-1]["end"]) == ("2026-11-26T12:00:00Z", "2026-11-27T12:00:00Z")


@pytest.mark.parametrize(
    "params",
    [
        {"bucket": "1m", "start": "2026-11-26T12:00:00Z", "end": "2026-11-27T12:01:00Z"},
        {"bucket": "1m", "start": "2026-11-26T11:00:00Z"},
        {"bucket": "1h", "start": "2026-09-28T11:00:00Z"},
    ],
    ids=["1441-minutes", "minutes-up-to-now", "hours-up-to-now"],
)
async def test_more_than_1440_buckets_are_refused(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get("/v1/usage", params=params)

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert [problem["field"] for problem in error["errors"]] == ["end"]
    assert "1,440" in error["message"]


async def test_berlin_days_follow_local_midnight_across_the_25_hour_autumn_day(
    client: httpx.AsyncClient,
) -> None:
    # On 2026-10-25 Berlin moves from +02:00 back to +01:00: that day lasts 25 hours.
    last_of_24th = event(at=utc("2026-10-25T00:00:00+02:00") - timedelta(microseconds=1))
    first_of_25th = event(at=utc("2026-10-25T00:00:00+02:00"), input_tokens=3)
    late_on_25th = event(at=utc("2026-10-25T23:30:00+01:00"), input_tokens=5)
    first_of_26th = event(at=utc("2026-10-26T00:00:00+01:00"), input_tokens=7)
    await post(client, last_of_24th, first_of_25th, late_on_25th, first_of_26th)

    response = await client.get(
        "/v1/usage",
        params={
            "bucket": "1d",
            "tz": "Europe/Berlin",
            "start": "2026-10-24T00:00:00+02:00",
            "end": "2026-10-27T00:00:00+01:00",
        },
    )

    assert response.status_code == 200, response.text
    assert response.json() == {
        "bucket": "1d",
        "start": "2026-10-24T00:00:00+02:00",
        "end": "2026-10-27T00:00:00+01:00",
        "data": [
            bucket("2026-10-24T00:00:00+02:00", "2026-10-25T00:00:00+02:00", summed(last_of_24th)),
            bucket(
                "2026-10-25T00:00:00+02:00",
                "2026-10-26T00:00:00+01:00",
                summed(first_of_25th, late_on_25th),
            ),
            bucket("2026-10-26T00:00:00+01:00", "2026-10-27T00:00:00+01:00", summed(first_of_26th)),
        ],
    }


async def test_berlin_days_follow_local_midnight_across_the_23_hour_spring_day(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    # On 2026-03-29 Berlin moves from +01:00 to +02:00: that day lasts 23 hours.
    clock.now = utc("2026-03-30T12:00:00Z")
    last_of_28th = event(at=utc("2026-03-28T23:59:59.999999+01:00"))
    first_of_29th = event(at=utc("2026-03-29T00:00:00+01:00"), input_tokens=3)
    last_of_29th = event(at=utc("2026-03-29T23:59:59.999999+02:00"), input_tokens=5)
    first_of_30th = event(at=utc("2026-03-30T00:00:00+02:00"), input_tokens=7)
    await post(client, last_of_28th, first_of_29th, last_of_29th, first_of_30th)

    response = await client.get(
        "/v1/usage",
        params={"tz": "Europe/Berlin", "start": "2026-03-28T00:00:00+01:00"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["data"] == [
        bucket("2026-03-28T00:00:00+01:00", "2026-03-29T00:00:00+01:00", summed(last_of_28th)),
        bucket(
            "2026-03-29T00:00:00+01:00",
            "2026-03-30T00:00:00+02:00",
            summed(first_of_29th, last_of_29th),
        ),
        bucket("2026-03-30T00:00:00+02:00", "2026-03-31T00:00:00+02:00", summed(first_of_30th)),
    ]


async def test_new_york_days_follow_local_midnight_when_daylight_saving_ends(
    client: httpx.AsyncClient,
) -> None:
    # On 2026-11-01 New York moves from -04:00 back to -05:00.
    last_of_31st = event(at=utc("2026-10-31T23:59:59.999999-04:00"))
    first_of_1st = event(at=utc("2026-11-01T00:00:00-04:00"), input_tokens=3)
    late_on_1st = event(at=utc("2026-11-01T23:30:00-05:00"), input_tokens=5)
    first_of_2nd = event(at=utc("2026-11-02T00:00:00-05:00"), input_tokens=7)
    await post(client, last_of_31st, first_of_1st, late_on_1st, first_of_2nd)

    response = await client.get(
        "/v1/usage",
        params={
            "tz": "America/New_York",
            "start": "2026-10-31T00:00:00-04:00",
            "end": "2026-11-03T00:00:00-05:00",
        },
    )

    assert response.status_code == 200, response.text
    assert response.json()["data"] == [
        bucket("2026-10-31T00:00:00-04:00", "2026-11-01T00:00:00-04:00", summed(last_of_31st)),
        bucket(
            "2026-11-01T00:00:00-04:00",
            "2026-11-02T00:00:00-05:00",
            summed(first_of_1st, late_on_1st),
        ),
        bucket("2026-11-02T00:00:00-05:00", "2026-11-03T00:00:00-05:00", summed(first_of_2nd)),
    ]


async def test_kolkata_days_start_at_half_past_six_utc(client: httpx.AsyncClient) -> None:
    before_range = event(at=utc("2026-11-19T18:29:59.999999Z"))
    first_of_20th = event(at=utc("2026-11-19T18:30:00Z"), input_tokens=3)
    last_of_20th = event(at=utc("2026-11-20T18:29:59.999999Z"), input_tokens=5)
    first_of_21st = event(at=utc("2026-11-20T18:30:00Z"), input_tokens=7)
    midday_21st = event(at=utc("2026-11-21T06:30:00Z"), input_tokens=11)
    after_range = event(at=utc("2026-11-21T18:30:00Z"))
    await post(
        client, before_range, first_of_20th, last_of_20th, first_of_21st, midday_21st, after_range
    )

    response = await client.get(
        "/v1/usage",
        params={
            "tz": "Asia/Kolkata",
            "start": "2026-11-20T00:00:00+05:30",
            "end": "2026-11-22T00:00:00+05:30",
        },
    )

    assert response.status_code == 200, response.text
    assert response.json() == {
        "bucket": "1d",
        "start": "2026-11-20T00:00:00+05:30",
        "end": "2026-11-22T00:00:00+05:30",
        "data": [
            bucket(
                "2026-11-20T00:00:00+05:30",
                "2026-11-21T00:00:00+05:30",
                summed(first_of_20th, last_of_20th),
            ),
            bucket(
                "2026-11-21T00:00:00+05:30",
                "2026-11-22T00:00:00+05:30",
                summed(first_of_21st, midday_21st),
            ),
        ],
    }


async def test_an_unescaped_plus_in_a_url_offset_is_read_as_a_plus(
    client: httpx.AsyncClient,
) -> None:
    first_of_21st = event(at=utc("2026-11-21T00:00:00+01:00"))
    await post(client, first_of_21st)

    response = await client.get(
        "/v1/usage?tz=Europe/Berlin&start=2026-11-21T00:00:00+01:00&end=2026-11-22T00:00:00+01:00"
    )

    assert response.status_code == 200, response.text
    assert response.json()["data"] == [
        bucket("2026-11-21T00:00:00+01:00", "2026-11-22T00:00:00+01:00", summed(first_of_21st))
    ]


async def test_group_by_and_filters_apply_within_every_bucket(client: httpx.AsyncClient) -> None:
    acme_large = event(at=utc("2026-11-27T10:10:00Z"), tenant="acme", input_tokens=3)
    acme_small = event(
        at=utc("2026-11-27T10:20:00Z"), tenant="acme", model="m-small", input_tokens=5
    )
    globex_large = event(at=utc("2026-11-27T10:30:00Z"), tenant="globex", input_tokens=7)
    initech_large = event(at=utc("2026-11-27T10:40:00Z"), tenant="initech", input_tokens=11)
    globex_small = event(
        at=utc("2026-11-27T11:50:00Z"), tenant="globex", model="m-small", input_tokens=13
    )
    globex_mini = event(
        at=utc("2026-11-27T11:55:00Z"), tenant="globex", model="m-mini", input_tokens=17
    )
    await post(
        client, acme_large, acme_small, globex_large, initech_large, globex_small, globex_mini
    )

    response = await client.get(
        "/v1/usage",
        params=[
            ("bucket", "1h"),
            ("start", "2026-11-27T10:00:00Z"),
            ("end", "2026-11-27T12:00:00Z"),
            ("group_by", "model,tenant"),
            ("tenant", "acme"),
            ("tenant", "globex"),
            ("model", "m-large"),
            ("model", "m-small"),
        ],
    )

    assert response.status_code == 200, response.text
    assert response.json()["data"] == [
        bucket(
            "2026-11-27T10:00:00Z",
            "2026-11-27T11:00:00Z",
            summed(acme_large, model="m-large", tenant="acme"),
            summed(globex_large, model="m-large", tenant="globex"),
            summed(acme_small, model="m-small", tenant="acme"),
        ),
        bucket(
            "2026-11-27T11:00:00Z",
            "2026-11-27T12:00:00Z",
            summed(globex_small, model="m-small", tenant="globex"),
        ),
    ]


async def test_events_without_an_api_key_id_group_under_null_in_every_bucket(
    client: httpx.AsyncClient,
) -> None:
    keyless = event(at=utc("2026-11-27T11:58:10Z"))
    keyed = event(at=utc("2026-11-27T11:58:20Z"), api_key_id="key-1", input_tokens=3)
    await post(client, keyless, keyed)

    response = await client.get(
        "/v1/usage",
        params={
            "bucket": "1m",
            "start": "2026-11-27T11:58:00Z",
            "end": "2026-11-27T11:59:00Z",
            "group_by": "api_key_id",
        },
    )

    assert response.status_code == 200, response.text
    assert response.json()["data"][0]["results"] == [
        summed(keyless, api_key_id=None),
        summed(keyed, api_key_id="key-1"),
    ]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"start": "2026-11-26T00:00:00Z", "tz": "Mars/Olympus_Mons"}, "tz"),
        ({"start": "2026-11-26T00:00:00Z", "bucket": "2d"}, "bucket"),
        ({"bucket": "1h"}, "start"),
        ({"start": "2026-11-26T00:00:00"}, "start"),
        ({"start": "2026-11-26T00:00:00Z", "end": "2026-11-26T00:00:00Z"}, "end"),
        ({"start": "2026-11-26T00:00:00Z", "end": "2026-11-25T00:00:00Z"}, "end"),
        ({"start": "2026-11-28T00:00:00Z"}, "start"),
        ({"start": "2026-11-26T00:00:00Z", "group_by": "colour"}, "group_by"),
    ],
    ids=[
        "unknown-tz",
        "unknown-bucket",
        "no-start",
        "start-without-offset",
        "empty-range",
        "end-before-start",
        "start-after-the-current-bucket",
        "unknown-group-by",
    ],
)
async def test_invalid_parameters_are_refused_naming_the_parameter(
    client: httpx.AsyncClient, params: dict[str, str], parameter: str
) -> None:
    response = await client.get("/v1/usage", params=params)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert [problem["field"] for problem in error["errors"]] == [parameter]
    assert parameter in error["message"]


# Cache writes across minute, hour and day edges (UTC and Kolkata's, at 18:30 UTC): the first
# four are folded into the rollups before the rest are sent, which stay pending.
CACHE_WRITES = [
    event(at=utc("2026-11-25T18:29:59.999999Z"), input_tokens=4000, cache_write_input_tokens=4000),
    event(
        at=utc("2026-11-25T18:30:00Z"),
        input_tokens=5000,
        cached_input_tokens=1000,
        cache_write_input_tokens=3500,
    ),
    event(at=utc("2026-11-25T23:59:30Z"), input_tokens=900, cached_input_tokens=900),
    event(at=utc("2026-11-26T00:00:00Z"), input_tokens=3000, cache_write_input_tokens=2999),
    event(at=utc("2026-11-26T00:00:10Z"), input_tokens=700, cache_write_input_tokens=300),
    event(at=utc("2026-11-26T00:01:00Z"), input_tokens=200, cache_write_input_tokens=20),
    event(at=utc("2026-11-26T18:30:00Z"), input_tokens=10, cache_write_input_tokens=1),
]


@pytest.mark.parametrize(
    ("size", "tz", "start", "end"),
    [
        ("1m", "UTC", "2026-11-25T23:59:00Z", "2026-11-26T00:02:00Z"),
        ("1m", "UTC", "2026-11-25T18:29:00Z", "2026-11-25T18:31:00Z"),
        ("1h", "UTC", "2026-11-25T18:00:00Z", "2026-11-26T19:00:00Z"),
        ("1d", "UTC", "2026-11-25T00:00:00Z", "2026-11-27T00:00:00Z"),
        ("1d", "Asia/Kolkata", "2026-11-25T00:00:00+05:30", "2026-11-28T00:00:00+05:30"),
    ],
    ids=["minutes-at-midnight", "minutes-at-half-past-six", "hours", "utc-days", "kolkata-days"],
)
async def test_cache_writes_are_summed_in_every_bucket_folded_or_pending(
    client: httpx.AsyncClient, db: AsyncEngine, size: str, tz: str, start: str, end: str
) -> None:
    await post(client, *CACHE_WRITES[:4])
    async with db.begin() as connection:
        await fold(connection)
    await post(client, *CACHE_WRITES[4:])

    response = await client.get(
        "/v1/usage", params={"bucket": size, "tz": tz, "start": start, "end": end}
    )

    assert response.status_code == 200, response.text
    expected = []
    for data in response.json()["data"]:
        inside = [
            body
            for body in CACHE_WRITES
            if utc(data["start"]) <= utc(body["occurred_at"]) < utc(data["end"])
        ]
        expected.append(bucket(data["start"], data["end"], *([summed(*inside)] if inside else [])))
    assert response.json()["data"] == expected
    assert sum(
        result["cache_write_input_tokens"]
        for data in response.json()["data"]
        for result in data["results"]
    ) == sum(
        body.get("cache_write_input_tokens", 0)
        for body in CACHE_WRITES
        if utc(start) <= utc(body["occurred_at"]) < utc(end)
    )
