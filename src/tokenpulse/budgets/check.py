"""`/v1/budgets/check`: for a call about to be made, every budget that applies, and how much of it
is used, exactly."""

from collections import defaultdict
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.budgets.rules import metric_text
from tokenpulse.budgets.store import DIMENSIONS, Budget, applying_budgets
from tokenpulse.budgets.windows import Window
from tokenpulse.decimals import EXACT
from tokenpulse.instants import format_rfc3339
from tokenpulse.rollups.costs import COST
from tokenpulse.rollups.cover import Span
from tokenpulse.rollups.exact import exact_totals


async def check_budgets(
    connection: AsyncConnection,
    tenant: str,
    call: dict[str, str | None],
    *,
    now: datetime,
    until: datetime,
) -> dict[str, Any]:
    """`until`: past every stored event. Run it in one REPEATABLE READ transaction."""
    budgets = await applying_budgets(connection, tenant, call)
    windows = {budget.id: budget.window(now) for budget in budgets}
    spans: dict[str, Span] = {}
    for budget in budgets:
        window = windows[budget.id]
        end = until if window.end is None else min(window.end, until)
        # A window that starts later than anything stored (since an instant ahead) has used 0.
        spans[budget.id] = (window.start, max(window.start, end))
    # Budgets of one selection are summed in one read, however many windows they have.
    by_selection: dict[Any, list[Budget]] = defaultdict(list)
    for budget in budgets:
        by_selection[tuple(getattr(budget, name) for name in DIMENSIONS)].append(budget)
    used: dict[str, Decimal | None] = {}
    for alike in by_selection.values():
        totals = await exact_totals(
            connection,
            alike[0].selection,
            [spans[b.id] for b in alike],
            priced=any(b.metric == COST for b in alike),
        )
        for budget, sums in zip(alike, totals, strict=True):
            value = sums[budget.metric]
            used[budget.id] = None if value is None else Decimal(value)
    checked = [_checked(budget, used[budget.id], windows[budget.id]) for budget in budgets]
    return {
        "tenant": tenant,
        "exceeded": any(each["exceeded"] for each in checked),
        "budgets": checked,
    }


def _checked(budget: Budget, used: Decimal | None, window: Window) -> dict[str, Any]:
    with localcontext(EXACT):
        remaining = None if used is None else max(budget.limit - used, Decimal(0))
    return {
        "id": budget.id,
        "metric": budget.metric,
        "limit": metric_text(budget.metric, budget.limit),
        "used": None if used is None else metric_text(budget.metric, used),
        "remaining": None if remaining is None else metric_text(budget.metric, remaining),
        "exceeded": used is not None and used >= budget.limit,
        "window": budget.period,
        "window_start": format_rfc3339(window.start),
        "window_end": None if window.end is None else format_rfc3339(window.end),
        **{name: getattr(budget, name) for name in DIMENSIONS},
    }
