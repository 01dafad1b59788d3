"""Budgets through HTTP: what may be set, the check a gateway asks before a call, and the crossings
notified, exactly once each, at the exact event."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import NOW, ClientFactory, Clock, Keys, Ticker, bearer
from tests.factories import event, post_accepted
from tokenpulse.budgets.windows import window_at
from tokenpulse.instants import format_rfc3339

FAST = {
    "notify_interval": timedelta(milliseconds=20),
    "materialise_interval": timedelta(milliseconds=20),
}
DAILY = {"tenant": "acme", "metric": "total_tokens", "window": "day"}


async def _budget(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    made = await client.post("/v1/budgets", json={**DAILY, **fields})
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


async def _notified(
    client: httpx.AsyncClient, monotonic: Ticker, count: int, **query: str
) -> list[dict[str, Any]]:
    """The bodies of the notifications once `count` are listed, in increasing amount; the
    searches run as time passes."""
    listed: list[dict[str, Any]] = []
    for _ in range(300):
        monotonic.advance(1)
        listed = (await client.get("/v1/notifications", params=query)).json()["notifications"]
        if len(listed) >= count:
            break
        await asyncio.sleep(0.02)
    assert len(listed) == count, listed
    return sorted((each["body"] for each in listed), key=lambda body: float(body["amount"]))


async def _searched(client: httpx.AsyncClient, monotonic: Ticker) -> list[dict[str, Any]]:
    """Every notification listed after several more searches have run."""
    for _ in range(5):
        monotonic.advance(1)
        await asyncio.sleep(0.05)
    listed: list[dict[str, Any]] = (await client.get("/v1/notifications")).json()["notifications"]
    return listed


def _crossings(bodies: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(b["threshold"], b["amount"], b["event_id"], b["value_at_crossing"]) for b in bodies]


# --- What a budget may be ---------------------------------------------------------------------


async def test_a_budget_is_answered_as_it_was_set_and_listed_until_deleted(
    client: httpx.AsyncClient,
) -> None:
    made = await _budget(
        client, model="m-large", limit="12000", thresholds=[12.5, 80], amounts=[7000]
    )
    assert made["id"].startswith("bud_")
    assert {k: made[k] for k in ("tenant", "model", "project", "metric", "limit", "tz")} == {
        "tenant": "acme",
        "model": "m-large",
        "project": None,
        "metric": "total_tokens",
        "limit": 12000,
        "tz": "UTC",
    }
    assert (made["thresholds"], made["amounts"], made["window"]) == ([12.5, 80], [7000], "day")
    assert (await client.get("/v1/budgets")).json()["budgets"] == [made]
    deleted = await client.delete(f"/v1/budgets/{made['id']}")
    assert deleted.status_code == 200
    assert deleted.json()["deleted_at"] is not None
    assert (await client.get("/v1/budgets")).json()["budgets"] == []
    assert (await client.delete(f"/v1/budgets/{made['id']}")).status_code == 404


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"metric": "tokens"}, "metric", "must be one of"),
        ({"limit": "12.5"}, "limit", "positive integer"),
        ({"limit": 0}, "limit", "positive integer"),
        ({"metric": "cost", "limit": 500}, "limit", "as a string"),
        ({"metric": "cost", "limit": "0"}, "limit", "more than 0"),
        ({"window": "year"}, "window", "day, week, month, since"),
        ({"tz": "Mars/Olympus"}, "tz", "IANA time zone"),
        ({"window": "since"}, "since", "is required"),
        ({"since": "2026-11-27T00:00:00Z"}, "since", 'only with window "since"'),
        ({"thresholds": [0]}, "thresholds[0]", "more than 0"),
        ({"thresholds": [1001]}, "thresholds[0]", "at most 1000"),
        ({"thresholds": [50, 33.123456789012]}, "thresholds[1]", "decimal places"),
        ({"thresholds": [], "amounts": []}, "thresholds", "at least one"),
        ({"amounts": ["-5"]}, "amounts[0]", "positive integer"),
        ({"tenant": None}, "tenant", "required with a platform key"),
        ({"colour": "red"}, "colour", "is not a known field"),
    ],
)
async def test_a_budget_that_cannot_be_is_refused_naming_the_field_and_why(
    client: httpx.AsyncClient, fields: dict[str, Any], field: str, words: str
) -> None:
    answer = await client.post("/v1/budgets", json={**DAILY, "limit": 1000, **fields})
    assert answer.status_code == 422, answer.text
    errors = answer.json()["error"]["errors"]
    assert any(e["field"] == field and words in e["message"] for e in errors), errors


async def test_a_budget_naming_no_webhook_of_its_tenant_is_refused(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.post(
        "/v1/budgets", json={**DAILY, "limit": 1000, "webhook_id": "wh_0123456789abcdef"}
    )
    assert answer.status_code == 404


async def test_a_tenant_admin_key_sets_lists_and_deletes_its_own_tenants_budgets_only(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    theirs = await _budget(client, tenant="globex", limit=1000)
    own_key = bearer(await keys.create("admin", tenant="acme"))
    made = await client.post(
        "/v1/budgets", headers=own_key, json={"metric": "requests", "window": "day", "limit": 5}
    )
    assert made.status_code == 201
    assert made.json()["tenant"] == "acme"
    other = await client.post(
        "/v1/budgets", headers=own_key, json={**DAILY, "tenant": "globex", "limit": 5}
    )
    assert other.status_code == 403
    listed = (await client.get("/v1/budgets", headers=own_key)).json()["budgets"]
    assert [b["id"] for b in listed] == [made.json()["id"]]
    assert (await client.delete(f"/v1/budgets/{theirs['id']}", headers=own_key)).status_code == 404


@pytest.mark.parametrize(
    ("period", "tz", "at", "start", "end"),
    [
        (
            "day",
            "Europe/Berlin",
            "2026-10-25T12:00:00Z",
            "2026-10-24T22:00:00Z",
            "2026-10-25T23:00:00Z",
        ),
        # Midnight skipped: the day starts at the change, 01:00 local.
        (
            "day",
            "America/Havana",
            "2026-03-08T05:30:00Z",
            "2026-03-08T05:00:00Z",
            "2026-03-09T04:00:00Z",
        ),
        # A day skipped altogether: the day before ends where the day after starts.
        (
            "day",
            "Pacific/Apia",
            "2011-12-29T15:00:00Z",
            "2011-12-29T10:00:00Z",
            "2011-12-30T10:00:00Z",
        ),
        ("week", "UTC", "2026-12-03T03:00:00Z", "2026-11-30T00:00:00Z", "2026-12-07T00:00:00Z"),
        (
            "month",
            "America/New_York",
            "2026-11-01T03:59:59Z",
            "2026-10-01T04:00:00Z",
            "2026-11-01T04:00:00Z",
        ),
        (
            "month",
            "Asia/Kathmandu",
            "2026-12-31T18:15:00Z",
            "2026-12-31T18:15:00Z",
            "2027-01-31T18:15:00Z",
        ),
    ],
)
def test_a_window_runs_from_midnight_to_midnight_in_its_zone(
    period: str, tz: str, at: str, start: str, end: str
) -> None:
    window = window_at(period, tz, None, datetime.fromisoformat(at))
    assert (format_rfc3339(window.start), window.end and format_rfc3339(window.end)) == (start, end)


# --- The check ----------------------------------------------------------------------------------


async def test_the_check_answers_every_budget_that_applies_to_the_call_with_its_exact_use(
    client: httpx.AsyncClient,
) -> None:
    whole = await _budget(client, limit=5000)
    large = await _budget(client, model="m-large", limit=1000)
    await _budget(client, project="chat", limit=1000)
    await _budget(client, tenant="globex", limit=1000)
    await post_accepted(client, event(), event(model="m-small"), event(tenant="globex"))
    check = await client.get("/v1/budgets/check", params={"tenant": "acme", "model": "m-large"})
    assert check.status_code == 200
    answered = check.json()
    assert answered["tenant"] == "acme"
    assert {b["id"]: (b["used"], b["remaining"], b["exceeded"]) for b in answered["budgets"]} == {
        whole["id"]: (4000, 1000, False),
        large["id"]: (2000, 0, True),
    }
    assert answered["exceeded"] is True
    assert {(b["window_start"], b["window_end"]) for b in answered["budgets"]} == {
        ("2026-11-27T00:00:00Z", "2026-11-28T00:00:00Z")
    }
    # An event acknowledged is counted by the very next check.
    await post_accepted(client, event(model="m-small", input_tokens=1000, output_tokens=0))
    again = (await client.get("/v1/budgets/check", params={"tenant": "acme"})).json()
    assert [(b["used"], b["exceeded"]) for b in again["budgets"]] == [(5000, True)]


async def test_the_check_of_a_cost_budget_answers_exact_decimals_and_null_while_unpriced(
    client: httpx.AsyncClient,
) -> None:
    made = await _budget(client, metric="cost", limit="0.01")
    await post_accepted(client, event(input_tokens=1000, output_tokens=0))
    unpriced = (await client.get("/v1/budgets/check", params={"tenant": "acme"})).json()
    assert unpriced["budgets"][0] | {"id": made["id"]} == {
        **unpriced["budgets"][0],
        "used": None,
        "remaining": None,
        "exceeded": False,
    }
    price = {
        "effective_from": "2026-11-01T00:00:00Z",
        "per_million_tokens": {"input": "3", "output": "15"},
    }
    assert (await client.put("/v1/prices/m-large", json=price)).status_code == 201
    priced = (await client.get("/v1/budgets/check", params={"tenant": "acme"})).json()
    assert [(b["limit"], b["used"], b["remaining"]) for b in priced["budgets"]] == [
        ("0.01", "0.003", "0.007")
    ]


async def test_a_tenant_bound_read_key_checks_its_own_tenant_only(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    await _budget(client, limit=1000)
    read = bearer(await keys.create("read", tenant="acme"))
    own = await client.get("/v1/budgets/check", headers=read)
    assert own.status_code == 200
    assert len(own.json()["budgets"]) == 1
    other = await client.get("/v1/budgets/check", headers=read, params={"tenant": "globex"})
    assert other.status_code == 403
    platform = await client.get("/v1/budgets/check")
    assert platform.status_code == 422


# --- Crossings ----------------------------------------------------------------------------------


async def test_each_threshold_is_notified_once_at_the_exact_crossing_event(
    make_client: ClientFactory, monotonic: Ticker
) -> None:
    async with make_client(**FAST) as client:
        made = await _budget(client, limit=10000, thresholds=[50, 100], amounts=[2000])
        events = [event(event_id=f"e{i}", at=NOW - timedelta(minutes=10 - i)) for i in range(6)]
        await post_accepted(client, *events)
        bodies = await _notified(client, monotonic, 3)
        assert _crossings(bodies) == [
            (None, 2000, "e0", 2000),
            (50, 5000, "e2", 6000),
            (100, 10000, "e4", 10000),
        ]
        assert bodies[1] == {
            "type": "budget.threshold_crossed",
            "id": bodies[1]["id"],
            "budget_id": made["id"],
            "tenant": "acme",
            "metric": "total_tokens",
            "limit": 10000,
            "threshold": 50,
            "amount": 5000,
            "window_start": "2026-11-27T00:00:00Z",
            "window_end": "2026-11-28T00:00:00Z",
            "value_at_crossing": 6000,
            "crossed_at": format_rfc3339(NOW - timedelta(minutes=8)),
            "event_id": "e2",
        }
        await post_accepted(client, event(at=NOW - timedelta(minutes=2)))
        assert len(await _searched(client, monotonic)) == 3


async def test_events_of_one_instant_cross_in_event_id_order_by_code_point(
    make_client: ClientFactory, monotonic: Ticker
) -> None:
    async with make_client(**FAST) as client:
        await _budget(client, limit=3000)
        at = NOW - timedelta(minutes=3)
        await post_accepted(client, event(event_id="b", at=at), event(event_id="B", at=at))
        assert _crossings(await _notified(client, monotonic, 1)) == [(100, 3000, "b", 4000)]


async def test_a_late_event_that_moves_a_crossing_earlier_corrects_it_and_notifies_nothing_new(
    make_client: ClientFactory, monotonic: Ticker
) -> None:
    async with make_client(**FAST) as client:
        await _budget(client, limit=4000, thresholds=[100])
        await post_accepted(client, event(event_id="a", at=NOW - timedelta(minutes=5)))
        await post_accepted(client, event(event_id="b", at=NOW - timedelta(minutes=4)))
        (first,) = await _notified(client, monotonic, 1)
        assert (first["event_id"], first["value_at_crossing"]) == ("b", 4000)
        await post_accepted(
            client, event(event_id="late", at=NOW - timedelta(hours=3), input_tokens=9000)
        )
        for _ in range(100):
            (listed,) = await _searched(client, monotonic)
            if listed["corrected_at"] is not None:
                break
        assert listed["id"] == first["id"]
        assert _crossings([listed["body"]]) == [(100, 4000, "late", 9800)]
        assert listed["body"]["crossed_at"] == format_rfc3339(NOW - timedelta(hours=3))


async def test_a_new_window_starts_from_nothing_and_the_window_just_gone_still_notifies_late_events(
    make_client: ClientFactory, clock: Clock, monotonic: Ticker
) -> None:
    clock.now = datetime(2026, 11, 27, 23, 50, tzinfo=UTC)
    async with make_client(**FAST) as client:
        await _budget(client, limit=4000)
        await post_accepted(client, event(event_id="y1", at=clock.now - timedelta(minutes=5)))
        clock.now = datetime(2026, 11, 28, 0, 10, tzinfo=UTC)
        await post_accepted(
            client,
            event(event_id="t1", at=clock.now - timedelta(minutes=5)),
            event(event_id="t2", at=clock.now - timedelta(minutes=4)),
            # Late, for yesterday: it crosses yesterday's threshold.
            event(event_id="y2", at=datetime(2026, 11, 27, 23, 59, tzinfo=UTC)),
        )
        bodies = await _notified(client, monotonic, 2)
        assert sorted((b["window_start"], b["event_id"]) for b in bodies) == [
            ("2026-11-27T00:00:00Z", "y2"),
            ("2026-11-28T00:00:00Z", "t2"),
        ]


async def test_a_budget_notifies_no_crossing_of_a_window_that_ended_before_it_was_set(
    make_client: ClientFactory, clock: Clock, monotonic: Ticker
) -> None:
    async with make_client(**FAST) as client:
        await post_accepted(client, *[event(at=NOW - timedelta(hours=11)) for _ in range(2)])
        await _budget(client, limit=4000)
        (body,) = await _notified(client, monotonic, 1)
        assert body["window_start"] == "2026-11-27T00:00:00Z"
        clock.now = datetime(2026, 11, 28, 0, 30, tzinfo=UTC)
        await post_accepted(client, event(at=datetime(2026, 11, 26, 23, 0, tzinfo=UTC)))
        assert len(await _searched(client, monotonic)) == 1


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        # Summer time ends: the day in Berlin lasts 25 hours.
        (datetime(2026, 10, 25, 22, 30), "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z"),
        # Summer time starts: 23 hours.
        (datetime(2026, 3, 29, 21, 30), "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"),
    ],
)
async def test_a_day_in_the_budgets_zone_runs_from_midnight_to_midnight_across_a_change_of_offset(
    make_client: ClientFactory,
    clock: Clock,
    monotonic: Ticker,
    now: datetime,
    start: str,
    end: str,
) -> None:
    clock.now = now.replace(tzinfo=UTC)
    first = datetime.fromisoformat(start)
    async with make_client(**FAST) as client:
        await _budget(client, limit=4000, tz="Europe/Berlin")
        await post_accepted(
            client,
            # The last microsecond of the day before: not counted.
            event(event_id="before", at=first - timedelta(microseconds=1), input_tokens=9000),
            event(event_id="first", at=first),
            event(event_id="last", at=clock.now - timedelta(minutes=1)),
        )
        check = (await client.get("/v1/budgets/check", params={"tenant": "acme"})).json()
        (budget,) = check["budgets"]
        assert (budget["window_start"], budget["window_end"], budget["used"]) == (start, end, 4000)
        (body,) = await _notified(client, monotonic, 1)
        assert (body["window_start"], body["window_end"], body["event_id"]) == (start, end, "last")


async def test_a_cost_budget_crosses_at_the_event_whose_cost_reaches_the_amount(
    make_client: ClientFactory, monotonic: Ticker
) -> None:
    async with make_client(**FAST) as client:
        price = {
            "effective_from": "2026-11-01T00:00:00Z",
            "per_million_tokens": {"input": "3", "output": "15"},
        }
        assert (await client.put("/v1/prices/m-large", json=price)).status_code == 201
        await _budget(client, metric="cost", limit="0.05", thresholds=[50, 100])
        # Each costs 1200 * 3 + 800 * 15 per million: 0.0156.
        events = [event(event_id=f"c{i}", at=NOW - timedelta(minutes=9 - i)) for i in range(4)]
        await post_accepted(client, *events)
        bodies = await _notified(client, monotonic, 2)
        assert _crossings(bodies) == [
            (50, "0.025", "c1", "0.0312"),
            (100, "0.05", "c3", "0.0624"),
        ]


async def test_a_budget_since_an_instant_counts_from_it_in_one_window_that_never_ends(
    make_client: ClientFactory, monotonic: Ticker
) -> None:
    async with make_client(**FAST) as client:
        since = NOW - timedelta(days=3, seconds=30)
        await _budget(client, window="since", since=format_rfc3339(since), limit=4000)
        await post_accepted(
            client,
            event(event_id="early", at=since - timedelta(microseconds=1), input_tokens=90000),
            event(event_id="s1", at=since),
            event(event_id="s2", at=NOW - timedelta(days=1)),
        )
        (body,) = await _notified(client, monotonic, 1)
        assert (body["window_start"], body["window_end"], body["event_id"]) == (
            format_rfc3339(since),
            None,
            "s2",
        )


async def test_a_deleted_budget_notifies_nothing_more(
    make_client: ClientFactory, monotonic: Ticker
) -> None:
    async with make_client(**FAST) as client:
        made = await _budget(client, limit=2000, thresholds=[100, 200])
        await post_accepted(client, event())
        await _notified(client, monotonic, 1)
        await client.delete(f"/v1/budgets/{made['id']}")
        await post_accepted(client, event())
        assert len(await _searched(client, monotonic)) == 1


async def test_a_tenant_admin_key_lists_its_own_tenants_notifications_only(
    make_client: ClientFactory, keys: Keys, monotonic: Ticker
) -> None:
    async with make_client(**FAST) as client:
        ours = await _budget(client, limit=2000)
        theirs = await _budget(client, tenant="globex", limit=2000)
        await post_accepted(client, event(), event(tenant="globex"))
        await _notified(client, monotonic, 2)
        own = bearer(await keys.create("admin", tenant="acme"))
        listed = (await client.get("/v1/notifications", headers=own)).json()["notifications"]
        assert [n["body"]["budget_id"] for n in listed] == [ours["id"]]
        filtered = await client.get(
            "/v1/notifications", headers=own, params={"budget_id": theirs["id"]}
        )
        assert filtered.json()["notifications"] == []


async def test_a_budget_may_name_only_a_webhook_that_receives_budget_notifications(
    client: httpx.AsyncClient,
) -> None:
    made = await client.post(
        "/v1/webhooks",
        json={"url": "https://hooks.example.com/launches", "events": ["launch.milestone_crossed"]},
    )
    answer = await client.post(
        "/v1/budgets", json={**DAILY, "limit": 1000, "webhook_id": made.json()["id"]}
    )
    assert answer.status_code == 404
    assert "budget.threshold_crossed" in answer.json()["error"]["message"]


async def test_a_crossing_of_a_budget_whose_webhook_was_deleted_is_listed_and_sent_nowhere(
    make_client: ClientFactory, monotonic: Ticker
) -> None:
    async with make_client(**FAST) as client:
        webhook = (
            await client.post("/v1/webhooks", json={"url": "https://hooks.example.com/a"})
        ).json()
        await _budget(client, limit=2000, webhook_id=webhook["id"])
        assert (await client.delete(f"/v1/webhooks/{webhook['id']}")).status_code == 200
        await post_accepted(client, event())
        await _notified(client, monotonic, 1)
        (listed,) = (await client.get("/v1/notifications")).json()["notifications"]
        assert listed["deliveries"] == []


async def test_a_budget_since_an_instant_still_ahead_has_used_nothing(
    client: httpx.AsyncClient,
) -> None:
    ahead = format_rfc3339(NOW + timedelta(days=2))
    await _budget(client, window="since", since=ahead, limit=1000)
    await post_accepted(client, event())
    (checked,) = (await client.get("/v1/budgets/check", params={"tenant": "acme"})).json()[
        "budgets"
    ]
    assert (checked["used"], checked["window_start"]) == (0, ahead)


async def test_notifications_are_listed_newest_first_and_paged_on_with_next_before(
    make_client: ClientFactory, monotonic: Ticker
) -> None:
    async with make_client(**FAST) as client:
        await _budget(client, limit=1000, thresholds=[100, 200, 300])
        await post_accepted(client, event(input_tokens=2000, output_tokens=1000))
        await _notified(client, monotonic, 3)
        first = (await client.get("/v1/notifications", params={"limit": 2})).json()
        assert [n["body"]["threshold"] for n in first["notifications"]] == [300, 200]
        rest = await client.get(
            "/v1/notifications", params={"limit": 2, "before": first["next_before"]}
        )
        assert [n["body"]["threshold"] for n in rest.json()["notifications"]] == [100]
        assert rest.json()["next_before"] is None
        unknown = await client.get("/v1/notifications", params={"before": "msg_" + "0" * 24})
        assert unknown.status_code == 422


async def test_a_budget_whose_search_fails_keeps_no_other_from_being_notified(
    make_client: ClientFactory, monotonic: Ticker, db: AsyncEngine
) -> None:
    async with make_client(**FAST) as client:
        broken = await _budget(client, tenant="globex", limit=1000, tz="Europe/Berlin")
        # As a zone the machine that searches has no rules for (older time zone data).
        async with db.begin() as connection:
            await connection.execute(
                text("UPDATE budget SET tz = 'Mars/Olympus' WHERE id = :id"), {"id": broken["id"]}
            )
        await _budget(client, limit=2000)
        await post_accepted(client, event(), event(tenant="globex"))
        (body,) = await _notified(client, monotonic, 1)
        assert body["tenant"] == "acme"
        metrics = (await client.get("/metrics")).text.splitlines()
        (failures,) = [m for m in metrics if m.startswith("tokenpulse_detection_failures_total")]
        assert float(failures.split()[-1]) >= 1


async def test_deleting_a_budget_cancels_the_deliveries_of_its_notifications_not_yet_made(
    make_client: ClientFactory, monotonic: Ticker
) -> None:
    async with make_client(**FAST) as client:
        # An endpoint that cannot be reached: its delivery waits for a retry.
        url = "https://unreachable.invalid/hook"
        webhook = (await client.post("/v1/webhooks", json={"url": url})).json()
        made = await _budget(client, limit=2000, webhook_id=webhook["id"])
        await post_accepted(client, event())
        await _notified(client, monotonic, 1)
        assert (await client.delete(f"/v1/budgets/{made['id']}")).status_code == 200
        (listed,) = (await client.get("/v1/notifications")).json()["notifications"]
        (delivery,) = listed["deliveries"]
        assert (delivery["state"], delivery["next_attempt_at"]) == ("cancelled", None)


async def test_text_no_tenant_can_have_is_refused_naming_the_parameter(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/v1/budgets", "/v1/budgets/check"):
        answer = await client.get(path, params={"tenant": "ac\x00me"})
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["errors"][0]["field"] == "tenant"
