"""The run's budgets on the server: set with `POST /v1/budgets` before sending, and afterwards the
notifications `GET /v1/notifications` lists for them, waited for and checked against the
crossings the ledger predicts."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from tokenpulse.instants import parse_rfc3339
from tokenpulse.simulator.budgets import (
    COST,
    BudgetCrossing,
    BudgetSpec,
    BudgetWatch,
    Sum,
    Threshold,
    Window,
)
from tokenpulse.simulator.retries import describe, request_until_answered

BUDGET_CROSSED = "budget.threshold_crossed"
PAGE = 500
POLL_SECONDS = 0.5
SETTLE_SECONDS = 3.0
"""How long after the run the check reads on, for a notification the ledger does not expect to
be listed: several of the server's searches, at its default of one a second."""
ADMIN_HINT = " (--budget needs an admin key: --admin-key)"


class BudgetRefused(Exception):
    """The server did not set a budget the run asked for."""


@dataclass(frozen=True)
class MadeBudget:
    """A budget the run set, and the ledger's running sums of it."""

    id: str
    created_at: datetime
    watch: BudgetWatch

    @property
    def spec(self) -> BudgetSpec:
        return self.watch.spec

    def notified(self, window: Window) -> bool:
        """Whether the contract has the window's crossings notified: every window but those
        that ended before the budget was made, which are only counted."""
        return window.end is None or window.end > self.created_at


async def set_budgets(
    admin: httpx.AsyncClient,
    watches: Sequence[BudgetWatch],
    *,
    give_up_seconds: float,
) -> list[MadeBudget]:
    """Set each watched budget with the admin key `admin` sends; raises BudgetRefused.

    A request retried after no answer may have set its budget already; that one is left over,
    and its notifications, listed by budget, are not this run's.
    """
    made = []
    for watch in watches:
        spec = watch.spec
        response = await request_until_answered(
            admin,
            "POST",
            "/v1/budgets",
            json=spec.request(tenant=watch.tenant, project=watch.project, since=watch.since),
            give_up_seconds=give_up_seconds,
        )
        if response.status_code != 201:
            hint = ADMIN_HINT if response.status_code in (401, 403) else ""
            raise BudgetRefused(f"setting --budget {spec.text}: {describe(response)}{hint}")
        answer = response.json()
        created_at = parse_rfc3339(answer["created_at"])
        if created_at is None:
            raise BudgetRefused(f"created_at is not RFC 3339: {answer['created_at']!r}")
        made.append(MadeBudget(answer["id"], created_at, watch))
    return made


@dataclass(frozen=True)
class Notified:
    """A crossing as a notification's body tells it."""

    id: str
    window: Window
    percent: Decimal | None
    amount: Sum
    crossed_at: datetime
    event_id: str
    value: Sum
    corrected: bool


@dataclass(frozen=True)
class ThresholdCheck:
    window: Window
    threshold: Threshold
    predicted: BudgetCrossing | None
    notified: list[Notified]
    expected: bool = True
    """False for a window that ended before the budget was made: nothing is notified there."""

    @property
    def matches(self) -> bool:
        if not self.expected or self.predicted is None:
            return not self.notified
        if len(self.notified) != 1:
            return False
        [notified] = self.notified
        predicted = self.predicted
        return (
            notified.window == self.window
            and notified.percent == predicted.threshold.percent
            and (notified.crossed_at, notified.event_id, notified.value)
            == (predicted.crossed_at, predicted.event_id, predicted.value)
        )


@dataclass(frozen=True)
class BudgetCheck:
    budget: MadeBudget
    thresholds: list[ThresholdCheck] = field(default_factory=list)
    problem: str | None = None
    """Why the notifications could not be read, or were not there in time."""

    @property
    def matches(self) -> bool:
        return self.problem is None and all(check.matches for check in self.thresholds)


async def check_notifications(
    admin: httpx.AsyncClient,
    budgets: Sequence[MadeBudget],
    *,
    wait_seconds: float,
    give_up_seconds: float,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[BudgetCheck]:
    """Each budget's notifications against the ledger's crossings, read again until they agree
    and the server has had SETTLE_SECONDS to show one more, or until `wait_seconds` have passed:
    the server finds crossings behind ingest, every TOKENPULSE_NOTIFY_INTERVAL."""
    began = monotonic()
    settle = min(SETTLE_SECONDS, wait_seconds)
    while True:
        checks = [await _check(admin, budget, give_up_seconds) for budget in budgets]
        waited = monotonic() - began
        if all(check.matches for check in checks) and waited >= settle:
            return checks
        if any(check.problem for check in checks):
            return checks
        if waited >= wait_seconds:
            return [_late(check, wait_seconds) for check in checks]
        await sleep(POLL_SECONDS)


def _late(check: BudgetCheck, wait_seconds: float) -> BudgetCheck:
    if check.matches:
        return check
    predicted = [c for c in check.thresholds if c.expected and c.predicted is not None]
    right = sum(1 for c in predicted if c.matches)
    problem = (
        f"waited {wait_seconds:g} s (--budget-wait): the server notifies {right} of the "
        f"{len(predicted)} crossings the ledger predicts as predicted (it searches for them "
        "every TOKENPULSE_NOTIFY_INTERVAL, 1 s by default)"
    )
    return replace(check, problem=problem)


async def _check(
    admin: httpx.AsyncClient, budget: MadeBudget, give_up_seconds: float
) -> BudgetCheck:
    try:
        listed = await _listed(admin, budget, give_up_seconds)
    except _Unreadable as unreadable:
        return BudgetCheck(budget, problem=str(unreadable))
    found: dict[tuple[datetime, Sum], list[Notified]] = {}
    for notified in listed:
        found.setdefault((notified.window.start, notified.amount), []).append(notified)
    checks = []
    for counted in budget.watch.windows:
        window = counted.window
        crossings = {crossing.threshold.amount: crossing for crossing in counted.crossings}
        for threshold in budget.watch.thresholds:
            checks.append(
                ThresholdCheck(
                    window,
                    threshold,
                    crossings.get(threshold.amount),
                    found.pop((window.start, threshold.amount), []),
                    expected=budget.notified(window),
                )
            )
    # What is left is notified where the ledger counted nothing: each is one too many.
    for notifications in found.values():
        first = notifications[0]
        threshold = Threshold(first.percent, first.amount)
        checks.append(ThresholdCheck(first.window, threshold, None, notifications))
    return BudgetCheck(budget, checks)


class _Unreadable(Exception):
    pass


async def _listed(
    admin: httpx.AsyncClient, budget: MadeBudget, give_up_seconds: float
) -> list[Notified]:
    """Every notification of the budget's crossings, all pages of them."""
    listed: list[Notified] = []
    before: str | None = None
    while True:
        params = {"budget_id": budget.id, "type": BUDGET_CROSSED, "limit": str(PAGE)}
        if before is not None:
            params["before"] = before
        response = await request_until_answered(
            admin, "GET", "/v1/notifications", params=params, give_up_seconds=give_up_seconds
        )
        if response.status_code != 200:
            raise _Unreadable(f"GET /v1/notifications answered {describe(response)}")
        answer = response.json()
        for notification in answer["notifications"]:
            listed.append(_notified(notification, budget.spec.metric))
        before = answer["next_before"]
        if before is None:
            return listed


def _notified(notification: dict[str, Any], metric: str) -> Notified:
    body = notification["body"]
    try:
        start = _instant(body["window_start"])
        end = None if body["window_end"] is None else _instant(body["window_end"])
        percent = None if body["threshold"] is None else _decimal(body["threshold"])
        return Notified(
            id=notification["id"],
            window=Window(start, end),
            percent=percent,
            amount=_sum(metric, body["amount"]),
            crossed_at=_instant(body["crossed_at"]),
            event_id=body["event_id"],
            value=_sum(metric, body["value_at_crossing"]),
            corrected=notification["corrected_at"] is not None,
        )
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        raise _Unreadable(f"notification {notification.get('id')} is not readable: {exc}") from None


def _instant(text: object) -> datetime:
    instant = parse_rfc3339(text) if isinstance(text, str) else None
    if instant is None:
        raise ValueError(f"{text!r} is not an RFC 3339 instant")
    return instant


def _decimal(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"{value!r} is not a number")
    return Decimal(str(value))


def _sum(metric: str, value: object) -> Sum:
    """A count as a JSON integer; cost as an exact decimal string, never a float."""
    if metric == COST:
        if not isinstance(value, str):
            raise TypeError(f"the cost {value!r} is not a decimal string")
        return Decimal(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"the count {value!r} is not an integer")
    return value
