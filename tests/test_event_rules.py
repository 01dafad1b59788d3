"""The rules one event must pass, as a client meets them through `POST /v1/events`.

Every rejection names the field and says what is wrong, and a rejected event is never stored.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import NOW, ClientFactory
from tests.factories import event
from tokenpulse.tables import usage_event

JSON = {"content-type": "application/json"}
# Wide enough to hold every event the default window accepts, [NOW - 35 days, NOW + 5 minutes].
EVERYTHING = {"start": "2026-10-01T00:00:00Z", "end": "2026-11-28T00:00:00Z"}
COUNT_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "reasoning_tokens",
)
STRING_FIELDS = ("event_id", "tenant", "project", "model", "api_key_id")


async def post(client: httpx.AsyncClient, body: object) -> httpx.Response:
    """Post `body`: a value to send as JSON, or JSON text sent exactly as written."""
    if isinstance(body, str):
        return await client.post("/v1/events", content=body.encode(), headers=JSON)
    return await client.post("/v1/events", json=body)


async def stored_totals(client: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    response = await client.get("/v1/totals", params={**EVERYTHING, **params})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


async def stored_requests(client: httpx.AsyncClient) -> int:
    results = await stored_totals(client)
    return int(results[0]["requests"]) if results else 0


async def errors_of_rejected(client: httpx.AsyncClient, body: object) -> list[dict[str, Any]]:
    """Post one event that must be rejected; its errors, once it is known nothing was stored."""
    stored_before = await stored_requests(client)
    response = await post(client, body)
    assert response.status_code == 422, response.text
    result = response.json()
    assert (result["accepted"], result["duplicates"], result["rejected"]) == (0, 0, 1)
    assert len(result["errors"]) == 1
    assert result["errors"][0]["index"] == 0
    assert await stored_requests(client) == stored_before
    errors: list[dict[str, Any]] = result["errors"][0]["errors"]
    return errors


async def accept(client: httpx.AsyncClient, *bodies: object) -> None:
    """Post events that must all be accepted."""
    response = await client.post("/v1/events", json={"events": list(bodies)})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "accepted": len(bodies),
        "duplicates": 0,
        "rejected": 0,
        "errors": [],
    }


async def stored_column(db: AsyncEngine, column: str) -> list[Any]:
    """One column of every stored event, read straight from PostgreSQL, ordered by event_id."""
    async with db.connect() as connection:
        rows = await connection.execute(
            select(usage_event.c[column]).order_by(usage_event.c.event_id)
        )
        return [value for (value,) in rows]


def event_with(field: str, value: object) -> dict[str, Any]:
    """`event()` with one field, named at run time, set to `value` (`...` leaves it out)."""
    changes: dict[str, Any] = {field: value}
    return event(**changes)


def only(field: str | None, message: str) -> list[dict[str, Any]]:
    return [{"field": field, "message": message}]


def raw_event(**fields: str) -> str:
    """A valid event as JSON text, with `fields` set or added as raw JSON text."""
    members = {
        "event_id": '"evt-raw"',
        "occurred_at": '"2026-11-27T11:59:00Z"',
        "tenant": '"acme"',
        "model": '"m-large"',
        "input_tokens": "1200",
        "output_tokens": "800",
    }
    members.update(fields)
    return "{" + ", ".join(f'"{name}": {value}' for name, value in members.items()) + "}"


# event_id


async def test_event_without_event_id_is_rejected(client: httpx.AsyncClient) -> None:
    errors = await errors_of_rejected(client, event(event_id=...))
    assert errors == only("event_id", "is required")


@pytest.mark.parametrize(
    ("event_id", "message"),
    [
        ("", "must not be empty"),
        ("e" * 129, "must be at most 128 characters, got 129"),
        ("req 8f2", "must be printable ASCII characters without spaces"),
        ("req-é", "must be printable ASCII characters without spaces"),
        ("req-\x07", "must be printable ASCII characters without spaces"),
        ("req\t8f2", "must be printable ASCII characters without spaces"),
        ("req-\x7f", "must be printable ASCII characters without spaces"),
        (42, "must be a string, got an integer"),
    ],
    ids=["empty", "129-chars", "space", "non-ascii", "bell", "tab", "delete", "integer"],
)
async def test_event_id_breaking_the_rules_is_rejected_saying_why(
    client: httpx.AsyncClient, event_id: object, message: str
) -> None:
    errors = await errors_of_rejected(client, event(event_id=event_id))
    assert errors == only("event_id", message)


async def test_event_id_of_128_printable_ascii_characters_is_accepted(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    printable = "".join(chr(code) for code in range(0x21, 0x7F))
    event_id = (printable * 2)[:128]
    await accept(client, event(event_id=event_id), event(event_id="x"))
    assert sorted(await stored_column(db, "event_id")) == sorted([event_id, "x"])


async def test_rejected_event_is_reported_with_its_event_id(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/events", json=event(event_id="req_8f2", input_tokens="12"))
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "index": 0,
            "event_id": "req_8f2",
            "errors": only("input_tokens", "must be an integer, got a string"),
        }
    ]


async def test_event_id_that_is_not_a_string_is_reported_as_null(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/events", json=event(event_id=42))
    assert response.json()["errors"][0]["event_id"] is None


# occurred_at


async def test_event_without_occurred_at_is_rejected(client: httpx.AsyncClient) -> None:
    errors = await errors_of_rejected(client, event(occurred_at=...))
    assert errors == only("occurred_at", "is required")


@pytest.mark.parametrize(
    ("occurred_at", "message"),
    [
        ("2026-11-27T11:59:00", "must include a UTC offset ('Z' or ±hh:mm)"),
        ("2026-11-27T11:59:00.250", "must include a UTC offset ('Z' or ±hh:mm)"),
        ("2026-11-27", "must be an RFC 3339 timestamp such as 2026-11-27T09:00:00Z"),
        ("yesterday", "must be an RFC 3339 timestamp such as 2026-11-27T09:00:00Z"),
        ("2026-11-27T11:59Z", "must be an RFC 3339 timestamp such as 2026-11-27T09:00:00Z"),
        ("2026-11-31T11:59:00Z", "must be an RFC 3339 timestamp such as 2026-11-27T09:00:00Z"),
        ("2026-11-27T11:59:00+24:00", "must be an RFC 3339 timestamp such as 2026-11-27T09:00:00Z"),
        ("27/11/2026 11:59:00 UTC", "must be an RFC 3339 timestamp such as 2026-11-27T09:00:00Z"),
        ("", "must be an RFC 3339 timestamp such as 2026-11-27T09:00:00Z"),
        (
            "\uff12\uff10\uff12\uff16-11-27T11:59:00Z",
            "must be an RFC 3339 timestamp such as 2026-11-27T09:00:00Z",
        ),
        (1795867140, "must be an RFC 3339 string, got an integer"),
    ],
    ids=[
        "no-offset",
        "no-offset-fraction",
        "date-only",
        "garbage",
        "no-seconds",
        "no-such-day",
        "offset-out-of-range",
        "other-format",
        "empty",
        "non-ascii-digits",
        "epoch-seconds",
    ],
)
async def test_occurred_at_that_is_not_rfc3339_with_an_offset_is_rejected(
    client: httpx.AsyncClient, occurred_at: object, message: str
) -> None:
    errors = await errors_of_rejected(client, event(occurred_at=occurred_at))
    assert errors == only("occurred_at", message)


async def test_occurred_at_more_than_35_days_ago_is_rejected(client: httpx.AsyncClient) -> None:
    errors = await errors_of_rejected(client, event(at=NOW - timedelta(days=35, microseconds=1)))
    assert errors == only("occurred_at", "is older than the accepted 35 days")


async def test_occurred_at_more_than_5_minutes_ahead_is_rejected(
    client: httpx.AsyncClient,
) -> None:
    errors = await errors_of_rejected(client, event(at=NOW + timedelta(minutes=5, microseconds=1)))
    assert errors == only("occurred_at", "is more than 5 minutes in the future")


async def test_occurred_at_exactly_at_either_edge_of_the_window_is_accepted(
    client: httpx.AsyncClient,
) -> None:
    await accept(client, event(at=NOW - timedelta(days=35)), event(at=NOW + timedelta(minutes=5)))
    assert await stored_requests(client) == 2


async def test_the_accepted_window_is_configurable(make_client: ClientFactory) -> None:
    window = {"max_event_age": timedelta(days=60), "max_event_lead": timedelta(seconds=30)}
    async with make_client(**window) as client:
        await accept(
            client,
            event(at=NOW - timedelta(days=40)),
            event(at=NOW - timedelta(days=60)),
            event(at=NOW + timedelta(seconds=30)),
        )
        response = await client.post(
            "/v1/events",
            json={
                "events": [
                    event(at=NOW - timedelta(days=60, seconds=1)),
                    event(at=NOW + timedelta(seconds=31)),
                ]
            },
        )
    assert response.status_code == 422
    assert [rejection["errors"] for rejection in response.json()["errors"]] == [
        only("occurred_at", "is older than the accepted 60 days"),
        only("occurred_at", "is more than 30 seconds in the future"),
    ]


@pytest.mark.parametrize(
    ("lead", "said"),
    [
        (timedelta(seconds=1), "1 second"),
        (timedelta(seconds=90), "90 seconds"),
        (timedelta(minutes=1), "1 minute"),
        (timedelta(hours=2), "2 hours"),
        (timedelta(days=1), "1 day"),
    ],
)
async def test_window_edge_is_named_in_the_largest_whole_unit(
    make_client: ClientFactory, lead: timedelta, said: str
) -> None:
    async with make_client(max_event_lead=lead) as client:
        errors = await errors_of_rejected(client, event(at=NOW + lead + timedelta(seconds=1)))
    assert errors == only("occurred_at", f"is more than {said} in the future")


async def test_a_narrower_window_rejects_what_the_default_accepts(
    make_client: ClientFactory,
) -> None:
    async with make_client(max_event_age=timedelta(hours=36)) as client:
        errors = await errors_of_rejected(client, event(at=NOW - timedelta(days=2)))
    assert errors == only("occurred_at", "is older than the accepted 36 hours")


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2026-11-27T17:29:30+05:30",
        "2026-11-27T08:59:30-03:00",
        "2026-11-27T11:59:30+00:00",
        "2026-11-27T11:59:30-00:00",
        "2026-11-27t11:59:30z",
    ],
)
async def test_occurred_at_with_an_offset_is_stored_as_the_utc_instant_it_names(
    client: httpx.AsyncClient, db: AsyncEngine, occurred_at: str
) -> None:
    await accept(client, event(occurred_at=occurred_at))
    assert await stored_column(db, "occurred_at") == [
        datetime(2026, 11, 27, 11, 59, 30, tzinfo=UTC)
    ]
    response = await client.get(
        "/v1/usage",
        params={"bucket": "1m", "start": "2026-11-27T11:58:00Z", "end": "2026-11-27T12:00:00Z"},
    )
    assert [len(bucket["results"]) for bucket in response.json()["data"]] == [0, 1]


async def test_offset_decides_whether_an_instant_is_inside_the_window(
    client: httpx.AsyncClient,
) -> None:
    # 17:34+05:30 is 12:04Z, inside the 5-minute lead; 12:04-01:00 is 13:04Z, an hour past it.
    await accept(client, event(occurred_at="2026-11-27T17:34:00+05:30"))
    errors = await errors_of_rejected(client, event(occurred_at="2026-11-27T12:04:00-01:00"))
    assert errors == only("occurred_at", "is more than 5 minutes in the future")


@pytest.mark.parametrize(
    ("occurred_at", "microsecond"),
    [
        ("2026-11-27T11:59:30.5Z", 500_000),
        ("2026-11-27T11:59:30.123456Z", 123_456),
        ("2026-11-27T11:59:30.000001Z", 1),
        ("2026-11-27T11:59:30.123456789Z", 123_456),
        ("2026-11-27T11:59:30.999999999999Z", 999_999),
        ("2026-11-27T17:29:30.25+05:30", 250_000),
    ],
)
async def test_fractional_seconds_are_kept_to_the_microsecond(
    client: httpx.AsyncClient, db: AsyncEngine, occurred_at: str, microsecond: int
) -> None:
    await accept(client, event(occurred_at=occurred_at))
    assert await stored_column(db, "occurred_at") == [
        datetime(2026, 11, 27, 11, 59, 30, microsecond, tzinfo=UTC)
    ]


# tenant, project, model, api_key_id


async def test_event_without_tenant_is_rejected_for_a_platform_caller(
    client: httpx.AsyncClient,
) -> None:
    errors = await errors_of_rejected(client, event(tenant=...))
    assert errors == only("tenant", "is required")


@pytest.mark.parametrize("field", ["tenant", "project", "model", "api_key_id"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "must not be empty"),
        ("n" * 129, "must be at most 128 characters, got 129"),
        (7, "must be a string, got an integer"),
        (["acme"], "must be a string, got an array"),
        ({"name": "acme"}, "must be a string, got an object"),
        (False, "must be a string, got a boolean"),
    ],
    ids=["empty", "129-chars", "integer", "array", "object", "boolean"],
)
async def test_name_field_breaking_the_rules_is_rejected_saying_why(
    client: httpx.AsyncClient, field: str, value: object, message: str
) -> None:
    errors = await errors_of_rejected(client, event_with(field, value))
    assert errors == only(field, message)


@pytest.mark.parametrize("field", ["tenant", "project", "model", "api_key_id"])
async def test_name_field_of_128_characters_in_any_script_is_accepted(
    client: httpx.AsyncClient, field: str
) -> None:
    name = ("é-名 " * 32)[:128]
    await accept(client, event_with(field, name))
    [result] = await stored_totals(client, group_by=field)
    assert result[field] == name


async def test_event_without_model_is_rejected(client: httpx.AsyncClient) -> None:
    errors = await errors_of_rejected(client, event(model=...))
    assert errors == only("model", "is required")


async def test_event_without_project_is_stored_under_default(client: httpx.AsyncClient) -> None:
    await accept(client, event(project=...), event(project="search"))
    results = await stored_totals(client, group_by="project")
    assert [(result["project"], result["requests"]) for result in results] == [
        ("default", 1),
        ("search", 1),
    ]


async def test_api_key_id_is_optional_and_groups_under_null(client: httpx.AsyncClient) -> None:
    await accept(client, event(api_key_id=...), event(api_key_id="key_1"))
    results = await stored_totals(client, group_by="api_key_id")
    assert sorted((result["api_key_id"] or "", result["requests"]) for result in results) == [
        ("", 1),
        ("key_1", 1),
    ]


@pytest.mark.parametrize("field", STRING_FIELDS)
async def test_string_holding_a_nul_character_is_rejected(
    client: httpx.AsyncClient, field: str
) -> None:
    errors = await errors_of_rejected(client, event_with(field, "bad\x00name"))
    assert errors == only(field, "must not contain NUL characters")


@pytest.mark.parametrize("field", STRING_FIELDS)
async def test_string_holding_a_lone_surrogate_is_rejected(
    client: httpx.AsyncClient, field: str
) -> None:
    errors = await errors_of_rejected(client, raw_event(**{field: '"bad-\\ud800"'}))
    assert errors == only(field, "must be valid Unicode (it holds a lone surrogate)")


async def test_event_id_with_a_lone_surrogate_is_echoed_escaped(
    client: httpx.AsyncClient,
) -> None:
    response = await post(client, raw_event(event_id='"evt-\\udfff"'))
    assert response.status_code == 422
    assert response.json()["errors"][0]["event_id"] == "evt-\\udfff"


async def test_surrogate_pair_is_a_valid_character(client: httpx.AsyncClient) -> None:
    response = await post(client, raw_event(model='"m-\\ud83d\\ude00"'))
    assert response.status_code == 200, response.text
    [result] = await stored_totals(client, group_by="model")
    assert result["model"] == "m-\U0001f600"


# counts


@pytest.mark.parametrize("field", COUNT_FIELDS)
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("12", "must be an integer, got a string"),
        (12.0, "must be an integer, got a number with a decimal point or exponent"),
        (12.5, "must be an integer, got a number with a decimal point or exponent"),
        (True, "must be an integer, got a boolean"),
        ([12], "must be an integer, got an array"),
        ({"n": 12}, "must be an integer, got an object"),
        (-1, "must be at least 0, got -1"),
        (1_000_000_001, "must be at most 1,000,000,000, got 1000000001"),
        (2**63, "must be at most 1,000,000,000, got 9223372036854775808"),
        (-(2**63) - 1, "must be at least 0, got -9223372036854775809"),
    ],
    ids=[
        "string",
        "float",
        "fraction",
        "boolean",
        "array",
        "object",
        "negative",
        "over-a-billion",
        "2**63",
        "below-int64",
    ],
)
async def test_count_that_is_not_a_whole_number_in_range_is_rejected_naming_the_field(
    client: httpx.AsyncClient, field: str, value: object, message: str
) -> None:
    errors = await errors_of_rejected(client, event_with(field, value))
    assert errors == only(field, message)


@pytest.mark.parametrize("field", COUNT_FIELDS)
@pytest.mark.parametrize("literal", ["1e3", "1E3", "1000e0", "1000.0", "-0.0"])
async def test_count_written_with_a_decimal_point_or_exponent_is_rejected(
    client: httpx.AsyncClient, field: str, literal: str
) -> None:
    errors = await errors_of_rejected(client, raw_event(**{field: literal}))
    assert errors == only(
        field, "must be an integer, got a number with a decimal point or exponent"
    )


@pytest.mark.parametrize("field", COUNT_FIELDS)
@pytest.mark.parametrize(
    ("literal", "message"),
    [
        ("9" * 5000, "must be at most 1,000,000,000, got an integer of 5000 digits"),
        ("-" + "9" * 5000, "must be at least 0, got an integer of 5000 digits"),
        ("9" * 300, "must be at most 1,000,000,000, got an integer of 300 digits"),
        ("-" + "9" * 300, "must be at least 0, got an integer of 300 digits"),
    ],
    ids=["5000-digits", "negative-5000-digits", "300-digits", "negative-300-digits"],
)
async def test_count_with_thousands_of_digits_is_rejected_without_echoing_them(
    client: httpx.AsyncClient, field: str, literal: str, message: str
) -> None:
    errors = await errors_of_rejected(client, raw_event(**{field: literal}))
    assert errors == only(field, message)


@pytest.mark.parametrize("field", ["input_tokens", "output_tokens"])
async def test_required_count_missing_or_null_is_rejected(
    client: httpx.AsyncClient, field: str
) -> None:
    assert await errors_of_rejected(client, event_with(field, ...)) == only(field, "is required")
    assert await errors_of_rejected(client, event_with(field, None)) == only(field, "is required")


@pytest.mark.parametrize(
    "field", ["cached_input_tokens", "cache_write_input_tokens", "reasoning_tokens"]
)
async def test_optional_count_missing_or_null_counts_as_zero(
    client: httpx.AsyncClient, field: str
) -> None:
    await accept(client, event_with(field, ...), event_with(field, None))
    [result] = await stored_totals(client)
    assert result[field] == 0
    assert result["requests"] == 2


async def test_counts_of_exactly_one_billion_are_accepted_and_summed_exactly(
    client: httpx.AsyncClient,
) -> None:
    billion = 1_000_000_000
    biggest = event(
        input_tokens=billion,
        cached_input_tokens=billion,
        output_tokens=billion,
        reasoning_tokens=billion,
    )
    writing = {
        **biggest,
        "event_id": "evt-second",
        "cached_input_tokens": 0,
        "cache_write_input_tokens": billion,
    }
    await accept(client, biggest, writing)
    [result] = await stored_totals(client)
    assert result == {
        "requests": 2,
        "input_tokens": 2 * billion,
        "cached_input_tokens": billion,
        "cache_write_input_tokens": billion,
        "output_tokens": 2 * billion,
        "reasoning_tokens": 2 * billion,
        "total_tokens": 4 * billion,
        "cost": None,
    }


async def test_counts_of_zero_are_accepted(client: httpx.AsyncClient) -> None:
    await accept(client, event(input_tokens=0, output_tokens=0))
    [result] = await stored_totals(client)
    assert (result["requests"], result["total_tokens"]) == (1, 0)


async def test_the_largest_count_is_configurable(make_client: ClientFactory) -> None:
    async with make_client(max_tokens_per_count=1000) as client:
        await accept(client, event(input_tokens=1000, output_tokens=1000))
        errors = await errors_of_rejected(client, event(input_tokens=0, output_tokens=1001))
    assert errors == only("output_tokens", "must be at most 1,000, got 1001")


async def test_cached_input_tokens_above_input_tokens_is_rejected(
    client: httpx.AsyncClient,
) -> None:
    errors = await errors_of_rejected(client, event(input_tokens=1200, cached_input_tokens=1201))
    assert errors == only("cached_input_tokens", "must not exceed input_tokens (1,200), got 1,201")


async def test_cache_write_input_tokens_above_input_tokens_is_rejected(
    client: httpx.AsyncClient,
) -> None:
    errors = await errors_of_rejected(
        client, event(input_tokens=1200, cache_write_input_tokens=1201)
    )
    assert errors == only(
        "cache_write_input_tokens", "must not exceed input_tokens (1,200), got 1,201"
    )


async def test_cached_and_cache_write_input_tokens_above_input_tokens_together_are_rejected(
    client: httpx.AsyncClient,
) -> None:
    errors = await errors_of_rejected(
        client, event(input_tokens=1200, cached_input_tokens=700, cache_write_input_tokens=501)
    )
    assert errors == only(
        "cache_write_input_tokens",
        "plus cached_input_tokens (700) must not exceed input_tokens (1,200),"
        " got 501 (1,201 in all)",
    )


async def test_cached_and_cache_write_input_tokens_each_above_input_tokens_are_both_named(
    client: httpx.AsyncClient,
) -> None:
    errors = await errors_of_rejected(
        client, event(input_tokens=10, cached_input_tokens=11, cache_write_input_tokens=12)
    )
    assert errors == [
        {"field": "cached_input_tokens", "message": "must not exceed input_tokens (10), got 11"},
        {
            "field": "cache_write_input_tokens",
            "message": "must not exceed input_tokens (10), got 12",
        },
    ]


async def test_reasoning_tokens_above_output_tokens_is_rejected(
    client: httpx.AsyncClient,
) -> None:
    errors = await errors_of_rejected(client, event(output_tokens=0, reasoning_tokens=1))
    assert errors == only("reasoning_tokens", "must not exceed output_tokens (0), got 1")


async def test_parts_equal_to_their_wholes_are_accepted(client: httpx.AsyncClient) -> None:
    await accept(
        client,
        event(input_tokens=1200, cached_input_tokens=1200, output_tokens=800, reasoning_tokens=800),
        event(input_tokens=1200, cached_input_tokens=700, cache_write_input_tokens=500),
        event(input_tokens=1200, cache_write_input_tokens=1200, cached_input_tokens=None),
    )
    [result] = await stored_totals(client)
    assert result == {
        "requests": 3,
        "input_tokens": 3600,
        "cached_input_tokens": 1900,
        "cache_write_input_tokens": 1700,
        "output_tokens": 2400,
        "reasoning_tokens": 800,
        "total_tokens": 6000,
        "cost": None,
    }


async def test_part_is_not_compared_with_a_whole_that_is_itself_invalid(
    client: httpx.AsyncClient,
) -> None:
    errors = await errors_of_rejected(client, event(input_tokens="12", cached_input_tokens=5))
    assert errors == only("input_tokens", "must be an integer, got a string")
    errors = await errors_of_rejected(
        client, event(input_tokens="12", cached_input_tokens=5, cache_write_input_tokens=10)
    )
    assert errors == only("input_tokens", "must be an integer, got a string")


async def test_parts_are_not_summed_when_one_is_past_the_largest_count(
    client: httpx.AsyncClient,
) -> None:
    errors = await errors_of_rejected(
        client, event(input_tokens=1200, cached_input_tokens=1000, cache_write_input_tokens=2**40)
    )
    assert errors == only(
        "cache_write_input_tokens", "must be at most 1,000,000,000, got 1099511627776"
    )


async def test_a_batch_mixing_cache_writes_within_and_beyond_input_keeps_the_good_ones(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    batch = [
        event(event_id="writes", input_tokens=5000, cache_write_input_tokens=4000),
        event(event_id="reads", input_tokens=5000, cached_input_tokens=4000),
        event(
            event_id="too-much",
            input_tokens=5000,
            cached_input_tokens=4000,
            cache_write_input_tokens=1001,
        ),
        event(
            event_id="exactly",
            input_tokens=5000,
            cached_input_tokens=4000,
            cache_write_input_tokens=1000,
        ),
        event(event_id="a-string", cache_write_input_tokens="10"),
    ]
    response = await client.post("/v1/events", json={"events": batch})

    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["accepted"], result["duplicates"], result["rejected"]) == (3, 0, 2)
    assert result["errors"] == [
        {
            "index": 2,
            "event_id": "too-much",
            "errors": only(
                "cache_write_input_tokens",
                "plus cached_input_tokens (4,000) must not exceed input_tokens (5,000),"
                " got 1,001 (5,001 in all)",
            ),
        },
        {
            "index": 4,
            "event_id": "a-string",
            "errors": only("cache_write_input_tokens", "must be an integer, got a string"),
        },
    ]
    assert await stored_column(db, "event_id") == ["exactly", "reads", "writes"]
    assert await stored_column(db, "cache_write_input_tokens") == [1000, 0, 4000]
    [totals] = await stored_totals(client)
    assert (totals["cached_input_tokens"], totals["cache_write_input_tokens"]) == (8000, 5000)


# attributes


@pytest.mark.parametrize(
    ("attributes", "kind"),
    [("route=/chat", "a string"), (["route"], "an array"), (3, "an integer"), (True, "a boolean")],
)
async def test_attributes_that_are_not_an_object_are_rejected(
    client: httpx.AsyncClient, attributes: object, kind: str
) -> None:
    errors = await errors_of_rejected(client, event(attributes=attributes))
    assert errors == only("attributes", f"must be an object, got {kind}")


async def test_attributes_with_17_keys_are_rejected(client: httpx.AsyncClient) -> None:
    attributes = {f"k{number}": "v" for number in range(17)}
    errors = await errors_of_rejected(client, event(attributes=attributes))
    assert errors == only("attributes", "must have at most 16 keys, got 17")


async def test_attribute_key_of_65_characters_is_rejected(client: httpx.AsyncClient) -> None:
    key = "k" * 65
    errors = await errors_of_rejected(client, event(attributes={key: "v"}))
    assert errors == only(f"attributes.{'k' * 64}…", "keys must be 1 to 64 characters")


async def test_empty_attribute_key_is_rejected(client: httpx.AsyncClient) -> None:
    errors = await errors_of_rejected(client, event(attributes={"": "v"}))
    assert errors == only("attributes.", "keys must be 1 to 64 characters")


async def test_attribute_value_of_257_characters_is_rejected(client: httpx.AsyncClient) -> None:
    errors = await errors_of_rejected(client, event(attributes={"route": "v" * 257}))
    assert errors == only("attributes.route", "must be at most 256 characters, got 257")


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (5, "an integer"),
        (1.5, "a number with a decimal point or exponent"),
        (True, "a boolean"),
        (None, "null"),
        (["a"], "an array"),
        ({"a": "b"}, "an object"),
    ],
)
async def test_attribute_value_that_is_not_a_string_is_rejected(
    client: httpx.AsyncClient, value: object, kind: str
) -> None:
    errors = await errors_of_rejected(client, event(attributes={"retries": value}))
    assert errors == only("attributes.retries", f"must be a string, got {kind}")


async def test_attribute_holding_nul_is_rejected(client: httpx.AsyncClient) -> None:
    errors = await errors_of_rejected(client, event(attributes={"ro\x00ute": "a\x00b"}))
    assert errors == [
        {"field": "attributes.ro\x00ute", "message": "key must not contain NUL characters"},
        {"field": "attributes.ro\x00ute", "message": "must not contain NUL characters"},
    ]


async def test_attribute_holding_a_lone_surrogate_is_rejected(client: httpx.AsyncClient) -> None:
    errors = await errors_of_rejected(client, raw_event(attributes='{"route": "\\ud800"}'))
    assert errors == only("attributes.route", "must be valid Unicode (it holds a lone surrogate)")


async def test_valid_attributes_are_stored_as_sent(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    largest = {f"{number:02d}" + "k" * 62: "é" * 256 for number in range(16)}
    small = {"route": "/v1/chat", "region": "eu-west-1", "empty": ""}
    await accept(
        client,
        event(event_id="a-largest", attributes=largest),
        event(event_id="b-small", attributes=small),
        event(event_id="c-none"),
        event(event_id="d-empty", attributes={}),
    )
    assert await stored_column(db, "attributes") == [largest, small, None, {}]


# the event as a whole


async def test_unknown_top_level_field_is_rejected(client: httpx.AsyncClient) -> None:
    errors = await errors_of_rejected(client, event(total_tokens=2000))
    assert errors == only("total_tokens", "is not a known field")


async def test_field_given_twice_in_an_event_is_rejected(client: httpx.AsyncClient) -> None:
    text = raw_event(model='"m-large", "model": "m-small"')
    errors = await errors_of_rejected(client, text)
    assert errors == only("model", "appears more than once")


@pytest.mark.parametrize(
    "repeated",
    [
        '"m-large", "model" : "m-small"',
        '"m-large", "model"\t:"m-small"',
        '"m-large", "mod\\u0065l": "m-small"',
        '"m-large", "attributes": {"note": "a \\":"}, "model": "m-small"',
    ],
    ids=["space-before-colon", "tab-before-colon", "escaped-key", "beside-a-colon-in-a-value"],
)
async def test_field_given_twice_is_rejected_however_the_json_is_spaced_or_escaped(
    client: httpx.AsyncClient, repeated: str
) -> None:
    errors = await errors_of_rejected(client, raw_event(model=repeated))
    assert errors == only("model", "appears more than once")


async def test_a_value_holding_quote_colon_is_accepted_as_it_is(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    await accept(client, event(attributes={"note": 'say "a": b'}, model='m": x'))
    assert await stored_column(db, "model") == ['m": x']


async def test_attribute_given_twice_is_rejected(client: httpx.AsyncClient) -> None:
    errors = await errors_of_rejected(
        client, raw_event(attributes='{"route": "/a", "route": "/a"}')
    )
    assert errors == only("attributes.route", "appears more than once")


async def test_every_problem_of_an_event_is_reported(client: httpx.AsyncClient) -> None:
    body = event(
        event_id=...,
        occurred_at="2026-11-27 11:59:00",
        model="",
        input_tokens="12",
        output_tokens=-3,
        reasoning_tokens=1.5,
        attributes={"a": 1},
        prompt="hello",
    )
    errors = await errors_of_rejected(client, body)
    assert sorted(errors, key=lambda error: error["field"]) == [
        {"field": "attributes.a", "message": "must be a string, got an integer"},
        {"field": "event_id", "message": "is required"},
        {"field": "input_tokens", "message": "must be an integer, got a string"},
        {"field": "model", "message": "must not be empty"},
        {"field": "occurred_at", "message": "must include a UTC offset ('Z' or ±hh:mm)"},
        {"field": "output_tokens", "message": "must be at least 0, got -3"},
        {"field": "prompt", "message": "is not a known field"},
        {
            "field": "reasoning_tokens",
            "message": "must be an integer, got a number with a decimal point or exponent",
        },
    ]


async def test_an_event_with_very_many_problems_lists_the_first_twenty_and_counts_the_rest(
    client: httpx.AsyncClient,
) -> None:
    body: dict[str, object] = {**event(), **{f"unknown_{n:03}": n for n in range(500)}}

    errors = await errors_of_rejected(client, body)

    assert errors[:20] == [
        {"field": f"unknown_{n:03}", "message": "is not a known field"} for n in range(20)
    ]
    assert errors[20:] == [{"field": None, "message": "and 480 more errors"}]


@pytest.mark.parametrize(
    ("value", "kind"),
    [(None, "null"), ("evt-1", "a string"), (12, "an integer"), ([event()], "an array")],
)
async def test_event_that_is_not_an_object_is_rejected(
    client: httpx.AsyncClient, value: object, kind: str
) -> None:
    errors = await errors_of_rejected(client, {"events": [value]})
    assert errors == only(None, f"an event must be a JSON object, got {kind}")


async def test_bad_events_do_not_block_the_good_ones_around_them(
    client: httpx.AsyncClient,
) -> None:
    batch = [
        event(event_id="good-0"),
        event(event_id="bad-1", input_tokens="12"),
        event(event_id="good-2"),
        event(event_id="good-3"),
        "not an event",
        event(event_id="bad-5", tenant=...),
        event(event_id="good-6"),
    ]
    response = await client.post("/v1/events", json={"events": batch})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "accepted": 4,
        "duplicates": 0,
        "rejected": 3,
        "errors": [
            {
                "index": 1,
                "event_id": "bad-1",
                "errors": only("input_tokens", "must be an integer, got a string"),
            },
            {
                "index": 4,
                "event_id": None,
                "errors": only(None, "an event must be a JSON object, got a string"),
            },
            {"index": 5, "event_id": "bad-5", "errors": only("tenant", "is required")},
        ],
    }
    assert await stored_requests(client) == 4


async def test_every_submitted_event_is_accepted_a_duplicate_or_rejected(
    client: httpx.AsyncClient,
) -> None:
    await accept(client, event(event_id="stored-before"))
    batch = [
        event(event_id="new-1"),
        event(event_id="stored-before", input_tokens=5),
        event(event_id="new-2"),
        event(event_id="new-1", model="m-other"),
        event(event_id="bad-1", output_tokens=...),
        event(event_id="new-3"),
        event(event_id="bad-2", cached_input_tokens=99_999),
    ]
    response = await client.post("/v1/events", json={"events": batch})
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["accepted"], result["duplicates"], result["rejected"]) == (3, 2, 2)
    assert result["accepted"] + result["duplicates"] + result["rejected"] == len(batch)
    assert [rejection["index"] for rejection in result["errors"]] == [4, 6]
    [totals] = await stored_totals(client)
    assert (totals["requests"], totals["input_tokens"]) == (4, 4 * 1200)
