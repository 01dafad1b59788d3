"""Finding crossings behind ingest: every budget's current and previous window, and every
launch's milestones, searched exactly as `/v1/milestones` searches, each new crossing written to
the outbox in the same transaction."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import any_, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.budgets.rules import metric_text, percent_json, sought
from tokenpulse.budgets.store import Budget, list_budgets
from tokenpulse.budgets.windows import Window, window_before
from tokenpulse.database import is_unavailable
from tokenpulse.instants import format_rfc3339
from tokenpulse.launches.milestones import (
    DEFAULT_THRESHOLDS,
    Crossing,
    find_crossings,
    stored_until,
)
from tokenpulse.launches.store import Launch, list_launches
from tokenpulse.launches.thresholds import answered_sum
from tokenpulse.notifications.outbox import record, send_to
from tokenpulse.rollups.selection import Selection
from tokenpulse.tables import webhook
from tokenpulse.webhooks.store import BUDGET_CROSSED, LAUNCH_CROSSED

log = logging.getLogger(__name__)

LAUNCH_METRIC = "total_tokens"


@dataclass
class Detected:
    found: int = 0
    corrected: int = 0
    failed: int = 0
    """Budgets and launches whose search failed; the next detection tries them again."""

    def add(self, created: bool | None) -> None:
        if created is True:
            self.found += 1
        elif created is False:
            self.corrected += 1


async def detect(connection: AsyncConnection, *, now: datetime, lead: timedelta) -> Detected:
    """Search every budget's watched windows and every launch for crossings, and record them.

    Run it in one REPEATABLE READ transaction, so that what it records agrees with one state of
    the events although they keep arriving.
    """
    detected = Detected()
    until = stored_until(now, lead)
    for budget in await list_budgets(connection):
        async with _alone(connection, f"budget {budget.id}", detected):
            for window in _watched(budget, now):
                await _budget_window(connection, budget, window, until, now, detected)
    launches = await list_launches(connection)
    if launches:
        subscribed = await _subscribed(connection, LAUNCH_CROSSED)
        for launch in launches:
            async with _alone(connection, f"the launch of {launch.model!r}", detected):
                await _launch(connection, launch, subscribed, until, now, detected)
    return detected


@asynccontextmanager
async def _alone(connection: AsyncConnection, what: str, detected: Detected) -> AsyncIterator[None]:
    """A savepoint for one budget's or launch's search: one that fails (a time zone this
    machine has no rules for, a statement refused) is logged and counted, and the others go on.
    The database's being unavailable ends the whole detection."""
    try:
        async with connection.begin_nested():
            yield
    except Exception as exc:
        if is_unavailable(exc):
            raise
        detected.failed += 1
        log.error("searching %s for crossings failed", what, exc_info=exc)


def _watched(budget: Budget, now: datetime) -> list[Window]:
    """The budget's current window and the one before it, if that ended after it was made: a
    late event may still cross a threshold in the window just gone."""
    current = budget.window(now)
    before = window_before(budget.period, budget.tz, current)
    if before is None or before.end is None or before.end <= budget.created_at:
        return [current]
    return [before, current]


async def _budget_window(
    connection: AsyncConnection,
    budget: Budget,
    window: Window,
    until: datetime,
    now: datetime,
    detected: Detected,
) -> None:
    if window.start >= until:
        return
    thresholds = budget.thresholds
    progress = await find_crossings(
        connection,
        budget.selection,
        measure=budget.metric,
        thresholds=[sought(budget.metric, threshold.amount) for threshold in thresholds],
        since=window.start,
        until=until if window.end is None else min(window.end, until),
    )
    subject = f"budget:{budget.id}:{format_rfc3339(window.start)}"
    for threshold, crossing in zip(thresholds, progress.crossings, strict=True):
        if crossing.crossed_at is None:
            continue
        body = {
            "type": BUDGET_CROSSED,
            "budget_id": budget.id,
            "tenant": budget.tenant,
            "metric": budget.metric,
            "limit": metric_text(budget.metric, budget.limit),
            "threshold": percent_json(threshold.percent),
            "amount": metric_text(budget.metric, threshold.amount),
            "window_start": format_rfc3339(window.start),
            "window_end": None if window.end is None else format_rfc3339(window.end),
            **_crossing_fields(crossing),
        }
        recorded = await record(
            connection,
            type=BUDGET_CROSSED,
            subject=subject,
            amount=threshold.amount,
            tenant=budget.tenant,
            budget_id=budget.id,
            body=body,
            now=now,
        )
        detected.add(None if recorded is None else recorded.created)
        if recorded is not None and recorded.created and budget.webhook_id is not None:
            await send_to(connection, recorded.id, [budget.webhook_id], now)


async def _launch(
    connection: AsyncConnection,
    launch: Launch,
    subscribed: list[str],
    until: datetime,
    now: datetime,
    detected: Detected,
) -> None:
    progress = await find_crossings(
        connection,
        Selection((), {"model": (launch.model,)}),
        measure=LAUNCH_METRIC,
        thresholds=DEFAULT_THRESHOLDS,
        since=launch.launched_at,
        until=until,
    )
    subject = f"launch:{launch.model}:{format_rfc3339(launch.launched_at)}"
    for crossing in progress.crossings:
        if crossing.crossed_at is None:
            continue
        body = {
            "type": LAUNCH_CROSSED,
            "model": launch.model,
            "launched_at": format_rfc3339(launch.launched_at),
            "metric": LAUNCH_METRIC,
            "amount": crossing.threshold,
            **_crossing_fields(crossing),
        }
        recorded = await record(
            connection,
            type=LAUNCH_CROSSED,
            subject=subject,
            amount=Decimal(crossing.threshold),
            tenant=None,
            budget_id=None,
            body=body,
            now=now,
        )
        detected.add(None if recorded is None else recorded.created)
        if recorded is not None and recorded.created:
            await send_to(connection, recorded.id, subscribed, now)


def _crossing_fields(crossing: Crossing) -> dict[str, Any]:
    assert crossing.crossed_at is not None
    return {
        "value_at_crossing": answered_sum(crossing.value_at_crossing),
        "crossed_at": format_rfc3339(crossing.crossed_at),
        "event_id": crossing.event_id,
    }


async def _subscribed(connection: AsyncConnection, event: str) -> list[str]:
    """The platform webhooks, not deleted, that receive `event`."""
    rows = await connection.execute(
        select(webhook.c.id).where(
            webhook.c.deleted_at.is_(None),
            webhook.c.tenant.is_(None),
            literal(event) == any_(webhook.c.events),
        )
    )
    return [row.id for row in rows]
