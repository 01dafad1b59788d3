"""The simulator: a seeded launch day that is valid and shaped like one, a ledger that predicts
crossings by the contract's rule (of milestones and of budgets, window by window) and prices
tokens exactly, and runs against a live server that pass their ledger check, one of them going on
in real time until it is stopped."""

import asyncio
import gzip
import json
import random
import re
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from itertools import chain, count, islice
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import UNLIMITED_ENV, Keys, bearer
from tests.servers import child_environment, free_port, running_server
from tokenpulse.cli import main
from tokenpulse.ingest.events import Event as StoredEvent
from tokenpulse.ingest.events import EventRules
from tokenpulse.ingest.validation import validate_event
from tokenpulse.instants import format_rfc3339
from tokenpulse.simulator.budgets import BudgetSpec, BudgetWatch
from tokenpulse.simulator.launchday import LaunchDay, apportion, occurred_at
from tokenpulse.simulator.ledger import Crossing, Ledger, Measures, predict_crossings
from tokenpulse.simulator.notifications import BudgetCheck, MadeBudget, check_notifications
from tokenpulse.simulator.pacing import RateCap, SimulatedClock, due_batches
from tokenpulse.simulator.prices import FLAGSHIP, MINI, Prices, table_prices
from tokenpulse.simulator.sender import Delivery, encode

LAUNCH = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
MODELS = ("pulse-1", "pulse-1-mini", "legacy-7")


def launch_day(**changes: Any) -> LaunchDay:
    """A day small enough for a unit test and large enough to show its shape."""
    arguments: dict[str, Any] = {
        "start": LAUNCH,
        "seed": 5,
        "models": MODELS,
        "events": 30_000,
        "duration": timedelta(hours=24),
        "tenants": 200,
        "api_keys": 2000,
    }
    return LaunchDay(**{**arguments, **changes})


def usage(event_id: str, at: str, total_tokens: int, model: str = "m") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "occurred_at": at,
        "model": model,
        "input_tokens": total_tokens,
        "output_tokens": 0,
    }


def test_the_same_seed_makes_the_same_day_and_another_seed_another() -> None:
    day = list(launch_day())

    assert list(launch_day()) == day
    other = list(launch_day(seed=6))
    assert other != day
    assert {event["project"] for event in day} == {"sim-5"}
    assert {event["project"] for event in other} == {"sim-6"}
    assert day[12]["event_id"] == "sim5-000000012"


def test_every_event_of_a_day_passes_the_servers_event_rules() -> None:
    day = launch_day()
    rules = EventRules(
        max_tokens=1_000_000_000, max_age=timedelta(days=35), max_lead=timedelta(minutes=5)
    )

    for event in day:
        checked = validate_event(event, key_tenant=None, rules=rules, now=day.end)
        assert isinstance(checked, StoredEvent), (event, checked)


def test_a_day_holds_exactly_its_events_in_crossing_order_with_parts_within_wholes() -> None:
    day = launch_day()
    events = list(day)
    keys = [(occurred_at(event), event["event_id"]) for event in events]

    assert len(events) == 30_000
    assert len({event["event_id"] for event in events}) == 30_000
    assert keys == sorted(keys)
    assert day.start <= keys[0][0]
    assert keys[-1][0] < day.end
    assert all(
        e["cached_input_tokens"] + e["cache_write_input_tokens"] <= e["input_tokens"]
        for e in events
    )
    assert all(e["reasoning_tokens"] <= e["output_tokens"] for e in events)
    assert 0.1 < sum(e["cached_input_tokens"] > 0 for e in events) / len(events) < 0.9
    assert 0.1 < sum(e["reasoning_tokens"] > 0 for e in events) / len(events) < 0.9


def test_prompts_that_miss_the_cache_are_often_written_to_it_some_thousand_tokens_each() -> None:
    events = list(launch_day())
    writes = [e for e in events if e["cache_write_input_tokens"]]

    assert 0.03 < len(writes) / len(events) < 0.3
    # A prompt read from the cache was written before: it writes nothing more.
    assert not any(e["cached_input_tokens"] for e in writes)
    # Only prompts long enough to cache are written, and most of each.
    assert all(e["input_tokens"] >= 1024 for e in writes)
    assert all(e["cache_write_input_tokens"] > e["input_tokens"] // 2 for e in writes)
    written = sorted(e["cache_write_input_tokens"] for e in writes)
    assert 1000 < written[len(written) // 2] < 10_000


def test_the_launch_surge_makes_the_first_hours_the_busiest_and_builds_up_in_minutes() -> None:
    day = launch_day()
    per_hour = Counter((occurred_at(event) - day.start) // timedelta(hours=1) for event in day)
    hourly_mean = day.events / 24

    assert max(per_hour, key=per_hour.__getitem__) in {0, 1, 2}
    assert (per_hour[0] + per_hour[1]) / 2 > 2 * hourly_mean
    assert sum(day.minute_counts[:2]) < sum(day.minute_counts[20:22])


def test_tenants_are_zipf_sized_and_a_large_one_uses_many_keys_of_its_own() -> None:
    events = list(launch_day())
    per_tenant = Counter(event["tenant"] for event in events)
    keys_of_first = {e["api_key_id"] for e in events if e["tenant"] == "tenant-0001"}

    assert per_tenant["tenant-0001"] > per_tenant["tenant-0002"] > per_tenant["tenant-0004"]
    assert per_tenant["tenant-0001"] > 10 * per_tenant["tenant-0020"]
    assert len(per_tenant) > 150, "the long tail shows up too"
    assert len(keys_of_first) > 20
    assert all(
        event["api_key_id"].startswith(event["tenant"].replace("tenant-", "key-") + "-")
        for event in events
    )


def test_the_first_model_named_takes_the_largest_share_and_each_model_its_own_sizes() -> None:
    events = list(launch_day())
    per_model = Counter(event["model"] for event in events)
    median_input = {
        model: sorted(e["input_tokens"] for e in events if e["model"] == model)[
            per_model[model] // 2
        ]
        for model in MODELS
    }

    assert per_model["pulse-1"] > per_model["pulse-1-mini"] > per_model["legacy-7"]
    assert len(set(median_input.values())) == len(MODELS)
    assert max(e["input_tokens"] for e in events) > 50 * median_input["pulse-1"], "heavy tail"


def test_counts_are_apportioned_exactly_in_proportion() -> None:
    assert apportion(10, [1.0, 1.0, 1.0]) in ([3, 4, 3], [3, 3, 4], [4, 3, 3])
    assert apportion(7, [0.0, 2.5, 0.0]) == [0, 7, 0]
    day = launch_day(events=1001, duration=timedelta(hours=2))
    assert len(day.minute_counts) == 120
    assert sum(day.minute_counts) == 1001


def test_batches_cut_the_day_in_order() -> None:
    day = launch_day(events=5000)
    batches = list(day.batches(999))

    assert [len(batch) for batch in batches] == [999] * 5 + [5]
    assert list(chain.from_iterable(batches)) == list(day)


def test_a_launch_going_on_is_its_day_and_then_the_minutes_after_it_at_the_days_rate() -> None:
    day = launch_day(events=3000, duration=timedelta(hours=1), models=("pulse-1",))
    events = list(islice(day.going_on(), 6000))
    keys = [(occurred_at(event), event["event_id"]) for event in events]
    per_minute = Counter((instant - day.start) // timedelta(minutes=1) for instant, _ in keys)
    last_of_day = sum(per_minute[minute] for minute in range(50, 60))
    first_after = sum(per_minute[minute] for minute in range(60, 70))

    assert events[:3000] == list(day)
    assert all(instant >= day.end for instant, _ in keys[3000:])
    assert keys == sorted(keys)
    assert len({event["event_id"] for event in events}) == 6000
    assert 0.8 < first_after / last_of_day < 1.2, "no step at the day's end"


def test_a_crossing_is_the_event_at_which_the_running_sum_reaches_the_threshold() -> None:
    events = [
        usage("early", "2026-11-27T08:59:59.999999Z", 5000),
        usage("a", "2026-11-27T09:00:00Z", 400),
        usage("b", "2026-11-27T09:00:01.5Z", 600),
        usage("c", "2026-11-27T09:00:02Z", 1),
    ]

    crossings = predict_crossings(events, since=LAUNCH, thresholds=[1000, 1001, 2000])

    assert crossings == {
        "m": [
            Crossing("m", 1000, datetime(2026, 11, 27, 9, 0, 1, 500_000, tzinfo=UTC), "b"),
            Crossing("m", 1001, datetime(2026, 11, 27, 9, 0, 2, tzinfo=UTC), "c"),
        ]
    }


def test_ties_on_occurred_at_are_broken_by_event_id_compared_as_ascii() -> None:
    at = "2026-11-27T09:30:00Z"
    events = [
        usage("req-a", at, 100),
        usage("req-9", "2026-11-27T10:30:00+01:00", 100),
        usage("req-Z", at, 100),
        usage("req-10", at, 100),
        usage("other", at, 10**6, model="n"),
    ]

    crossings = predict_crossings(events, since=LAUNCH, thresholds=[100, 200, 300, 400])

    assert [c.event_id for c in crossings["m"]] == ["req-10", "req-9", "req-Z", "req-a"]
    assert [c.event_id for c in crossings["n"]] == ["other"] * 4


def test_a_ledger_folds_answers_in_batch_order_whatever_order_they_arrive_in() -> None:
    day = launch_day(events=3000, models=("pulse-1",))
    events = list(day)
    batches = list(enumerate(day.batches(100)))
    random.Random(3).shuffle(batches)
    ledger = Ledger(since=day.start, thresholds=[10**5, 10**6, 10**7])
    rejected = dict(batches)[0][3]["event_id"]

    for number, batch in batches:
        errors = [{"index": 3, "event_id": rejected, "errors": []}] if number == 0 else []
        answer = {"accepted": 100 - len(errors), "duplicates": 0, "rejected": len(errors)}
        ledger.record(number, batch, {**answer, "errors": errors})

    kept = [event for event in events if event["event_id"] != rejected]
    assert ledger.complete
    assert (ledger.accepted, ledger.duplicates, ledger.rejected) == (2999, 0, 1)
    assert ledger.totals["pulse-1"].requests == 2999
    assert ledger.totals["pulse-1"].total_tokens == sum(
        e["input_tokens"] + e["output_tokens"] for e in kept
    )
    assert ledger.crossings == predict_crossings(
        kept, since=day.start, thresholds=[10**5, 10**6, 10**7]
    )
    assert len(ledger.crossings["pulse-1"]) == 3


def test_a_ledger_prices_each_part_of_its_tokens_at_its_own_price_per_million() -> None:
    tokens = Measures(
        requests=1,
        input_tokens=1_000_000,
        cached_input_tokens=200_000,
        cache_write_input_tokens=100_000,
        output_tokens=500_000,
        reasoning_tokens=100_000,
    )
    reasoning_dearer = Prices(*map(Decimal, ("1", "2", "3", "4", "5")))

    # 700,000 uncached at 2.50, 200,000 cached at 0.25, 100,000 written at 3.125, 400,000 output
    # at 10 and 100,000 reasoning at 10: 1.75 + 0.05 + 0.3125 + 4 + 1.
    assert tokens.cost(FLAGSHIP) == Decimal("7.1125")
    # 0.7 + 0.4 + 0.3 + 1.6 + 0.5
    assert tokens.cost(reasoning_dearer) == Decimal("3.5")


def test_a_ledgers_cost_is_exact_far_past_the_default_decimal_precision() -> None:
    tokens = Measures(input_tokens=999_999_999_999_999_999, output_tokens=1)
    price = "123456789012.123456789012"
    prices = Prices(Decimal(price), Decimal(0), Decimal(0), Decimal(0), Decimal(0))

    assert Fraction(tokens.cost(prices)) == 999_999_999_999_999_999 * Fraction(price) / 10**6


def test_a_model_named_mini_is_priced_as_a_mini_one_and_every_other_as_a_flagship() -> None:
    assert table_prices("pulse-2-mini") == MINI
    assert table_prices("pulse-2") == table_prices("legacy-7") == FLAGSHIP


def spent(event_id: str, at: str, total_tokens: int, tenant: str = "acme") -> dict[str, Any]:
    """A usage event of `tenant` in project p, all its tokens uncached input."""
    return {**usage(event_id, at, total_tokens, model="pulse-2"), "tenant": tenant, "project": "p"}


def watched(
    spec: str, *events: dict[str, Any], prices: dict[str, Prices] | None = None
) -> BudgetWatch:
    watch = BudgetWatch(
        BudgetSpec.parse(spec), tenant="acme", project="p", since=LAUNCH, prices=prices
    )
    for event in events:
        watch.add(event, occurred_at(event))
    return watch


def test_a_budget_is_metric_limit_window_and_percents_by_default_fifty_eighty_and_a_hundred() -> (
    None
):
    tokens = BudgetSpec.parse("total_tokens:10^6:day@Europe/Berlin")
    cost = BudgetSpec.parse("cost:0.50:since:12.5,100")
    # A measure's amount is raised to a whole count; two percentages of one amount are one.
    requests = BudgetSpec.parse("requests:3:week:50,60,100")

    assert (tokens.metric, tokens.limit, tokens.period, tokens.tz) == (
        "total_tokens",
        10**6,
        "day",
        "Europe/Berlin",
    )
    assert [(t.percent, t.amount) for t in tokens.thresholds] == [
        (Decimal(50), 500_000),
        (Decimal(80), 800_000),
        (Decimal(100), 1_000_000),
    ]
    assert [(t.percent, t.amount) for t in cost.thresholds] == [
        (Decimal("12.5"), Decimal("0.0625")),
        (Decimal(100), Decimal("0.5")),
    ]
    assert [(t.percent, t.amount) for t in requests.thresholds] == [
        (Decimal(50), 2),
        (Decimal(100), 3),
    ]
    assert tokens.request(tenant="acme", project="p", since=LAUNCH) == {
        "tenant": "acme",
        "project": "p",
        "metric": "total_tokens",
        "limit": "1000000",
        "window": "day",
        "tz": "Europe/Berlin",
        "thresholds": [50, 80, 100],
    }
    assert cost.request(tenant="acme", project="p", since=LAUNCH)["since"] == "2026-11-27T09:00:00Z"


def test_a_budgets_crossings_are_predicted_window_by_window_of_its_zone_for_its_tenant_alone() -> (
    None
):
    # Berlin's day of 2026-11-28 begins at 23:00 UTC on the 27th. Events come in crossing
    # order, as the ledger folds them.
    watch = watched(
        "total_tokens:1000:day@Europe/Berlin:50,100",
        spent("a", "2026-11-27T22:00:00Z", 400),
        spent("b", "2026-11-27T22:30:00Z", 700, tenant="other"),
        spent("c", "2026-11-27T22:59:59.999999Z", 100),
        spent("d", "2026-11-27T23:00:00Z", 600),
        spent("e", "2026-11-27T23:00:00Z", 400),
    )

    assert [
        (
            w.window.start,
            w.window.end,
            [(c.threshold.percent, c.event_id, c.value) for c in w.crossings],
        )
        for w in watch.windows
    ] == [
        (
            datetime(2026, 11, 26, 23, tzinfo=UTC),
            datetime(2026, 11, 27, 23, tzinfo=UTC),
            [(Decimal(50), "c", 500)],
        ),
        (
            datetime(2026, 11, 27, 23, tzinfo=UTC),
            datetime(2026, 11, 28, 23, tzinfo=UTC),
            [(Decimal(50), "d", 600), (Decimal(100), "e", 1000)],
        ),
    ]
    assert watch.windows[0].crossings[0].crossed_at == datetime(
        2026, 11, 27, 22, 59, 59, 999_999, tzinfo=UTC
    )


def test_a_cost_budget_sums_what_each_event_costs_at_its_models_prices_exactly() -> None:
    # A million uncached input tokens of pulse-2 cost 2.50; a tenth of a token, 0.00000025.
    watch = watched(
        "cost:5.0000001:since:50,100",
        spent("a", "2026-11-27T09:00:00Z", 1_000_000),
        spent("b", "2026-11-27T09:01:00Z", 1_000_000),
        spent("c", "2026-11-27T09:02:00Z", 1),
        prices={"pulse-2": FLAGSHIP},
    )

    [window] = watch.windows
    assert window.window.end is None
    assert [(c.threshold.amount, c.event_id, c.value) for c in window.crossings] == [
        (Decimal("2.50000005"), "b", Decimal("5")),
        (Decimal("5.0000001"), "c", Decimal("5.0000025")),
    ]


def crossing_notice(percent: int, amount: int, event_id: str, at: str) -> dict[str, Any]:
    """A notification of a `requests:2:since` budget's crossing, as /v1/notifications lists it."""
    return {
        "id": f"msg_{event_id}{amount}",
        "corrected_at": None,
        "body": {
            "threshold": percent,
            "amount": amount,
            "window_start": "2026-11-27T09:00:00Z",
            "window_end": None,
            "crossed_at": at,
            "event_id": event_id,
            "value_at_crossing": amount,
        },
    }


class ListingServer:
    """GET /v1/notifications answering each listing in turn, the last one ever after; a clock
    that each wait of the check moves on."""

    def __init__(self, *listings: list[dict[str, Any]]) -> None:
        self.listings = list(listings)
        self.seconds = 0.0
        self.reads = 0

    def answer(self, request: httpx.Request) -> httpx.Response:
        assert request.url.params["budget_id"] == "bud_0123456789abcdef"
        listing = self.listings[min(self.reads, len(self.listings) - 1)]
        self.reads += 1
        return httpx.Response(200, json={"notifications": listing, "next_before": None})

    async def sleep(self, seconds: float) -> None:
        self.seconds += seconds


async def checked_against(server: ListingServer, wait_seconds: float = 10) -> BudgetCheck:
    budget = MadeBudget(
        "bud_0123456789abcdef",
        LAUNCH,
        watched(
            "requests:2:since:50,100",
            spent("a", "2026-11-27T09:00:00Z", 1),
            spent("b", "2026-11-27T09:01:00Z", 1),
        ),
    )
    transport = httpx.MockTransport(server.answer)
    async with httpx.AsyncClient(transport=transport, base_url="http://tokenpulse") as admin:
        [check] = await check_notifications(
            admin,
            [budget],
            wait_seconds=wait_seconds,
            give_up_seconds=1,
            monotonic=lambda: server.seconds,
            sleep=server.sleep,
        )
    return check


RIGHT = [
    crossing_notice(50, 1, "a", "2026-11-27T09:00:00Z"),
    crossing_notice(100, 2, "b", "2026-11-27T09:01:00Z"),
]


async def test_the_budget_check_reads_the_notifications_again_until_they_are_as_predicted() -> None:
    server = ListingServer([], RIGHT[:1], RIGHT)

    check = await checked_against(server)

    assert check.matches
    assert [len(threshold.notified) for threshold in check.thresholds] == [1, 1]
    # Listed right at the third read, and read on until the server has had time to list more.
    assert server.reads > 3
    assert server.seconds >= 3


async def test_a_notification_at_another_event_or_one_not_predicted_fails_the_budget_check() -> (
    None
):
    server = ListingServer(
        [
            RIGHT[0],
            crossing_notice(100, 2, "a", "2026-11-27T09:00:00Z"),
            crossing_notice(150, 3, "b", "2026-11-27T09:01:00Z"),
        ]
    )

    check = await checked_against(server, wait_seconds=5)

    assert [(t.threshold.amount, t.matches) for t in check.thresholds] == [
        (1, True),
        (2, False),
        (3, False),
    ]
    assert check.problem is not None
    assert check.problem.startswith("waited 5 s (--budget-wait): the server notifies 1 of the 2")
    assert server.seconds == 5


def test_the_simulated_clock_runs_speedup_times_real_time_and_never_past_now() -> None:
    seconds = [100.0]
    wall = [LAUNCH + timedelta(hours=2)]
    clock = SimulatedClock(LAUNCH, 3600, wall=lambda: wall[0], monotonic=lambda: seconds[0])
    as_fast_as_possible = SimulatedClock(LAUNCH, 0, wall=lambda: wall[0])

    seconds[0] += 1.5
    assert clock.now() == LAUNCH + timedelta(hours=1.5)
    assert clock.seconds_until(LAUNCH + timedelta(hours=1.75)) == pytest.approx(0.25)
    seconds[0] += 10
    assert clock.now() == wall[0]
    assert clock.seconds_until(wall[0] + timedelta(seconds=3)) == pytest.approx(3)
    assert as_fast_as_possible.now() == wall[0]


async def test_due_events_go_in_full_batches_and_a_batch_waits_only_so_long_for_more() -> None:
    now = datetime.now(UTC)
    events = [
        usage(f"e{number}", format_rfc3339(now - timedelta(seconds=10 - number)), 1)
        for number in range(5)
    ]
    events.append(usage("later", format_rfc3339(now + timedelta(seconds=1)), 1))
    clock = SimulatedClock(now - timedelta(minutes=1), 0)

    batches = [
        [event["event_id"] for event in batch]
        async for batch in due_batches(events, clock=clock, size=2, rate=RateCap(0), max_wait=0.01)
    ]

    assert batches == [["e0", "e1"], ["e2", "e3"], ["e4"], ["later"]]


async def test_once_told_to_stop_an_endless_stream_ends_with_the_batch_being_cut() -> None:
    now = datetime.now(UTC)
    past = [
        usage(f"e{number}", format_rfc3339(now - timedelta(seconds=9 - number)), 1)
        for number in range(5)
    ]
    ahead = (
        usage(f"f{hours}", format_rfc3339(now + timedelta(hours=hours)), 1) for hours in count(1)
    )
    stop = asyncio.Event()
    caught_up: list[int] = []
    batches: list[list[str]] = []

    async for batch in due_batches(
        chain(past, ahead),
        clock=SimulatedClock(now - timedelta(minutes=1), 0),
        size=3,
        rate=RateCap(0),
        max_wait=0.01,
        stop=stop,
        on_caught_up=lambda: caught_up.append(len(batches)),
    ):
        batches.append([event["event_id"] for event in batch])
        if len(batches) == 2:
            stop.set()

    assert batches == [["e0", "e1", "e2"], ["e3", "e4"]]
    assert caught_up == [1], "once, when the next event lay past now"


async def test_told_to_stop_while_catching_up_no_further_batch_is_cut() -> None:
    now = datetime.now(UTC)
    past = [
        usage(f"e{number}", format_rfc3339(now - timedelta(seconds=9 - number)), 1)
        for number in range(9)
    ]
    stop = asyncio.Event()
    batches: list[list[str]] = []

    async for batch in due_batches(
        past,
        clock=SimulatedClock(now - timedelta(minutes=1), 0),
        size=2,
        rate=RateCap(0),
        stop=stop,
    ):
        batches.append([event["event_id"] for event in batch])
        stop.set()

    assert batches == [["e0", "e1"]]


def test_gzipped_ndjson_and_json_bodies_hold_the_events() -> None:
    events = next(launch_day(events=50).batches(50))

    ndjson, ndjson_headers = encode(events, Delivery(format="ndjson", gzip=True))
    plain, plain_headers = encode(events, Delivery(format="json"))

    assert ndjson_headers == {
        "Content-Type": "application/x-ndjson",
        "Content-Encoding": "gzip",
    }
    lines = gzip.decompress(ndjson).decode().split("\n")
    assert [json.loads(line) for line in lines] == events
    assert plain_headers == {"Content-Type": "application/json"}
    assert json.loads(plain) == {"events": events}


def simulate(url: str, *args: str, key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenpulse", "simulate", "--url", url, *args],
        env=child_environment({"TOKENPULSE_KEY": key}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def crossing_rows(report: str) -> list[tuple[str, str, str]]:
    """(threshold, predicted, reported) of each milestone row of a report marked ok."""
    row = re.compile(r"^  pulse-1\s+(10\^\d+)\s+(\S+ sim\d+-\d+)\s+(\S+ sim\d+-\d+)\s+ok$", re.M)
    return row.findall(report)


@pytest.mark.process
async def test_a_seeded_run_passes_its_ledger_check_and_its_repeat_is_all_duplicates(
    keys: Keys, database_url: str, tmp_path: Path
) -> None:
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(second=0, microsecond=0)
    end = start + timedelta(hours=2)
    run = [
        *("--seed", "41", "--events", "20000", "--hours", "2", "--speedup", "0"),
        *("--start", format_rfc3339(start), "--thresholds", "10^6,10^7,10^12"),
        *("--tenants", "300", "--api-keys", "3000"),
    ]
    env = {"TOKENPULSE_DATABASE_URL": database_url, **UNLIMITED_ENV}

    with running_server(tmp_path, env=env) as server:
        first = simulate(server.url, *run, "--launch", key=keys.admin)
        again = simulate(server.url, *run, "--format", "ndjson", "--gzip", key=keys.admin)
        async with httpx.AsyncClient(base_url=server.url, headers=bearer(keys.admin)) as http:
            totals = await http.get(
                "/v1/totals",
                params={
                    "start": format_rfc3339(start),
                    "end": format_rfc3339(end),
                    "project": "sim-41",
                },
            )
            launch = await http.get("/v1/launches/pulse-1")

    assert first.returncode == 0, first.stdout + first.stderr
    assert "20,000 accepted, 0 duplicates, 0 rejected" in first.stdout
    assert "ledger check passed" in first.stdout
    written = re.search(
        r"^\s+cache_write_input_tokens\s+([\d,]+)\s+([\d,]+)\s+ok$", first.stdout, re.M
    )
    assert written is not None, first.stdout
    assert written[1] == written[2] != "0"
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 accepted, 20,000 duplicates, 0 rejected" in again.stdout
    assert "ledger check passed" in again.stdout
    crossings = crossing_rows(first.stdout)
    assert [threshold for threshold, _, _ in crossings] == ["10^6", "10^7"]
    assert all(predicted == reported for _, predicted, reported in crossings)
    assert crossing_rows(again.stdout) == crossings
    assert "not reached: 10^12" in first.stdout
    assert totals.json()["results"][0]["requests"] == 20_000
    assert launch.json()["launched_at"] == format_rfc3339(start)


@pytest.mark.process
async def test_a_run_slowed_by_429s_sends_the_same_events_again_and_passes(
    keys: Keys, database_url: str, tmp_path: Path
) -> None:
    ingest = await keys.create("ingest")
    run = [
        *("--seed", "42", "--events", "5000", "--hours", "1", "--speedup", "0"),
        *("--batch", "250", "--read-key", keys.admin, "--quiet"),
    ]
    env = {
        "TOKENPULSE_DATABASE_URL": database_url,
        **UNLIMITED_ENV,
        "TOKENPULSE_RATE_LIMIT_INGEST": "4",
        "TOKENPULSE_RATE_LIMIT_BURST_SECONDS": "1",
    }

    with running_server(tmp_path, env=env) as server:
        done = simulate(server.url, *run, key=ingest)

    assert done.returncode == 0, done.stdout + done.stderr
    retried = re.search(r"sent in \S+ s: ([\d,]+) requests \(([\d,]+) retried\)", done.stdout)
    assert retried is not None, done.stdout
    requests, retries = (int(group.replace(",", "")) for group in retried.groups())
    assert retries > 0
    assert requests == 20 + retries
    assert "5,000 accepted, 0 duplicates, 0 rejected" in done.stdout
    assert "ledger check passed" in done.stdout


@pytest.mark.process
async def test_a_run_the_server_disagrees_with_fails_its_ledger_check_with_status_1(
    keys: Keys, database_url: str, tmp_path: Path
) -> None:
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(second=0, microsecond=0)
    run = ["--seed", "43", "--events", "3000", "--hours", "1", "--speedup", "0", "--quiet"]
    env = {"TOKENPULSE_DATABASE_URL": database_url, **UNLIMITED_ENV}

    with running_server(tmp_path, env=env) as server:
        first = simulate(server.url, *run, "--start", format_rfc3339(start), key=keys.admin)
        # The same seed half an hour later: the same event ids at other instants, some of them
        # duplicates of the first run's, which the server keeps as they were.
        moved = format_rfc3339(start + timedelta(minutes=30))
        second = simulate(server.url, *run, "--start", moved, key=keys.admin)

    assert first.returncode == 0, first.stdout + first.stderr
    assert second.returncode == 1, second.stdout + second.stderr
    assert "ledger check FAILED" in second.stdout
    assert re.search(r"^  pulse-1\s+requests\s+3,000\s+[\d,]+\s+✗$", second.stdout, re.M)


# The prices `--prices` registers, written out: the test's own arithmetic, not the simulator's.
PER_MILLION = {
    "pulse-2": {
        "input": "2.5",
        "cached_input": "0.25",
        "cache_write_input": "3.125",
        "output": "10",
        "reasoning": "10",
    },
    "pulse-2-mini": {
        "input": "0.25",
        "cached_input": "0.025",
        "cache_write_input": "0.3125",
        "output": "2",
        "reasoning": "2",
    },
}


def event_cost_by_hand(e: dict[str, Any]) -> Fraction:
    """What one event costs at PER_MILLION, in an exact fraction."""
    price = {part: Fraction(text) for part, text in PER_MILLION[e["model"]].items()}
    cached, written = e["cached_input_tokens"], e["cache_write_input_tokens"]
    cost: Fraction = (
        (e["input_tokens"] - cached - written) * price["input"]
        + cached * price["cached_input"]
        + written * price["cache_write_input"]
        + (e["output_tokens"] - e["reasoning_tokens"]) * price["output"]
        + e["reasoning_tokens"] * price["reasoning"]
    ) / 1_000_000
    return cost


def cost_by_hand(events: list[dict[str, Any]]) -> dict[str, Fraction]:
    """What each model's events cost at PER_MILLION, event by event, in exact fractions."""
    costs: dict[str, Fraction] = {}
    for e in events:
        costs[e["model"]] = costs.get(e["model"], Fraction(0)) + event_cost_by_hand(e)
    return costs


def cost_rows(report: str) -> list[tuple[str, str, str]]:
    """(ledger, server, mark) of each cost row of a report's totals, commas removed."""
    rows = re.findall(r"^\s+cost\s+([\d,.]+)\s+([\d,.]+)\s+(ok|✗)$", report, re.M)
    return [
        (ledger.replace(",", ""), server.replace(",", ""), mark) for ledger, server, mark in rows
    ]


@pytest.mark.process
async def test_a_run_with_prices_registers_them_and_checks_the_cost_of_its_events_at_them(
    keys: Keys, database_url: str, tmp_path: Path
) -> None:
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(second=0, microsecond=0)
    end = start + timedelta(hours=1)
    run = [
        *("--seed", "45", "--events", "3000", "--hours", "1", "--speedup", "0", "--quiet"),
        *("--start", format_rfc3339(start), "--models", "pulse-2,pulse-2-mini"),
        *("--tenants", "100", "--api-keys", "1000"),
    ]
    day = LaunchDay(
        start=start,
        seed=45,
        models=("pulse-2", "pulse-2-mini"),
        events=3000,
        duration=timedelta(hours=1),
        tenants=100,
        api_keys=1000,
    )
    expected = cost_by_hand(list(day))
    env = {"TOKENPULSE_DATABASE_URL": database_url, **UNLIMITED_ENV}

    with running_server(tmp_path, env=env) as server:
        priced = simulate(server.url, *run, "--prices", key=keys.admin)
        # Without --prices, the ledger checks the cost at the prices the server holds.
        unpriced = simulate(server.url, *run, key=keys.admin)
        repeated = simulate(server.url, *run, "--prices", key=keys.admin)
        async with httpx.AsyncClient(base_url=server.url, headers=bearer(keys.admin)) as http:
            prices = (await http.get("/v1/prices")).json()["prices"]
            totals = await http.get(
                "/v1/totals",
                params={
                    "start": format_rfc3339(start),
                    "end": format_rfc3339(end),
                    "group_by": "model",
                    "project": "sim-45",
                },
            )

    assert priced.returncode == 0, priced.stdout + priced.stderr
    assert "ledger check passed" in priced.stdout
    # Once each: a repeat finds its prices in effect and adds no version.
    assert [(p["model"], p["effective_from"], p["per_million_tokens"]) for p in prices] == [
        ("pulse-2", format_rfc3339(start), PER_MILLION["pulse-2"]),
        ("pulse-2-mini", format_rfc3339(start), PER_MILLION["pulse-2-mini"]),
    ]
    server_costs = {row["model"]: Fraction(row["cost"]) for row in totals.json()["results"]}
    assert server_costs == expected
    assert expected["pulse-2"] > 10 * expected["pulse-2-mini"] > 0
    rows = cost_rows(priced.stdout)
    assert [(Fraction(ledger), Fraction(server)) for ledger, server, _ in rows] == [
        (expected["pulse-2"], expected["pulse-2"]),
        (expected["pulse-2-mini"], expected["pulse-2-mini"]),
    ]
    assert [mark for _, _, mark in rows] == ["ok", "ok"]
    assert unpriced.returncode == 0, unpriced.stdout + unpriced.stderr
    assert cost_rows(unpriced.stdout) == rows
    assert repeated.returncode == 0, repeated.stdout + repeated.stderr
    assert cost_rows(repeated.stdout) == rows


@pytest.mark.process
@pytest.mark.parametrize("minutes_after_start", [0, 10])
async def test_other_prices_in_effect_during_a_run_with_prices_end_it_with_status_2(
    minutes_after_start: int, keys: Keys, database_url: str, tmp_path: Path
) -> None:
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(second=0, microsecond=0)
    other = format_rfc3339(start + timedelta(minutes=minutes_after_start))
    run = [
        *("--seed", "47", "--events", "100", "--hours", "1", "--speedup", "0", "--quiet"),
        *("--start", format_rfc3339(start), "--prices"),
    ]
    env = {"TOKENPULSE_DATABASE_URL": database_url, **UNLIMITED_ENV}

    with running_server(tmp_path, env=env) as server:
        async with httpx.AsyncClient(base_url=server.url, headers=bearer(keys.admin)) as http:
            put = await http.put(
                "/v1/prices/pulse-1",
                json={"effective_from": other, "per_million_tokens": {"input": "1", "output": "2"}},
            )
            refused = simulate(server.url, *run, key=keys.admin)
            totals = await http.get("/v1/totals", params={"window": "24h", "project": "sim-47"})

    assert put.status_code == 201
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"pulse-1 has other prices in effect from {other}" in refused.stderr
    assert "run without --prices" in refused.stderr
    assert totals.json()["results"] == [], "nothing was sent"


def crossings_by_hand(
    values: list[tuple[dict[str, Any], Fraction]], amounts: list[Fraction]
) -> list[tuple[str, str, Fraction]]:
    """(crossed_at, event_id, running sum) where the running sum of `values`, events in order,
    first reaches each amount reached."""
    found, running, pending = [], Fraction(0), sorted(amounts)
    for event, value in values:
        running += value
        while pending and running >= pending[0]:
            pending.pop(0)
            found.append((event["occurred_at"], event["event_id"], running))
    return found


def notified_crossings(bodies: list[dict[str, Any]]) -> list[tuple[str, str, Fraction]]:
    """(crossed_at, event_id, value_at_crossing) of notification bodies, in increasing amount."""
    ordered = sorted(bodies, key=lambda body: Fraction(str(body["amount"])))
    return [
        (body["crossed_at"], body["event_id"], Fraction(str(body["value_at_crossing"])))
        for body in ordered
    ]


def midnight_zone(instant: datetime) -> str:
    """An Etc/GMT zone whose midnight is `instant`, a whole UTC hour."""
    offset = -instant.hour % 24
    offset = offset - 24 if offset > 14 else offset
    return f"Etc/GMT{-offset:+d}"


@pytest.mark.process
async def test_a_run_with_budgets_sees_each_threshold_it_crosses_notified_once_where_predicted(
    keys: Keys, database_url: str, tmp_path: Path
) -> None:
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(second=0, microsecond=0)
    # A zone whose day begins at a whole hour 30 to 90 minutes into the run: the day before
    # ended before the budget was made, so its crossings are counted but never notified.
    midnight = (start + timedelta(minutes=90)).replace(minute=0)
    zone = midnight_zone(midnight)
    day = LaunchDay(
        start=start,
        seed=49,
        models=("pulse-2", "pulse-2-mini"),
        events=4000,
        duration=timedelta(hours=2),
        tenants=100,
        api_keys=1000,
    )
    largest = [event for event in day if event["tenant"] == "tenant-0001"]
    today = [
        (event, Fraction(event["input_tokens"] + event["output_tokens"]))
        for event in largest
        if occurred_at(event) >= midnight
    ]
    tokens_limit = int(sum(value for _, value in today) / Fraction(6, 5))
    costs = [(event, event_cost_by_hand(event)) for event in largest]
    cost_limit = Fraction(int(sum(value for _, value in costs) * 80), 100)
    run = [
        *("--seed", "49", "--events", "4000", "--hours", "2", "--speedup", "0", "--quiet"),
        *("--start", format_rfc3339(start), "--models", "pulse-2,pulse-2-mini", "--prices"),
        *("--tenants", "100", "--api-keys", "1000"),
        *("--budget", f"total_tokens:{tokens_limit}:day@{zone}:25,50,100,1000"),
        *("--budget", f"cost:{Decimal(cost_limit.numerator) / cost_limit.denominator}:since"),
    ]
    env = {"TOKENPULSE_DATABASE_URL": database_url, **UNLIMITED_ENV}

    with running_server(tmp_path, env=env) as server:
        done = simulate(server.url, *run, key=keys.admin)
        # Repeated, the run sets budgets of its own, notified from the events the server holds.
        again = simulate(server.url, *run, key=keys.admin)
        async with httpx.AsyncClient(base_url=server.url, headers=bearer(keys.admin)) as http:
            budgets = (await http.get("/v1/budgets")).json()["budgets"][:2]
            listed = await http.get(
                "/v1/notifications", params={"type": "budget.threshold_crossed", "limit": "500"}
            )

    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "totals, their cost, crossings and budget notifications equal the ledger's" in done.stdout
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 accepted, 4,000 duplicates, 0 rejected" in again.stdout
    assert "budget notifications equal the ledger's" in again.stdout
    by_metric = {budget["metric"]: budget for budget in budgets}
    tokens_budget, cost_budget = by_metric["total_tokens"], by_metric["cost"]
    assert (tokens_budget["tenant"], tokens_budget["project"], tokens_budget["tz"]) == (
        "tenant-0001",
        "sim-49",
        zone,
    )
    bodies = [each["body"] for each in listed.json()["notifications"]]
    tokens_bodies = [body for body in bodies if body["budget_id"] == tokens_budget["id"]]
    cost_bodies = [body for body in bodies if body["budget_id"] == cost_budget["id"]]
    # Once each, at the event the test finds by its own arithmetic; 1,000 % is not reached.
    assert sorted(body["threshold"] for body in tokens_bodies) == [25, 50, 100]
    assert {body["window_start"] for body in tokens_bodies} == {format_rfc3339(midnight)}
    assert notified_crossings(tokens_bodies) == crossings_by_hand(
        today, [Fraction(tokens_limit * percent, 100) for percent in (25, 50, 100)]
    )
    assert sorted(body["threshold"] for body in cost_bodies) == [50, 80, 100]
    assert notified_crossings(cost_bodies) == crossings_by_hand(
        costs, [cost_limit * percent / 100 for percent in (50, 80, 100)]
    )
    assert re.search(
        rf"^  the window from {re.escape(format_rfc3339(midnight - timedelta(days=1)))} ended "
        "before the budget was made",
        done.stdout,
        re.M,
    ), done.stdout
    assert len(re.findall(r"^  \S+Z\s+\d+% \(.*\)\s+\S+Z sim49-.*\s+ok$", done.stdout, re.M)) == 6
    assert "not reached from" in done.stdout


@pytest.mark.process
async def test_budget_notifications_not_found_in_time_fail_the_check_with_status_1(
    keys: Keys, database_url: str, tmp_path: Path
) -> None:
    run = [
        *("--seed", "50", "--events", "300", "--hours", "1", "--speedup", "0", "--quiet"),
        *("--tenants", "10", "--api-keys", "100", "--budget", "requests:10:since"),
        *("--budget-wait", "1"),
    ]
    # The server searches for crossings once as it starts, and then not for an hour.
    env = {
        "TOKENPULSE_DATABASE_URL": database_url,
        "TOKENPULSE_NOTIFY_INTERVAL": "3600",
        **UNLIMITED_ENV,
    }

    with running_server(tmp_path, env=env) as server:
        done = simulate(server.url, *run, key=keys.admin)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "ledger check FAILED" in done.stdout
    assert re.search(
        r"^  \S+Z\s+50% \(5\)\s+\S+Z sim50-\d+ at 5\s+not notified\s+✗$", done.stdout, re.M
    ), done.stdout
    assert "waited 1 s (--budget-wait): the server notifies 0 of the 3 crossings" in done.stdout


async def line_saying(stream: asyncio.StreamReader, text: str) -> str:
    """The first line of `stream` that holds `text`."""
    while line := (await stream.readline()).decode():
        if text in line:
            return line
    raise AssertionError(f"the simulator ended without saying {text!r}")


@pytest.mark.process
async def test_a_live_run_stopped_by_sigint_once_caught_up_checks_its_ledger_and_exits_0(
    keys: Keys, database_url: str, tmp_path: Path
) -> None:
    run = [
        *("--live", "--seed", "44", "--events", "6000", "--hours", "1", "--launch"),
        *("--tenants", "100", "--api-keys", "1000", "--batch", "500"),
    ]
    env = {"TOKENPULSE_DATABASE_URL": database_url, **UNLIMITED_ENV}

    with running_server(tmp_path, env=env) as server:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "tokenpulse", "simulate", "--url", server.url, *run),
            env=child_environment({"TOKENPULSE_KEY": keys.admin}),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stderr is not None
            await asyncio.wait_for(line_saying(process.stderr, "caught up with now"), 120)
            process.send_signal(signal.SIGINT)
            out, err = await asyncio.wait_for(process.communicate(), 120)
            async with httpx.AsyncClient(base_url=server.url, headers=bearer(keys.admin)) as http:
                totals = await http.get("/v1/totals", params={"window": "24h", "project": "sim-44"})
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    report, log = out.decode(), err.decode()
    assert process.returncode == 0, report + log
    assert "SIGINT: sending no more" in log
    assert "ledger check passed" in report
    accepted = re.search(r"^  ([\d,]+) accepted, 0 duplicates, 0 rejected$", report, re.M)
    assert accepted is not None, report
    # Caught up, the run has sent at least every event of its first hour, all due by then.
    stored = totals.json()["results"][0]["requests"]
    assert stored == int(accepted.group(1).replace(",", "")) >= 6000


@pytest.mark.process
async def test_a_price_replaced_behind_a_live_runs_back_fails_its_cost_check_with_status_1(
    keys: Keys, database_url: str, tmp_path: Path
) -> None:
    start = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)
    run = [
        *("--live", "--prices", "--seed", "48", "--events", "3000", "--hours", "1"),
        *("--start", format_rfc3339(start), "--tenants", "100", "--api-keys", "1000"),
    ]
    env = {"TOKENPULSE_DATABASE_URL": database_url, **UNLIMITED_ENV}
    dearer_output = {**PER_MILLION["pulse-2"], "output": "12"}

    with running_server(tmp_path, env=env) as server:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "tokenpulse", "simulate", "--url", server.url, *run),
            env=child_environment({"TOKENPULSE_KEY": keys.admin}),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stderr is not None
            await asyncio.wait_for(line_saying(process.stderr, "caught up with now"), 120)
            async with httpx.AsyncClient(base_url=server.url, headers=bearer(keys.admin)) as http:
                replaced = await http.put(
                    "/v1/prices/pulse-1",
                    params={"replace": "true"},
                    json={
                        "effective_from": format_rfc3339(start),
                        "per_million_tokens": dearer_output,
                    },
                )
            process.send_signal(signal.SIGINT)
            out, err = await asyncio.wait_for(process.communicate(), 120)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    report = out.decode()
    assert replaced.json()["outcome"] == "replaced"
    assert process.returncode == 1, report + err.decode()
    assert "ledger check FAILED" in report
    [(ledger_cost, server_cost, mark)] = cost_rows(report)
    assert mark == "✗"
    assert Fraction(server_cost) > Fraction(ledger_cost) > 0, "output costs more on the server"
    assert not re.search(r"_tokens\s.*✗$|requests\s.*✗$", report, re.M), "the tokens agree"
    assert "the tokens agree but not their cost" in report


def test_a_server_that_cannot_be_reached_ends_the_run_with_status_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    status = main(["simulate", "--url", url, "--key", "tp_x", "--events", "10", "--quiet"])

    assert status == 2
    assert f"cannot reach {url}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--hours", "0.01", "--hours must be a whole number of minutes"),
        ("--batch", "10001", "--batch must be at most 10,000"),
        ("--start", "2026-11-27T09:00:30Z", "start must be a whole minute"),
        ("--thresholds", "1e9,lots", "'lots' is not a number"),
        ("--budget", "total_tokens:lots:day", "a total_tokens limit is a positive whole number"),
        ("--budget", "total_tokens:5e6:fortnight", "window 'fortnight' is not one of"),
        ("--budget", "total_tokens:5e6:day@Mars/Olympus", "'Mars/Olympus' is not an IANA"),
        ("--budget", "requests:10:day:50,0", "threshold '0' must be a percentage more than 0"),
        ("--budget", "cost:250:day", "a cost budget needs --prices"),
        ("--budget-tenant", "acme", "'acme' is not a simulated tenant"),
    ],
)
def test_unusable_options_end_the_run_with_status_2_and_say_why(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["simulate", "--key", "tp_x", option, value])

    assert status == 2
    assert message in capsys.readouterr().err
