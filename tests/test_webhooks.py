"""Webhooks through HTTP, delivered to a real endpoint: signed so that a Standard Webhooks library
verifies them, retried with waits that double until the endpoint answers, given up once the retry
period is over, cancelled with their webhook, and each tenant's own."""

import asyncio
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import WebhookVerificationError

from tests.conftest import ClientFactory, Clock, Keys, Ticker, bearer
from tests.factories import event, post_accepted
from tests.receivers import Answer, Received, Receiver
from tokenpulse.instants import format_rfc3339
from tokenpulse.settings import Settings
from tokenpulse.webhooks.retries import RetryPolicy

FAST = {
    "notify_interval": timedelta(milliseconds=20),
    "materialise_interval": timedelta(milliseconds=20),
    # The receivers listen on 127.0.0.1.
    "webhook_private_addresses": True,
}
Listed = list[dict[str, Any]]


def real_now() -> datetime:
    """The real time, to the second: a Standard Webhooks library refuses a delivery whose
    timestamp is more than five minutes from its own clock, so a test that verifies deliveries
    sets the service's clock to it."""
    return datetime.now(UTC).replace(microsecond=0)


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def _webhook(
    client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None, **fields: Any
) -> dict[str, Any]:
    made = await client.post("/v1/webhooks", headers=headers, json={"url": url, **fields})
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


async def _budget(client: httpx.AsyncClient, since: datetime, **fields: Any) -> dict[str, Any]:
    """A budget of acme's total tokens since `since`: one window, whatever the time of day."""
    made = await client.post(
        "/v1/budgets",
        json={
            "tenant": "acme",
            "metric": "total_tokens",
            "window": "since",
            "since": format_rfc3339(since),
            **fields,
        },
    )
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


async def _tested(
    client: httpx.AsyncClient, clock: Clock, webhook: dict[str, Any], **headers: str
) -> dict[str, Any]:
    """A test notification sent to `webhook`; the clock moves on a millisecond, since a webhook's
    test notifications are told apart by the instant they are sent at."""
    answer = await client.post(f"/v1/webhooks/{webhook['id']}/test", headers=headers)
    assert answer.status_code == 202, answer.text
    clock.now += timedelta(milliseconds=1)
    body: dict[str, Any] = answer.json()
    return body


async def _listed(
    client: httpx.AsyncClient,
    monotonic: Ticker,
    done: Callable[[Listed], bool],
    **query: str,
) -> Listed:
    """The notifications listed, once `done` holds of them: searches for crossings run as the
    monotonic clock moves, and the sender sends what is due every few milliseconds."""
    listed: Listed = []
    for _ in range(500):
        monotonic.advance(1)
        listed = (await client.get("/v1/notifications", params=query)).json()["notifications"]
        if done(listed):
            return listed
        await asyncio.sleep(0.02)
    raise AssertionError(f"never so: {listed}")


async def _idle(client: httpx.AsyncClient, monotonic: Ticker) -> Listed:
    """The notifications listed after the sender and the searches have had many turns more."""
    for _ in range(10):
        monotonic.advance(1)
        await asyncio.sleep(0.03)
    listed: Listed = (await client.get("/v1/notifications")).json()["notifications"]
    return listed


def _deliveries(listed: Listed) -> list[dict[str, Any]]:
    return [delivery for notification in listed for delivery in notification["deliveries"]]


def _attempts(listed: Listed) -> list[int]:
    """How many attempts each delivery has had, fewest first."""
    return sorted(len(delivery["attempts"]) for delivery in _deliveries(listed))


def attempted(count: int, of: int) -> Callable[[Listed], bool]:
    """Whether `of` notifications are listed, each delivery of them with `count` attempts."""
    return lambda listed: (
        len(listed) == of
        and all(notification["deliveries"] for notification in listed)
        and all(len(delivery["attempts"]) == count for delivery in _deliveries(listed))
    )


def delivered(of: int) -> Callable[[Listed], bool]:
    """Whether `of` notifications are listed, each delivered wherever it goes, with the attempt
    that delivered it."""
    return lambda listed: (
        len(listed) == of
        and all(notification["deliveries"] for notification in listed)
        and all(
            delivery["state"] == "delivered"
            and any(attempt["status"] == 200 for attempt in delivery["attempts"])
            for delivery in _deliveries(listed)
        )
    )


def _each_as_listed(received: list[Received], listed: Listed, secret: str) -> None:
    """Every request is signed with `secret` and carries, as its `webhook-id`, the id of a
    notification listed, with that notification's body."""
    bodies = {notification["id"]: notification["body"] for notification in listed}
    for request in received:
        assert request.verified(secret) == bodies[request.webhook_id]
        assert request.headers["content-type"] == "application/json"


# --- What is delivered ------------------------------------------------------------------------


async def test_a_crossing_is_delivered_signed_so_that_a_standard_webhooks_library_verifies_it(
    make_client: ClientFactory, clock: Clock, monotonic: Ticker
) -> None:
    clock.now = real_now()
    with Receiver() as receiver:
        async with make_client(**FAST) as client:
            webhook = await _webhook(client, receiver.url)
            budget = await _budget(
                client, clock.now - timedelta(hours=1), limit=2000, webhook_id=webhook["id"]
            )
            await post_accepted(client, event(event_id="e1", at=clock.now - timedelta(minutes=1)))
            (listed,) = await _listed(client, monotonic, delivered(1))
            (request,) = receiver.received

    body = request.verified(webhook["secret"])
    assert body == listed["body"]
    assert (body["type"], body["budget_id"], body["event_id"]) == (
        "budget.threshold_crossed",
        budget["id"],
        "e1",
    )
    assert request.webhook_id == listed["id"] == body["id"]
    (attempt,) = listed["deliveries"][0]["attempts"]
    assert request.headers["webhook-timestamp"] == str(int(instant(attempt["at"]).timestamp()))
    assert request.headers["webhook-signature"].startswith("v1,")
    assert request.headers["content-type"] == "application/json"
    assert (attempt["status"], attempt["error"]) == (200, None)
    assert listed["deliveries"][0]["webhook_id"] == webhook["id"]
    with pytest.raises(WebhookVerificationError):
        request.verified("whsec_" + "QUJD" * 8)


async def test_a_webhooks_secret_is_shown_once_and_its_test_notification_is_delivered_like_any(
    make_client: ClientFactory, clock: Clock, monotonic: Ticker
) -> None:
    clock.now = real_now()
    with Receiver() as receiver:
        async with make_client(**FAST) as client:
            made = await client.post(
                "/v1/webhooks", json={"url": receiver.url, "description": "on call"}
            )
            assert made.status_code == 201
            webhook = made.json()
            assert webhook["secret"].startswith("whsec_")
            assert {k: webhook[k] for k in ("url", "description", "events", "tenant")} == {
                "url": receiver.url,
                "description": "on call",
                "events": ["budget.threshold_crossed"],
                "tenant": None,
            }
            (listed_webhook,) = (await client.get("/v1/webhooks")).json()["webhooks"]
            assert listed_webhook == {k: v for k, v in webhook.items() if k != "secret"}

            sent = await client.post(f"/v1/webhooks/{webhook['id']}/test")
            assert sent.status_code == 202
            answered = sent.json()
            assert answered["type"] == "webhook.test"
            assert answered["deliveries"][0]["webhook_id"] == webhook["id"]
            (listed,) = await _listed(client, monotonic, delivered(1), type="webhook.test")
            unknown = await client.post("/v1/webhooks/wh_0123456789abcdef/test")

    assert unknown.status_code == 404
    (request,) = receiver.received
    assert request.webhook_id == answered["id"] == listed["id"]
    assert request.verified(webhook["secret"]) == listed["body"] == answered["body"]
    assert listed["body"]["webhook_id"] == webhook["id"]
    assert [a["status"] for a in listed["deliveries"][0]["attempts"]] == [200]


async def test_two_test_notifications_sent_at_one_instant_are_two_notifications(
    client: httpx.AsyncClient,
) -> None:
    webhook = await _webhook(client, "https://hooks.example.com/a")
    first = await client.post(f"/v1/webhooks/{webhook['id']}/test")
    second = await client.post(f"/v1/webhooks/{webhook['id']}/test")
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["id"] != second.json()["id"]


# --- Retries ----------------------------------------------------------------------------------


async def test_an_endpoint_refusing_connections_gets_each_notification_once_up_after_waits_doubling(
    make_client: ClientFactory, clock: Clock, monotonic: Ticker
) -> None:
    clock.now = real_now()
    first_retry = timedelta(seconds=7)
    with Receiver(down=True) as receiver:
        async with make_client(**FAST, webhook_first_retry=first_retry) as client:
            webhook = await _webhook(client, receiver.url)
            sent = [await _tested(client, clock, webhook) for _ in range(3)]
            for attempts in (1, 2, 3):
                listed = await _listed(client, monotonic, attempted(attempts, of=3))
                for delivery in _deliveries(listed):
                    assert delivery["state"] == "pending"
                    last = delivery["attempts"][-1]
                    assert last["status"] is None
                    assert last["error"].startswith("ConnectError"), last
                    assert instant(delivery["next_attempt_at"]) - instant(last["at"]) == (
                        first_retry * 2 ** (attempts - 1)
                    )
                due = [instant(d["next_attempt_at"]) for d in _deliveries(listed)]
                # Not a moment before it is due.
                clock.now = min(due) - timedelta(seconds=1)
                assert attempted(attempts, of=3)(await _idle(client, monotonic))
                if attempts == 3:
                    receiver.up()
                clock.now = max(due)
            listed = await _listed(client, monotonic, delivered(3))

    assert sorted(receiver.ids()) == sorted(each["id"] for each in sent)
    _each_as_listed(receiver.received, listed, webhook["secret"])
    for delivery in _deliveries(listed):
        attempts = delivery["attempts"]
        assert [a["status"] for a in attempts] == [None, None, None, 200]
        waits = [instant(b["at"]) - instant(a["at"]) for a, b in pairwise(attempts)]
        assert all(wait >= first_retry * 2**i for i, wait in enumerate(waits)), waits
        assert delivery["next_attempt_at"] is None
        assert delivery["delivered_at"] == attempts[-1]["at"]


async def test_an_endpoint_answering_503_for_a_while_gets_each_notification_under_one_webhook_id(
    make_client: ClientFactory, clock: Clock, monotonic: Ticker
) -> None:
    clock.now = real_now()
    with Receiver(lambda seen: 503 if seen < 2 else 200) as receiver:
        async with make_client(**FAST) as client:
            webhook = await _webhook(client, receiver.url)
            await _budget(
                client,
                clock.now - timedelta(hours=1),
                limit=4000,
                thresholds=[50, 100],
                webhook_id=webhook["id"],
            )
            await post_accepted(
                client, *(event(at=clock.now - timedelta(minutes=1)) for _ in range(2))
            )
            for attempts in (1, 2):
                listed = await _listed(client, monotonic, attempted(attempts, of=2))
                clock.now = max(instant(d["next_attempt_at"]) for d in _deliveries(listed))
            listed = await _listed(client, monotonic, delivered(2))

    ids = receiver.ids()
    assert sorted(ids) == sorted(3 * [notification["id"] for notification in listed])
    _each_as_listed(receiver.received, listed, webhook["secret"])
    for delivery in _deliveries(listed):
        assert [(a["status"], a["error"]) for a in delivery["attempts"]] == [
            (503, None),
            (503, None),
            (200, None),
        ]


async def test_a_redirect_is_an_answer_that_fails_and_is_never_followed(
    make_client: ClientFactory, monotonic: Ticker
) -> None:
    with Receiver(lambda _: 307) as receiver, Receiver() as elsewhere:
        receiver.location = elsewhere.url
        async with make_client(**FAST) as client:
            webhook = await _webhook(client, receiver.url)
            await client.post(f"/v1/webhooks/{webhook['id']}/test")
            (listed,) = await _listed(client, monotonic, attempted(1, of=1))

    (delivery,) = listed["deliveries"]
    assert delivery["state"] == "pending"
    assert [a["status"] for a in delivery["attempts"]] == [307]
    assert len(receiver.received) == 1
    assert elsewhere.received == []


@pytest.mark.parametrize("slow", ["hold", "trickle"])
async def test_an_answer_that_takes_longer_than_the_webhook_timeout_fails_and_is_retried(
    make_client: ClientFactory, clock: Clock, monotonic: Ticker, slow: Answer
) -> None:
    with Receiver(lambda seen: slow if seen == 0 else 200) as receiver:
        async with make_client(**FAST, webhook_timeout=timedelta(seconds=0.5)) as client:
            webhook = await _webhook(client, receiver.url)
            await client.post(f"/v1/webhooks/{webhook['id']}/test")
            (listed,) = await _listed(client, monotonic, attempted(1, of=1))
            (delivery,) = listed["deliveries"]
            assert delivery["state"] == "pending"
            (attempt,) = delivery["attempts"]
            assert attempt["status"] is None
            assert "Timeout" in attempt["error"], attempt
            clock.now = instant(delivery["next_attempt_at"])
            (listed,) = await _listed(client, monotonic, delivered(1))

    assert [a["status"] for a in listed["deliveries"][0]["attempts"]] == [None, 200]
    assert receiver.ids() == 2 * [listed["id"]]


async def test_a_delivery_still_failing_once_the_retry_period_is_over_is_failed_and_tried_no_more(
    make_client: ClientFactory, clock: Clock, monotonic: Ticker
) -> None:
    clock.now = real_now()
    found = clock.now
    with Receiver(lambda _: 500) as receiver:
        async with make_client(
            **FAST,
            webhook_first_retry=timedelta(seconds=10),
            webhook_retry_for=timedelta(minutes=1),
        ) as client:
            webhook = await _webhook(client, receiver.url)
            await client.post(f"/v1/webhooks/{webhook['id']}/test")
            # Tried after 0, 10, 30 and 70 s: the last after the minute, and then no more.
            for attempts in (1, 2, 3):
                (listed,) = await _listed(client, monotonic, attempted(attempts, of=1))
                (delivery,) = listed["deliveries"]
                assert delivery["state"] == "pending"
                clock.now = instant(delivery["next_attempt_at"])
            (listed,) = await _listed(client, monotonic, attempted(4, of=1))
            clock.now += timedelta(days=2)
            (after,) = await _idle(client, monotonic)

    (delivery,) = after["deliveries"]
    assert (delivery["state"], delivery["next_attempt_at"]) == ("failed", None)
    assert [instant(a["at"]) - found for a in delivery["attempts"]] == [
        timedelta(seconds=s) for s in (0, 10, 30, 70)
    ]
    assert [a["status"] for a in delivery["attempts"]] == 4 * [500]
    assert len(receiver.received) == 4


def test_the_default_retries_go_on_for_at_least_a_day_from_5_s_doubling_up_to_an_hour(
    settings: Settings,
) -> None:
    policy = RetryPolicy(first=settings.webhook_first_retry, retry_for=settings.webhook_retry_for)
    assert policy == RetryPolicy()
    waits: list[timedelta] = []
    tried = timedelta(0)
    while tried < policy.retry_for:
        waits.append(policy.wait(len(waits) + 1))
        tried += waits[-1]
    assert waits[:4] == [timedelta(seconds=s) for s in (5, 10, 20, 40)]
    assert max(waits) == timedelta(hours=1)
    assert tried >= timedelta(hours=24)


def test_a_wait_stays_within_the_longest_however_many_attempts_and_however_long_the_first() -> None:
    policy = RetryPolicy(first=timedelta(hours=1), retry_for=timedelta(days=30))
    assert {policy.wait(attempts) for attempts in range(1, 1000)} == {timedelta(hours=1)}
    tiny = RetryPolicy(first=timedelta(microseconds=1))
    assert tiny.wait(1) == timedelta(microseconds=1)
    assert tiny.wait(500) == timedelta(hours=1)


async def test_a_url_no_request_can_be_sent_to_is_refused_naming_the_field(
    client: httpx.AsyncClient,
) -> None:
    refused = await client.post("/v1/webhooks", json={"url": "https://xn--/hook"})
    assert refused.status_code == 422
    (error,) = refused.json()["error"]["errors"]
    assert error["field"] == "url"
    assert "can be sent to" in error["message"]


async def test_an_endpoint_whose_address_cannot_be_resolved_fails_only_its_own_deliveries(
    make_client: ClientFactory, clock: Clock, monotonic: Ticker, db: AsyncEngine
) -> None:
    with Receiver() as receiver:
        async with make_client(**FAST) as client:
            broken = await _webhook(client, "https://hooks.example.com/hook")
            # As a URL stored before such hosts were refused: one httpx cannot even encode.
            async with db.begin() as connection:
                await connection.execute(
                    text("UPDATE webhook SET url = 'https://xn--/hook' WHERE id = :id"),
                    {"id": broken["id"]},
                )
            healthy = await _webhook(client, receiver.url)
            since = clock.now - timedelta(hours=1)
            for webhook in (broken, healthy):
                await _budget(client, since, limit=2000, webhook_id=webhook["id"])
            # One search finds both crossings: their deliveries are sent together.
            await post_accepted(client, event())
            listed = await _listed(client, monotonic, attempted(1, of=2))
            clock.now += timedelta(hours=1)
            listed = await _listed(client, monotonic, lambda listed: _attempts(listed) == [1, 2])

    states = {d["webhook_id"]: d for d in _deliveries(listed)}
    assert states[healthy["id"]]["state"] == "delivered"
    assert [a["status"] for a in states[healthy["id"]]["attempts"]] == [200]
    assert states[broken["id"]]["state"] == "pending"
    assert all(a["status"] is None and a["error"] for a in states[broken["id"]]["attempts"])
    assert len(receiver.received) == 1


# --- Deleting a webhook -----------------------------------------------------------------------


async def test_deleting_a_webhook_cancels_its_deliveries_not_yet_made_and_keeps_them_listed(
    make_client: ClientFactory, clock: Clock, monotonic: Ticker
) -> None:
    with Receiver() as receiver:
        async with make_client(**FAST) as client:
            webhook = await _webhook(client, receiver.url)
            made = await _tested(client, clock, webhook)
            await _listed(client, monotonic, delivered(1))
            receiver.script = lambda _: 503
            failing = await _tested(client, clock, webhook)
            await _listed(client, monotonic, attempted(1, of=2))
            deleted = await client.delete(f"/v1/webhooks/{webhook['id']}")
            clock.now += timedelta(days=1)
            listed = {n["id"]: n for n in await _idle(client, monotonic)}
            webhooks = (await client.get("/v1/webhooks")).json()["webhooks"]
            again = await client.delete(f"/v1/webhooks/{webhook['id']}")
            test = await client.post(f"/v1/webhooks/{webhook['id']}/test")

    assert deleted.status_code == 200
    assert deleted.json()["id"] == webhook["id"]
    assert deleted.json()["deleted_at"] is not None
    (cancelled,) = listed[failing["id"]]["deliveries"]
    assert (cancelled["state"], cancelled["next_attempt_at"]) == ("cancelled", None)
    assert [a["status"] for a in cancelled["attempts"]] == [503]
    assert listed[made["id"]]["deliveries"][0]["state"] == "delivered"
    assert receiver.ids() == [made["id"], failing["id"]]
    assert webhooks == []
    assert (again.status_code, test.status_code) == (404, 404)


# --- Tenants ----------------------------------------------------------------------------------


async def test_a_tenant_admin_key_makes_lists_tests_and_deletes_its_own_tenants_webhooks_only(
    make_client: ClientFactory, clock: Clock, keys: Keys, monotonic: Ticker
) -> None:
    acme = bearer(await keys.create("admin", tenant="acme"))
    globex = bearer(await keys.create("admin", tenant="globex"))
    with Receiver() as receiver:
        async with make_client(**FAST) as client:
            ours = await _webhook(client, receiver.url, headers=acme)
            theirs = await _webhook(client, receiver.url, headers=globex)
            platform = await _webhook(client, receiver.url)
            assert [w["tenant"] for w in (ours, theirs, platform)] == ["acme", "globex", None]
            own = (await client.get("/v1/webhooks", headers=acme)).json()["webhooks"]
            every = (await client.get("/v1/webhooks")).json()["webhooks"]
            for other in (theirs, platform):
                test = await client.post(f"/v1/webhooks/{other['id']}/test", headers=acme)
                delete = await client.delete(f"/v1/webhooks/{other['id']}", headers=acme)
                assert (test.status_code, delete.status_code) == (404, 404)

            tested = {
                tenant: await _tested(client, clock, webhook, **headers)
                for tenant, webhook, headers in (
                    ("acme", ours, acme),
                    ("globex", theirs, globex),
                    (None, platform, {}),
                )
            }
            await _listed(client, monotonic, delivered(3))
            seen = {
                name: [n["id"] for n in response.json()["notifications"]]
                for name, response in (
                    ("acme", await client.get("/v1/notifications", headers=acme)),
                    ("globex", await client.get("/v1/notifications", headers=globex)),
                )
            }
            deleted = await client.delete(f"/v1/webhooks/{ours['id']}", headers=acme)
            left = (await client.get("/v1/webhooks")).json()["webhooks"]

    assert [w["id"] for w in own] == [ours["id"]]
    assert {w["id"] for w in every} == {ours["id"], theirs["id"], platform["id"]}
    assert all("secret" not in w for w in every)
    assert seen == {"acme": [tested["acme"]["id"]], "globex": [tested["globex"]["id"]]}
    assert deleted.status_code == 200
    assert {w["id"] for w in left} == {theirs["id"], platform["id"]}


async def test_only_a_platform_key_subscribes_to_launch_milestones(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    acme = bearer(await keys.create("admin", tenant="acme"))
    url = "https://hooks.example.com/launches"
    for events in (
        ["launch.milestone_crossed"],
        ["budget.threshold_crossed", "launch.milestone_crossed"],
    ):
        refused = await client.post(
            "/v1/webhooks", headers=acme, json={"url": url, "events": events}
        )
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "forbidden"
    assert (await client.get("/v1/webhooks", headers=acme)).json()["webhooks"] == []
    made = await _webhook(client, url, events=["launch.milestone_crossed"])
    assert made["events"] == ["launch.milestone_crossed"]


async def test_a_budget_names_its_tenants_own_webhook_and_only_a_platform_key_a_platform_one(
    client: httpx.AsyncClient, clock: Clock, keys: Keys
) -> None:
    acme = bearer(await keys.create("admin", tenant="acme"))
    globex = bearer(await keys.create("admin", tenant="globex"))
    url = "https://hooks.example.com/budgets"
    ours = await _webhook(client, url, headers=acme)
    theirs = await _webhook(client, url, headers=globex)
    platform = await _webhook(client, url)
    budget = {"tenant": "acme", "metric": "requests", "window": "day", "limit": 10}
    for headers, allowed, refused in (
        ({}, (ours, platform), (theirs,)),
        # A tenant cannot point its budgets at the operator's endpoints.
        (acme, (ours,), (theirs, platform)),
    ):
        for webhook in refused:
            answer = await client.post(
                "/v1/budgets", headers=headers, json={**budget, "webhook_id": webhook["id"]}
            )
            assert answer.status_code == 404, answer.text
        for webhook in allowed:
            made = await client.post(
                "/v1/budgets", headers=headers, json={**budget, "webhook_id": webhook["id"]}
            )
            assert made.status_code == 201, made.text
            assert made.json()["webhook_id"] == webhook["id"]


async def test_a_key_without_the_admin_scope_sees_no_webhook_and_no_notification(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    for scope in ("read", "ingest"):
        headers = bearer(await keys.create(scope))
        for path in ("/v1/webhooks", "/v1/notifications"):
            assert (await client.get(path, headers=headers)).status_code == 403
        made = await client.post(
            "/v1/webhooks", headers=headers, json={"url": "https://hooks.example.com/a"}
        )
        assert made.status_code == 403


# --- Launch milestones ------------------------------------------------------------------------

PER_COUNT = 10**9
"""The most one token count of an event may be by default: an event of two such counts has
2 * 10^9 total tokens."""


async def test_a_platform_webhook_of_launch_milestones_is_notified_once_per_milestone_crossed(
    make_client: ClientFactory, clock: Clock, keys: Keys, monotonic: Ticker
) -> None:
    clock.now = real_now()
    launched = clock.now - timedelta(hours=1)
    big: dict[str, Any] = {"input_tokens": PER_COUNT, "output_tokens": PER_COUNT}
    with Receiver() as launches, Receiver() as budgets:
        async with make_client(**FAST, max_tokens_per_count=PER_COUNT) as client:
            webhook = await _webhook(client, launches.url, events=["launch.milestone_crossed"])
            await _webhook(client, budgets.url)
            put = await client.put(
                "/v1/launches/m-large", json={"launched_at": format_rfc3339(launched)}
            )
            assert put.status_code == 201
            await post_accepted(
                client,
                event(event_id="before", at=launched - timedelta(seconds=1), **big),
                *(
                    event(event_id=f"e{i}", at=launched + timedelta(minutes=i), **big)
                    for i in range(6)
                ),
                event(event_id="other", model="m-small", **big),
            )
            listed = await _listed(client, monotonic, delivered(2))
            await post_accepted(
                client, event(event_id="later", at=clock.now - timedelta(minutes=1), **big)
            )
            again = await _idle(client, monotonic)
            acme = bearer(await keys.create("admin", tenant="acme"))
            tenants = (await client.get("/v1/notifications", headers=acme)).json()

    # 2 * 10^9 tokens an event: 10^9 is reached by the first, 10^10 by the fifth.
    bodies = sorted((n["body"] for n in listed), key=lambda body: body["amount"])
    assert bodies == [
        {
            "type": "launch.milestone_crossed",
            "id": bodies[0]["id"],
            "model": "m-large",
            "launched_at": format_rfc3339(launched),
            "metric": "total_tokens",
            "amount": 10**9,
            "value_at_crossing": 2 * 10**9,
            "crossed_at": format_rfc3339(launched),
            "event_id": "e0",
        },
        {
            "type": "launch.milestone_crossed",
            "id": bodies[1]["id"],
            "model": "m-large",
            "launched_at": format_rfc3339(launched),
            "metric": "total_tokens",
            "amount": 10**10,
            "value_at_crossing": 10**10,
            "crossed_at": format_rfc3339(launched + timedelta(minutes=4)),
            "event_id": "e4",
        },
    ]
    assert all(n["tenant"] is None for n in listed)
    assert [d["webhook_id"] for d in _deliveries(listed)] == 2 * [webhook["id"]]
    assert sorted(launches.ids()) == sorted(body["id"] for body in bodies)
    _each_as_listed(launches.received, listed, webhook["secret"])
    assert budgets.received == []
    assert [n["id"] for n in again] == [n["id"] for n in listed]
    assert tenants["notifications"] == []


# --- The service's own network ----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5432/",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data/",
        "https://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://[::ffff:192.168.0.1]/hook",
    ],
)
async def test_a_url_naming_an_address_of_the_services_own_network_is_refused(
    client: httpx.AsyncClient, url: str
) -> None:
    refused = await client.post("/v1/webhooks", json={"url": url})
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["error"]["errors"]
    assert error["field"] == "url"
    assert "own network" in error["message"]


async def test_a_host_that_resolves_into_the_services_own_network_is_never_sent_to(
    make_client: ClientFactory, clock: Clock, monotonic: Ticker
) -> None:
    with Receiver() as receiver:
        settings = {**FAST, "webhook_private_addresses": False}
        async with make_client(**settings) as client:
            # A name, not an address: it is refused as it resolves, at each attempt.
            url = receiver.url.replace("127.0.0.1", socket.gethostname())
            webhook = await _webhook(client, url)
            await _tested(client, clock, webhook)
            listed = await _listed(client, monotonic, attempted(1, of=1))
    (attempt,) = _deliveries(listed)[0]["attempts"]
    assert attempt["status"] is None
    assert attempt["error"].startswith("refused: "), attempt
    assert "loopback address" in attempt["error"]
    assert receiver.received == []


async def test_a_tenant_key_cannot_page_from_another_tenants_notification(
    make_client: ClientFactory, clock: Clock, monotonic: Ticker, keys: Keys
) -> None:
    async with make_client(**FAST) as client:
        platform = await _webhook(client, "https://hooks.example.com/a")
        made = await _tested(client, clock, platform)
        acme = bearer(await keys.create("admin", tenant="acme"))
        answer = await client.get("/v1/notifications", headers=acme, params={"before": made["id"]})
        assert answer.status_code == 422
        assert (
            await client.get("/v1/notifications", params={"before": made["id"]})
        ).status_code == 200
