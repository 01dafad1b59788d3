"""Every aggregate equals a plain Python model of the same events.

Random events (repeated ids, whole batches sent again with other counts, several tenants,
models, projects and api keys, instants on and beside minute, hour and day edges, around two
daylight-saving changes) go in through `POST /v1/events`; every answer of `/v1/totals` and
`/v1/usage` must equal what a straightforward sum over the stored events says, cost included:
random price versions of some models, from random minutes, price each event at the version of
its model in effect at its instant, in `Decimal`.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import NOW, empty_all_but_keys
from tokenpulse.instants import format_rfc3339

DIMENSIONS = ("tenant", "project", "model", "api_key_id")
TENANTS = ["acme", "globex"]
PROJECTS = ["default", "search"]
MODELS = ["m-a", "m-b", "M-c"]  # upper case sorts first, by code point
API_KEY_IDS = [None, "key-1", "key-2"]
VALUES: dict[str, list[str | None]] = {
    "tenant": [*TENANTS],
    "project": [*PROJECTS],
    "model": [*MODELS],
    "api_key_id": API_KEY_IDS,
}
MEASURES = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
    "reasoning_tokens",
)
# Events gather around a day that ends daylight saving in Berlin (01:00Z on 25 October), one
# that ends it in New York (06:00Z on 1 November), and the last days before NOW.
CENTERS = [
    datetime(2026, 10, 26, tzinfo=UTC),
    datetime(2026, 11, 1, 6, tzinfo=UTC),
    NOW - timedelta(days=2),
]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
PROPERTY_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Sent:
    tenant: str
    event_id: str
    project: str
    model: str
    api_key_id: str | None
    occurred_at: datetime
    counts: tuple[int, int, int, int, int]
    """In MEASURES order."""

    @property
    def total_tokens(self) -> int:
        return (
            self.counts[MEASURES.index("input_tokens")]
            + self.counts[MEASURES.index("output_tokens")]
        )

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "event_id": self.event_id,
            "occurred_at": format_rfc3339(self.occurred_at),
            "tenant": self.tenant,
            "project": self.project,
            "model": self.model,
            **dict(zip(MEASURES, self.counts, strict=True)),
        }
        if self.api_key_id is not None:
            body["api_key_id"] = self.api_key_id
        return body


def instants(center: datetime) -> st.SearchStrategy[datetime]:
    """Instants within two days of `center`: on an edge, a microsecond beside one, or anywhere."""
    minute = st.integers(min_value=-2 * 1440, max_value=2 * 1440 - 1)
    within = st.sampled_from([0, 1, 59_999_999]) | st.integers(0, 59_999_999)
    return st.builds(
        lambda m, micro, before: center + timedelta(minutes=m, microseconds=micro - before),
        minute,
        within,
        st.sampled_from([0, 0, 1]),
    )


@st.composite
def counts(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    big = st.integers(0, 10**9)
    small = st.integers(0, 5000)
    input_tokens = draw(big | small)
    output_tokens = draw(big | small)
    cached = draw(st.integers(0, input_tokens))
    cache_write = draw(st.integers(0, input_tokens - cached))
    reasoning = draw(st.integers(0, output_tokens))
    return input_tokens, cached, cache_write, output_tokens, reasoning


@st.composite
def sent_events(draw: st.DrawFn, center: datetime) -> Sent:
    return Sent(
        tenant=draw(st.sampled_from(TENANTS)),
        # Few ids, so that the same (tenant, event_id) comes again, with other fields.
        event_id=draw(st.sampled_from([f"req-{n}" for n in range(8)])),
        project=draw(st.sampled_from(PROJECTS)),
        model=draw(st.sampled_from(MODELS)),
        api_key_id=draw(st.sampled_from(API_KEY_IDS)),
        occurred_at=draw(instants(center)),
        counts=draw(counts()),
    )


@dataclass(frozen=True)
class Price:
    """A price version, per million tokens of each part in MEASURES order (reasoning: None,
    priced as output)."""

    model: str
    effective_from: datetime
    parts: tuple[Decimal, Decimal, Decimal, Decimal, Decimal | None]

    def as_json(self) -> dict[str, Any]:
        names = ("input", "cached_input", "cache_write_input", "output", "reasoning")
        return {
            "effective_from": format_rfc3339(self.effective_from),
            "per_million_tokens": {
                name: format(value, "f")
                for name, value in zip(names, self.parts, strict=True)
                if value is not None
            },
        }

    def cost_millionths(self, counts: tuple[int, int, int, int, int]) -> Decimal:
        input_tokens, cached, written, output, reasoning = counts
        uncached_price, cached_price, written_price, output_price, reasoning_price = self.parts
        return (
            (input_tokens - cached - written) * uncached_price
            + cached * cached_price
            + written * written_price
            + (output - reasoning) * output_price
            + reasoning * (output_price if reasoning_price is None else reasoning_price)
        )


PRICE = st.builds(
    lambda n, places: Decimal(n).scaleb(-places), st.integers(0, 10**9), st.integers(0, 12)
)


@st.composite
def prices(draw: st.DrawFn, center: datetime) -> list[Price]:
    """Versions of some models from minutes around the events' `center`, none for one model."""
    minutes = st.integers(-3 * 1440, 2 * 1440).map(lambda m: center + timedelta(minutes=m))
    version = st.builds(
        Price,
        st.sampled_from(MODELS[:2]),
        minutes,
        st.tuples(PRICE, PRICE, PRICE, PRICE, st.none() | PRICE),
    )
    return draw(st.lists(version, max_size=4, unique_by=lambda v: (v.model, v.effective_from)))


def in_effect(versions: Sequence[Price], sent: "Sent") -> Price | None:
    found = [v for v in versions if v.model == sent.model and v.effective_from <= sent.occurred_at]
    return max(found, key=lambda v: v.effective_from) if found else None


@st.composite
def requests(draw: st.DrawFn) -> tuple[datetime, list[list[Sent]]]:
    """Batches to send in order, the last maybe an earlier one sent again with other counts."""
    center = draw(st.sampled_from(CENTERS))
    batches = draw(st.lists(st.lists(sent_events(center), min_size=1, max_size=12), max_size=3))
    resend: bool = draw(st.booleans())
    if batches and resend:
        again = draw(st.sampled_from(batches))
        batches.append([replace(sent, counts=draw(counts())) for sent in again])
    return center, batches or [[draw(sent_events(center))]]


@st.composite
def selections(draw: st.DrawFn) -> dict[str, Any]:
    """group_by (in any order) and filters, as query parameters."""
    group_by = draw(st.lists(st.sampled_from(DIMENSIONS), unique=True))
    params: dict[str, Any] = {"group_by": ",".join(group_by)}
    for dimension in DIMENSIONS:
        choices = [value for value in VALUES[dimension] if value is not None]
        if draw(st.integers(0, 3)) == 0:
            params[dimension] = draw(st.lists(st.sampled_from(choices), min_size=1, unique=True))
    return params


# the model


def stored_events(batches: Sequence[Sequence[Sent]]) -> list[Sent]:
    """What is stored: the first event sent with each (tenant, event_id)."""
    first: dict[tuple[str, str], Sent] = {}
    for batch in batches:
        for sent in batch:
            first.setdefault((sent.tenant, sent.event_id), sent)
    return list(first.values())


def expected_outcomes(batches: Sequence[Sequence[Sent]]) -> list[tuple[int, int]]:
    """(accepted, duplicates) of each request, sent one after the other."""
    seen: set[tuple[str, str]] = set()
    outcomes = []
    for batch in batches:
        accepted = 0
        for sent in batch:
            key = (sent.tenant, sent.event_id)
            accepted += key not in seen
            seen.add(key)
        outcomes.append((accepted, len(batch) - accepted))
    return outcomes


def matches(sent: Sent, params: dict[str, Any]) -> bool:
    return all(
        getattr(sent, dimension) in params[dimension]
        for dimension in DIMENSIONS
        if dimension in params
    )


def expected_results(
    events: list[Sent], params: dict[str, Any], versions: Sequence[Price] = ()
) -> list[dict[str, Any]]:
    """One row per group, sorted by the group keys in the order asked (no api key first), its
    cost priced by `versions`."""
    group_by = [name for name in params["group_by"].split(",") if name]
    groups: dict[tuple[str | None, ...], list[Sent]] = defaultdict(list)
    for sent in events:
        if matches(sent, params):
            groups[tuple(getattr(sent, name) for name in group_by)].append(sent)
    rows = []
    for key in sorted(groups, key=lambda key: tuple(value or "" for value in key)):
        sums = [sum(sent.counts[i] for sent in groups[key]) for i in range(len(MEASURES))]
        row: dict[str, Any] = dict(zip(group_by, key, strict=True))
        row["requests"] = len(groups[key])
        row.update(zip(MEASURES, sums, strict=True))
        row["total_tokens"] = sum(sent.total_tokens for sent in groups[key])
        priced = [
            (version, sent)
            for sent in groups[key]
            if (version := in_effect(versions, sent)) is not None
        ]
        row["cost"] = (
            format(
                (
                    sum((v.cost_millionths(s.counts) for v, s in priced), Decimal(0))
                    / Decimal(10**6)
                ).normalize(),
                "f",
            )
            if priced
            else None
        )
        rows.append(row)
    return rows


def within(events: list[Sent], start: datetime, end: datetime) -> list[Sent]:
    return [sent for sent in events if start <= sent.occurred_at < end]


def boundaries(bucket: str, zone: ZoneInfo, start: datetime, count: int) -> list[datetime]:
    """`count` + 1 consecutive bucket boundaries from `start`: UTC minutes and hours, or local
    midnights in `zone`."""
    if bucket != "1d":
        width = timedelta(minutes=1) if bucket == "1m" else timedelta(hours=1)
        return [start + n * width for n in range(count + 1)]
    first: date = start.astimezone(zone).date()
    return [
        datetime.combine(first + timedelta(days=n), time(), zone).astimezone(UTC)
        for n in range(count + 1)
    ]


def first_boundary(bucket: str, zone: ZoneInfo, instant: datetime) -> datetime:
    """The boundary at or before `instant`."""
    if bucket == "1m":
        return instant.replace(second=0, microsecond=0)
    if bucket == "1h":
        return instant.replace(minute=0, second=0, microsecond=0)
    local_day = instant.astimezone(zone).date()
    midnight = datetime.combine(local_day, time(), zone).astimezone(UTC)
    if midnight > instant:
        midnight = datetime.combine(local_day - timedelta(days=1), time(), zone).astimezone(UTC)
    return midnight


def floor_minute(instant: datetime) -> datetime:
    return instant.replace(second=0, microsecond=0)


def ceil_minute(instant: datetime) -> datetime:
    floored = floor_minute(instant)
    return floored if floored == instant else floored + timedelta(minutes=1)


# through HTTP


async def stored_after_sending(
    engine: AsyncEngine,
    client: httpx.AsyncClient,
    batches: list[list[Sent]],
    versions: Sequence[Price] = (),
) -> list[Sent]:
    """Send `versions` and `batches` to a service holding no events or prices, check what each
    answer says became of its events, and return what the model says is stored."""
    await empty_all_but_keys(engine)
    for version in versions:
        response = await client.put(f"/v1/prices/{version.model}", json=version.as_json())
        assert response.status_code == 201, response.text
    outcomes = []
    for batch in batches:
        response = await client.post("/v1/events", json={"events": [e.as_json() for e in batch]})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["rejected"] == 0, answer["errors"]
        outcomes.append((answer["accepted"], answer["duplicates"]))
    assert outcomes == expected_outcomes(batches)
    return stored_events(batches)


def query_lists(*parts: st.SearchStrategy[Any]) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    """A few queries, each a selection and `parts`: one example's events answer them all."""
    return st.lists(st.tuples(selections(), *parts), min_size=1, max_size=4)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@PROPERTY_SETTINGS
@given(
    priced=requests().flatmap(lambda sent: st.tuples(st.just(sent), prices(sent[0]))),
    queries=query_lists(
        st.sampled_from(["5m", "1h", "24h", "7d", "30d", None]),
        st.integers(-3 * 86400, 3 * 86400),
        st.integers(0, 3 * 86400),
    ),
)
async def test_totals_equal_a_plain_sum_of_the_stored_events(
    db: AsyncEngine,
    client: httpx.AsyncClient,
    priced: tuple[tuple[datetime, list[list[Sent]]], list[Price]],
    queries: list[tuple[dict[str, Any], str | None, int, int]],
) -> None:
    (center, batches), versions = priced
    events = await stored_after_sending(db, client, batches, versions)

    for params, window, start_offset, length in queries:
        if window is not None:
            asked = {**params, "window": window}
            widths = {"5m": 5 * 60, "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
            start = floor_minute(NOW - timedelta(seconds=widths[window]))
            end = floor_minute(NOW) + timedelta(minutes=1)
        else:
            # Any instant, to the microsecond: start is floored and end raised to the minute.
            given_start = center + timedelta(seconds=start_offset, microseconds=start_offset % 7)
            given_end = given_start + timedelta(seconds=length, microseconds=length % 11)
            asked = {
                **params,
                "start": format_rfc3339(given_start),
                "end": format_rfc3339(given_end),
            }
            start, end = floor_minute(given_start), ceil_minute(given_end)

        response = await client.get("/v1/totals", params=asked)

        assert response.status_code == 200, response.text
        answer = response.json()
        assert (at(answer["start"]), at(answer["end"])) == (start, end)
        assert answer["results"] == expected_results(within(events, start, end), params, versions)


@PROPERTY_SETTINGS
@given(
    priced=requests().flatmap(lambda sent: st.tuples(st.just(sent), prices(sent[0]))),
    queries=query_lists(
        st.sampled_from(["1m", "1h", "1d"]),
        st.sampled_from(ZONES),
        st.integers(-3 * 1440, 2 * 1440),
        st.integers(1, 150),
    ),
)
async def test_usage_buckets_equal_a_plain_sum_of_the_stored_events_in_each(
    db: AsyncEngine,
    client: httpx.AsyncClient,
    priced: tuple[tuple[datetime, list[list[Sent]]], list[Price]],
    queries: list[tuple[dict[str, Any], str, str, int, int]],
) -> None:
    (center, batches), versions = priced
    events = await stored_after_sending(db, client, batches, versions)

    for params, bucket, tz, start_minutes, count in queries:
        zone = ZoneInfo(tz)
        start = first_boundary(bucket, zone, center + timedelta(minutes=start_minutes))
        bounds = boundaries(bucket, zone, start, count if bucket != "1d" else 1 + count % 6)
        asked = {
            **params,
            "bucket": bucket,
            "start": format_rfc3339(bounds[0]),
            "end": format_rfc3339(bounds[-1]),
        }
        if bucket == "1d":
            asked["tz"] = tz

        response = await client.get("/v1/usage", params=asked)

        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert [(at(b["start"]), at(b["end"])) for b in data] == list(pairwise(bounds))
        assert [b["results"] for b in data] == [
            expected_results(within(events, lo, hi), params, versions)
            for lo, hi in pairwise(bounds)
        ]
