"""Cost in every aggregate: token sums priced by the version in effect at each event's minute,
exactly, as decimal strings, and null where nothing is priced."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import ClientFactory, Keys
from tests.factories import event
from tokenpulse.rollups.fold import fold

DAY = datetime(2026, 11, 26, tzinfo=UTC)
CHANGE = DAY + timedelta(hours=10, minutes=30)
"""A price change in the middle of an hour and of a day."""


@dataclass(frozen=True)
class Version:
    model: str
    effective_from: datetime
    prices: dict[str, str]

    def body(self) -> dict[str, Any]:
        return {
            "effective_from": self.effective_from.isoformat(),
            "per_million_tokens": self.prices,
        }


# Every part priced differently, so that a token counted as the wrong part shows.
OLD = Version(
    "m-large",
    DAY - timedelta(days=2),
    {"input": "3", "cached_input": "0.3", "cache_write_input": "3.75", "output": "15"},
)
NEW = Version(
    "m-large",
    CHANGE,
    {
        "input": "2.5",
        "cached_input": "0.25",
        "cache_write_input": "3.125",
        "output": "10",
        "reasoning": "12.000000000001",
    },
)
SMALL = Version("m-small", DAY - timedelta(days=2), {"input": "0.15", "output": "0.6"})


def expected_cost(events: list[dict[str, Any]], versions: list[Version]) -> str | None:
    """The cost of `events` by hand: each at the version of its model in effect at its instant."""
    total: Decimal | None = None
    for body in events:
        at = datetime.fromisoformat(body["occurred_at"])
        in_effect = [v for v in versions if v.model == body["model"] and v.effective_from <= at]
        if not in_effect:
            continue
        prices = {
            part: Decimal(value)
            for part, value in max(in_effect, key=lambda v: v.effective_from).prices.items()
        }
        cached = body.get("cached_input_tokens", 0)
        written = body.get("cache_write_input_tokens", 0)
        reasoning = body.get("reasoning_tokens", 0)
        cost = (
            (body["input_tokens"] - cached - written) * prices["input"]
            + cached * prices.get("cached_input", prices["input"])
            + written * prices.get("cache_write_input", prices["input"])
            + (body["output_tokens"] - reasoning) * prices["output"]
            + reasoning * prices.get("reasoning", prices["output"])
        ) / 1_000_000
        total = cost if total is None else total + cost
    return None if total is None else format(total.normalize(), "f")


def usage(at: datetime, model: str = "m-large", **fields: Any) -> dict[str, Any]:
    counts = {
        "input_tokens": 1_000_003,
        "cached_input_tokens": 200_001,
        "cache_write_input_tokens": 100_007,
        "output_tokens": 50_011,
        "reasoning_tokens": 20_003,
    }
    return event(at=at, model=model, **{**counts, **fields})


EVENTS = [
    usage(DAY + timedelta(hours=9, minutes=59, seconds=59)),
    usage(CHANGE - timedelta(microseconds=1)),
    usage(CHANGE),
    usage(CHANGE + timedelta(minutes=5), tenant="globex"),
    usage(DAY + timedelta(hours=23, minutes=59), reasoning_tokens=0),
    usage(DAY + timedelta(hours=10, minutes=45), model="m-small"),
    usage(DAY + timedelta(hours=10, minutes=45), model="m-unpriced"),
]
VERSIONS = [OLD, NEW, SMALL]


async def prepare(client: httpx.AsyncClient, engine: AsyncEngine, *, folded: bool) -> None:
    for version in VERSIONS:
        response = await client.put(f"/v1/prices/{version.model}", json=version.body())
        assert response.status_code == 201, response.text
    response = await client.post("/v1/events", json={"events": EVENTS})
    assert response.json()["accepted"] == len(EVENTS), response.text
    if folded:
        async with engine.begin() as connection:
            await fold(connection, max_rows=100_000)


def of(model: str | None = None, tenant: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in EVENTS
        if (model is None or e["model"] == model) and (tenant is None or e["tenant"] == tenant)
    ]


async def test_totals_price_each_event_at_the_version_of_its_minute(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    await prepare(client, db, folded=False)
    pending = await totals_of_the_day(client)
    async with db.begin() as connection:
        await fold(connection, max_rows=100_000)
    folded = await totals_of_the_day(client)

    assert pending == folded
    by_model, by_tenant, before, after = folded
    assert by_model == {
        "m-large": expected_cost(of("m-large"), VERSIONS),
        "m-small": expected_cost(of("m-small"), VERSIONS),
        "m-unpriced": None,
    }
    # By hand: two events at the old prices (3.28517655 each), two at the new (2.65262562500002
    # and a bit, for the reasoning price's last digit), one without reasoning (2.612619625).
    assert by_model["m-large"] == "14.488223975000040006"
    assert by_tenant == {
        "acme": expected_cost(of(tenant="acme"), VERSIONS),
        "globex": expected_cost(of(tenant="globex"), VERSIONS),
    }
    early = [e for e in EVENTS if datetime.fromisoformat(e["occurred_at"]) < CHANGE]
    assert before == {None: expected_cost(early, VERSIONS)}
    late = [e for e in EVENTS if datetime.fromisoformat(e["occurred_at"]) >= CHANGE]
    assert after == {None: expected_cost(late, VERSIONS)}


async def totals_of_the_day(client: httpx.AsyncClient) -> list[dict[str | None, str | None]]:
    """The day's cost by model and by tenant, and before and after the change."""
    day = {"start": DAY.isoformat(), "end": (DAY + timedelta(days=1)).isoformat()}
    asked = [
        {**day, "group_by": "model"},
        {**day, "group_by": "tenant"},
        # A range that ends at the minute of the change, and one that starts at it.
        {"start": DAY.isoformat(), "end": CHANGE.isoformat()},
        {**day, "start": CHANGE.isoformat()},
    ]
    answers = []
    for params in asked:
        response = await client.get("/v1/totals", params=params)
        assert response.status_code == 200, response.text
        group = params.get("group_by")
        answers.append(
            {
                None if group is None else result[group]: result["cost"]
                for result in response.json()["results"]
            }
        )
    return answers


async def test_series_split_the_hour_and_the_day_of_a_change_at_its_minute(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    await prepare(client, db, folded=True)
    start = DAY.isoformat()

    hours = await client.get(
        "/v1/usage",
        params={
            "bucket": "1h",
            "start": start,
            "end": (DAY + timedelta(days=1)).isoformat(),
            "model": "m-large",
        },
    )
    minutes = await client.get(
        "/v1/usage",
        params={
            "bucket": "1m",
            "start": (CHANGE - timedelta(minutes=1)).isoformat(),
            "end": (CHANGE + timedelta(minutes=1)).isoformat(),
            "model": "m-large",
        },
    )
    days = await client.get(
        "/v1/usage",
        params={
            "bucket": "1d",
            "start": (DAY - timedelta(days=1)).isoformat(),
            "end": (DAY + timedelta(days=1)).isoformat(),
        },
    )

    by_hour = {data["start"]: [r["cost"] for r in data["results"]] for data in hours.json()["data"]}
    at_ten = [e for e in of("m-large") if e["occurred_at"].startswith("2026-11-26T10")]
    assert by_hour["2026-11-26T10:00:00Z"] == [expected_cost(at_ten, VERSIONS)]
    assert by_hour["2026-11-26T11:00:00Z"] == []
    [[just_before], [at_change]] = [
        [r["cost"] for r in data["results"]] for data in minutes.json()["data"]
    ]
    assert just_before == expected_cost([EVENTS[1]], VERSIONS)
    assert at_change == expected_cost([EVENTS[2]], VERSIONS)
    [previous_day, day] = days.json()["data"]
    assert previous_day["results"] == []
    assert [r["cost"] for r in day["results"]] == [expected_cost(EVENTS, VERSIONS)]


async def test_a_replaced_or_withdrawn_version_changes_the_answer_from_then_on(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    await prepare(client, db, folded=False)
    day = {
        "start": DAY.isoformat(),
        "end": (DAY + timedelta(days=1)).isoformat(),
        "model": "m-large",
    }
    corrected = Version("m-large", CHANGE, {"input": "1", "output": "1"})

    replaced = await client.put(
        "/v1/prices/m-large", params={"replace": "true"}, json=corrected.body()
    )
    [after_replacing] = (await client.get("/v1/totals", params=day)).json()["results"]
    withdrawn = await client.delete(
        "/v1/prices/m-large", params={"effective_from": CHANGE.isoformat()}
    )
    [after_withdrawing] = (await client.get("/v1/totals", params=day)).json()["results"]

    assert replaced.status_code == 200
    assert after_replacing["cost"] == expected_cost(of("m-large"), [OLD, corrected])
    assert withdrawn.status_code == 200
    assert after_withdrawing["cost"] == expected_cost(of("m-large"), [OLD])


async def test_a_launch_summary_prices_its_edges_from_raw_events(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    await prepare(client, db, folded=True)
    # Launched mid-minute: the first minute is counted from raw events.
    launched_at = CHANGE - timedelta(seconds=1)
    await client.put("/v1/launches/m-large", json={"launched_at": launched_at.isoformat()})

    summary = (await client.get("/v1/launches/m-large")).json()

    since = [e for e in of("m-large") if datetime.fromisoformat(e["occurred_at"]) >= launched_at]
    assert summary["since_launch"]["cost"] == expected_cost(since, VERSIONS)
    assert summary["first_24h"]["cost"] == expected_cost(since, VERSIONS)
    # Every event holds as many tokens; the earliest of the busiest minutes is the one the
    # launch cuts, which counts only its last second: the event just before the change.
    assert summary["peak_minute"] == {
        "start": "2026-11-26T10:29:00Z",
        "total_tokens": 1_050_014,
        "cost": expected_cost([EVENTS[1]], VERSIONS),
    }


async def test_a_tenants_key_sees_the_cost_of_its_own_usage(
    client: httpx.AsyncClient, db: AsyncEngine, make_client: ClientFactory, keys: Keys
) -> None:
    await prepare(client, db, folded=False)
    async with make_client(token=await keys.create("read", tenant="globex")) as globex:
        response = await globex.get(
            "/v1/totals",
            params={"start": DAY.isoformat(), "end": (DAY + timedelta(days=1)).isoformat()},
        )

    [result] = response.json()["results"]
    assert result["cost"] == expected_cost(of(tenant="globex"), VERSIONS)


async def test_cost_is_null_where_nothing_is_priced(client: httpx.AsyncClient) -> None:
    await client.post("/v1/events", json={"events": [usage(DAY + timedelta(hours=1))]})

    [result] = (await client.get("/v1/totals", params={"start": DAY.isoformat()})).json()["results"]

    assert result["cost"] is None


def in_crossing_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        events, key=lambda e: (datetime.fromisoformat(e["occurred_at"]), e["event_id"].encode())
    )


async def cost_milestone(client: httpx.AsyncClient, threshold: str, **params: Any) -> Any:
    response = await client.get(
        "/v1/milestones",
        params={"metric": "cost", "threshold": threshold, "since": DAY.isoformat(), **params},
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("folded", [False, True], ids=["pending", "folded"])
async def test_a_cost_milestone_is_crossed_at_the_event_whose_cost_reaches_it(
    client: httpx.AsyncClient, db: AsyncEngine, folded: bool
) -> None:
    await prepare(client, db, folded=folded)
    ordered = in_crossing_order(of("m-large"))
    # The first event priced at the new version, right after the change mid-hour.
    crossing = next(e for e in ordered if datetime.fromisoformat(e["occurred_at"]) == CHANGE)
    running = expected_cost(ordered[: ordered.index(crossing) + 1], VERSIONS)
    assert running is not None
    one_more = format(Decimal(running) + Decimal("0.000000000001"), "f")

    exactly = await cost_milestone(client, running, model="m-large")
    beyond = await cost_milestone(client, one_more, model="m-large")

    assert exactly == {
        "metric": "cost",
        "threshold": running,
        "since": "2026-11-26T00:00:00Z",
        "reached": True,
        "crossed_at": "2026-11-26T10:30:00Z",
        "event_id": crossing["event_id"],
        "seconds_after_since": 37800.0,
        "current": expected_cost(ordered, VERSIONS),
    }
    following = ordered[ordered.index(crossing) + 1]
    assert beyond["event_id"] == following["event_id"]


async def test_a_cost_milestone_counts_only_priced_events_and_its_tenants(
    client: httpx.AsyncClient, db: AsyncEngine, make_client: ClientFactory, keys: Keys
) -> None:
    await prepare(client, db, folded=True)
    # Counted from mid-minute: the first minute comes from raw events.
    since = DAY + timedelta(hours=10, minutes=29, seconds=30)
    counted = [e for e in EVENTS if datetime.fromisoformat(e["occurred_at"]) >= since]
    everyone = await cost_milestone(client, "1000000", since=since.isoformat())
    unpriced = await cost_milestone(client, "1", model="m-unpriced")
    async with make_client(token=await keys.create("read", tenant="globex")) as globex:
        own = await cost_milestone(globex, "0.01", since=since.isoformat())

    assert everyone["reached"] is False
    assert everyone["current"] == expected_cost(counted, VERSIONS)
    assert unpriced["reached"] is False
    assert unpriced["current"] is None
    [globex_event] = of(tenant="globex")
    assert own["event_id"] == globex_event["event_id"]
    assert own["current"] == expected_cost([globex_event], VERSIONS)


async def test_a_late_event_moves_a_cost_milestone_earlier(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    await prepare(client, db, folded=True)
    ordered = in_crossing_order(of("m-large"))
    threshold = expected_cost(ordered[:2], VERSIONS)
    assert threshold is not None
    before = await cost_milestone(client, threshold, model="m-large")
    late = usage(DAY + timedelta(hours=3), input_tokens=10**9, cached_input_tokens=0)
    response = await client.post("/v1/events", json={"events": [late]})
    assert response.json()["accepted"] == 1

    after = await cost_milestone(client, threshold, model="m-large")

    assert before["event_id"] == ordered[1]["event_id"]
    assert after["event_id"] == late["event_id"]
    assert after["crossed_at"] == "2026-11-26T03:00:00Z"


async def test_a_cost_milestone_crossed_before_the_first_whole_minute_is_found_in_raw_events(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    await prepare(client, db, folded=True)
    # From one second before the change: the event a microsecond before it is the first counted.
    since = CHANGE - timedelta(seconds=1)
    first = EVENTS[1]
    threshold = expected_cost([first], VERSIONS)
    assert threshold is not None

    found = await cost_milestone(client, threshold, since=since.isoformat())

    assert found["event_id"] == first["event_id"]
    assert found["seconds_after_since"] == 0.999999


async def test_a_cost_milestone_inside_a_whole_day_opens_its_hours_past_unpriced_ones(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    await prepare(client, db, folded=True)
    # A day without a price change, so read as one day row: its first busy hour is unpriced.
    day = DAY - timedelta(days=1)
    earlier = [
        usage(day + timedelta(hours=3), model="m-unpriced"),
        usage(day + timedelta(hours=5, minutes=10)),
        usage(day + timedelta(hours=5, minutes=40)),
        usage(day + timedelta(hours=9), model="m-small"),
    ]
    response = await client.post("/v1/events", json={"events": earlier})
    assert response.json()["accepted"] == len(earlier)
    async with db.begin() as connection:
        await fold(connection, max_rows=100_000)
    reached_by_first = expected_cost(earlier[:2], VERSIONS)
    assert reached_by_first is not None
    just_past = format(Decimal(reached_by_first) + Decimal("0.000000000000000001"), "f")

    exactly = await cost_milestone(client, reached_by_first, since=day.isoformat())
    beyond = await cost_milestone(client, just_past, since=day.isoformat())

    assert exactly["event_id"] == earlier[1]["event_id"]
    assert beyond["event_id"] == earlier[2]["event_id"]
    assert beyond["current"] == expected_cost([*earlier, *EVENTS], VERSIONS)
