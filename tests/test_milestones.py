"""Milestones: the exact event at which a running sum crossed a threshold, by the SPEC's rule."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import NOW, ClientFactory, Keys, empty_all_but_keys
from tests.factories import event
from tokenpulse.instants import format_rfc3339
from tokenpulse.rollups.fold import fold

SINCE = "2026-11-27T00:00:00Z"
T0 = datetime(2026, 11, 27, tzinfo=UTC)


async def post(client: httpx.AsyncClient, *events: dict[str, Any]) -> None:
    response = await client.post("/v1/events", json={"events": list(events)})
    assert response.status_code == 200, response.text
    assert response.json()["rejected"] == 0


async def milestone(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/v1/milestones", params={"since": SINCE, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def test_the_crossing_is_the_event_at_which_the_running_sum_reaches_the_threshold(
    client: httpx.AsyncClient,
) -> None:
    await post(
        client,
        event(event_id="a", at=at(60), input_tokens=400, output_tokens=0),
        event(event_id="b", at=at(3600 * 5 + 1.25), input_tokens=300, output_tokens=300),
        event(event_id="c", at=at(3600 * 9), input_tokens=1, output_tokens=0),
    )

    exactly = await milestone(client, threshold=1000)
    beyond = await milestone(client, threshold=1001)

    assert exactly == {
        "metric": "total_tokens",
        "threshold": 1000,
        "since": SINCE,
        "reached": True,
        "crossed_at": "2026-11-27T05:00:01.250000Z",
        "event_id": "b",
        "seconds_after_since": 18001.25,
        "current": 1001,
    }
    assert (beyond["event_id"], beyond["crossed_at"]) == ("c", "2026-11-27T09:00:00Z")


async def test_events_at_the_same_instant_are_ordered_by_event_id(
    client: httpx.AsyncClient,
) -> None:
    same = at(7200.5)
    await post(
        client,
        event(event_id="req-b", at=same, input_tokens=10, output_tokens=0),
        event(event_id="req-a", at=same, input_tokens=10, output_tokens=0),
        event(event_id="req-C", at=same, input_tokens=10, output_tokens=0),
    )

    crossings = [(await milestone(client, threshold=n))["event_id"] for n in (10, 20, 30)]

    # Code point order: upper case before lower case.
    assert crossings == ["req-C", "req-a", "req-b"]


async def test_before_the_threshold_is_reached_the_answer_says_so_and_gives_the_sum_so_far(
    client: httpx.AsyncClient,
) -> None:
    await post(client, event(at=at(30), input_tokens=5, output_tokens=2))

    assert await milestone(client, threshold=10**9) == {
        "metric": "total_tokens",
        "threshold": 10**9,
        "since": SINCE,
        "reached": False,
        "crossed_at": None,
        "event_id": None,
        "seconds_after_since": None,
        "current": 7,
    }


async def test_a_late_event_moves_the_crossing_earlier(client: httpx.AsyncClient) -> None:
    await post(client, event(event_id="on-time", at=at(3 * 3600), input_tokens=100))
    assert (await milestone(client, threshold=100))["event_id"] == "on-time"

    await post(client, event(event_id="late", at=at(3600), input_tokens=100))

    moved = await milestone(client, threshold=100)
    assert (moved["event_id"], moved["crossed_at"]) == ("late", "2026-11-27T01:00:00Z")


async def test_events_before_since_do_not_count_and_since_may_cut_a_minute(
    client: httpx.AsyncClient,
) -> None:
    await post(
        client,
        event(event_id="before", at=at(3600 + 10), input_tokens=100, output_tokens=0),
        event(event_id="inside", at=at(3600 + 40), input_tokens=100, output_tokens=0),
        event(event_id="later", at=at(3600 + 70), input_tokens=100, output_tokens=0),
    )

    found = await milestone(client, threshold=150, since="2026-11-27T01:00:20Z")

    assert (found["event_id"], found["current"]) == ("later", 200)
    assert found["seconds_after_since"] == 50.0


@pytest.mark.parametrize(
    ("metric", "threshold", "expected"),
    [
        ("requests", 2, "b"),
        ("input_tokens", 15, "b"),
        ("cached_input_tokens", 5, "c"),
        ("cache_write_input_tokens", 5, "b"),
        ("output_tokens", 3, "a"),
        ("reasoning_tokens", 2, "c"),
        ("total_tokens", 16, "b"),
    ],
)
async def test_any_of_the_seven_measures_can_be_the_metric(
    client: httpx.AsyncClient, metric: str, threshold: int, expected: str
) -> None:
    await post(
        client,
        event(
            event_id="a",
            at=at(10),
            input_tokens=10,
            cache_write_input_tokens=2,
            output_tokens=3,
            reasoning_tokens=1,
        ),
        event(
            event_id="b",
            at=at(20),
            input_tokens=5,
            cached_input_tokens=2,
            cache_write_input_tokens=3,
            output_tokens=0,
        ),
        event(
            event_id="c",
            at=at(30),
            input_tokens=3,
            cached_input_tokens=3,
            output_tokens=1,
            reasoning_tokens=1,
        ),
    )

    found = await milestone(client, threshold=threshold, metric=metric)

    assert (found["metric"], found["event_id"]) == (metric, expected)


async def test_filters_choose_which_events_count(client: httpx.AsyncClient) -> None:
    await post(
        client,
        *(
            event(event_id=n, at=at(10 * int(n)), output_tokens=0, input_tokens=50, **dims)
            for n, dims in [
                ("1", {"tenant": "acme", "model": "m1"}),
                ("2", {"tenant": "globex", "model": "m1"}),
                ("3", {"tenant": "acme", "model": "m2"}),
                ("4", {"tenant": "acme", "model": "m1", "project": "p"}),
                ("5", {"tenant": "acme", "model": "m3"}),
            ]
        ),
    )

    acme_m1 = await milestone(client, threshold=100, tenant="acme", model="m1")
    two_models = await milestone(client, threshold=150, model=["m1", "m2"])
    project = await milestone(client, threshold=50, project="p")

    assert acme_m1["event_id"] == "4"
    assert (two_models["event_id"], two_models["current"]) == ("3", 200)
    assert project["event_id"] == "4"


async def test_since_defaults_to_the_launch_of_the_one_model_filtered(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/v1/launches/m-large", json={"launched_at": "2026-11-27T06:00:00Z"})
    await post(
        client,
        event(event_id="pre", at=at(3600), input_tokens=10**6),
        event(event_id="post", at=at(7 * 3600), input_tokens=10**6),
    )

    found = await client.get("/v1/milestones", params={"threshold": 10**6, "model": "m-large"})
    unlaunched = await client.get("/v1/milestones", params={"threshold": 1, "model": "other"})
    two = await client.get("/v1/milestones", params={"threshold": 1, "model": ["m-large", "x"]})

    assert found.json()["since"] == "2026-11-27T06:00:00Z"
    assert found.json()["event_id"] == "post"
    for refused in (unlaunched, two):
        assert refused.status_code == 422
        assert refused.json()["error"]["errors"][0]["field"] == "since"


async def test_a_tenant_bound_key_sees_milestones_of_its_own_usage_only(
    make_client: ClientFactory, keys: Keys
) -> None:
    async with make_client() as client:
        await post(
            client,
            event(event_id="g", at=at(10), tenant="globex", input_tokens=1000),
            event(event_id="a", at=at(20), tenant="acme", input_tokens=1000),
        )
    async with make_client(token=await keys.create("read", tenant="acme")) as client:
        own = await milestone(client, threshold=1000)
        foreign = await milestone(client, threshold=1000, tenant="globex")

    assert (own["event_id"], own["current"]) == ("a", 1800)
    assert (foreign["reached"], foreign["current"]) == (False, 0)


async def test_a_crossing_is_found_through_day_hour_and_minute_rollups(
    client: httpx.AsyncClient,
) -> None:
    # Four days of hourly events: the search descends from days to hours to one minute.
    events = [
        event(event_id=f"h{n:03}", at=NOW - timedelta(days=4) + timedelta(hours=n, seconds=n))
        for n in range(96)
    ]
    await post(client, *events)
    since = format_rfc3339(NOW - timedelta(days=4, minutes=30))

    found = await milestone(client, threshold=2000 * 77, since=since)

    assert found["event_id"] == "h076"
    assert found["current"] == 2000 * 96


async def test_a_cache_write_crossing_is_found_through_folded_day_hour_and_minute_rollups(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    # Four days of hourly events, every third writing to the cache: the search descends from
    # folded days to hours to one minute, and the writes alone decide where it ends.
    events = [
        event(
            event_id=f"h{n:03}",
            at=NOW - timedelta(days=4) + timedelta(hours=n, seconds=n),
            input_tokens=1000,
            cache_write_input_tokens=n if n % 3 == 0 else 0,
        )
        for n in range(96)
    ]
    await post(client, *events[:90])
    async with db.begin() as connection:
        await fold(connection)
    await post(client, *events[90:])
    since = format_rfc3339(NOW - timedelta(days=4, minutes=30))
    written = sum(n for n in range(96) if n % 3 == 0)
    # 0 + 3 + ... + 75 = 975: reached at h075, and one more token only at h078.
    exactly = await milestone(client, threshold=975, since=since, metric="cache_write_input_tokens")
    beyond = await milestone(client, threshold=976, since=since, metric="cache_write_input_tokens")
    last = await milestone(
        client, threshold=written, since=since, metric="cache_write_input_tokens"
    )

    assert (exactly["metric"], exactly["event_id"], exactly["current"]) == (
        "cache_write_input_tokens",
        "h075",
        written,
    )
    assert beyond["event_id"] == "h078"
    assert last["event_id"] == "h093"


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=3 * 86400 * 4).map(lambda q: q * 0.25),
            st.sampled_from(["a", "b", "B", "c", "a1", "zz"]),
            st.integers(min_value=0, max_value=1000),
        ),
        min_size=1,
        max_size=25,
        unique_by=lambda item: item[1] + str(item[0]),
    ),
    since_offset=st.integers(min_value=-3600, max_value=86400 * 2),
    fraction=st.floats(min_value=0.0, max_value=1.2),
)
async def test_the_crossing_equals_a_brute_force_walk_over_the_events(
    db: AsyncEngine,
    client: httpx.AsyncClient,
    data: list[tuple[float, str, int]],
    since_offset: int,
    fraction: float,
) -> None:
    await empty_all_but_keys(db)
    base = NOW - timedelta(days=3, hours=1)
    events = [
        event(
            event_id=f"{name}-{index}",
            at=base + timedelta(seconds=offset),
            input_tokens=tokens,
            output_tokens=0,
        )
        for index, (offset, name, tokens) in enumerate(data)
    ]
    await post(client, *events)
    since = base + timedelta(seconds=since_offset, microseconds=250_000)
    counted = sorted(
        (e for e in events if datetime.fromisoformat(e["occurred_at"]) >= since),
        key=lambda e: (datetime.fromisoformat(e["occurred_at"]), e["event_id"]),
    )
    total = sum(e["input_tokens"] for e in counted)
    threshold = max(1, int(total * fraction))
    running, expected = 0, None
    for e in counted:
        running += e["input_tokens"]
        if running >= threshold:
            expected = e["event_id"]
            break

    found = await milestone(client, threshold=threshold, since=format_rfc3339(since))

    assert (found["event_id"], found["current"]) == (expected, total)
