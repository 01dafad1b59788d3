"""Budgets in the database."""

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.budgets.rules import Threshold, metric_text, percent_json, thresholds_of
from tokenpulse.budgets.windows import Window, window_at
from tokenpulse.instants import format_rfc3339
from tokenpulse.rollups.selection import Selection
from tokenpulse.tables import budget, delivery, notification
from tokenpulse.webhooks.store import cancel_pending

BUDGET_ID = re.compile(r"bud_[0-9a-f]{16}")

DIMENSIONS = ("project", "model", "api_key_id")
"""What a budget may narrow its tenant's usage to, as the aggregates' filters do."""


@dataclass(frozen=True)
class Budget:
    id: str
    tenant: str
    project: str | None
    model: str | None
    api_key_id: str | None
    metric: str
    limit: Decimal
    period: str
    tz: str
    since: datetime | None
    percents: tuple[Decimal, ...]
    amounts: tuple[Decimal, ...]
    webhook_id: str | None
    created_at: datetime
    deleted_at: datetime | None = None

    @property
    def selection(self) -> Selection:
        filters = {"tenant": (self.tenant,)}
        for name in DIMENSIONS:
            if (value := getattr(self, name)) is not None:
                filters[name] = (value,)
        return Selection((), filters)

    @property
    def thresholds(self) -> list[Threshold]:
        return thresholds_of(self.metric, self.limit, list(self.percents), list(self.amounts))

    def window(self, at: datetime) -> Window:
        return window_at(self.period, self.tz, self.since, at)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            **{name: getattr(self, name) for name in DIMENSIONS},
            "metric": self.metric,
            "limit": metric_text(self.metric, self.limit),
            "window": self.period,
            "tz": self.tz,
            "since": None if self.since is None else format_rfc3339(self.since),
            "thresholds": [percent_json(percent) for percent in self.percents],
            "amounts": [metric_text(self.metric, amount) for amount in self.amounts],
            "webhook_id": self.webhook_id,
            "created_at": format_rfc3339(self.created_at),
            "deleted_at": None if self.deleted_at is None else format_rfc3339(self.deleted_at),
        }


_COLUMNS = (
    budget.c.id,
    budget.c.tenant,
    budget.c.project,
    budget.c.model,
    budget.c.api_key_id,
    budget.c.metric,
    budget.c.limit_value,
    budget.c.period,
    budget.c.tz,
    budget.c.since,
    budget.c.thresholds,
    budget.c.amounts,
    budget.c.webhook_id,
    budget.c.created_at,
    budget.c.deleted_at,
)


def _budget(row: Row[*tuple[Any, ...]]) -> Budget:
    fields = row._asdict()
    fields["limit"] = fields.pop("limit_value")
    fields["percents"] = tuple(fields.pop("thresholds"))
    fields["amounts"] = tuple(fields["amounts"])
    return Budget(**fields)


async def create_budget(connection: AsyncConnection, draft: Budget) -> Budget:
    """Store `draft` under a new id."""
    made = Budget(**{**draft.__dict__, "id": f"bud_{secrets.token_hex(8)}"})
    await connection.execute(
        budget.insert().values(
            id=made.id,
            tenant=made.tenant,
            project=made.project,
            model=made.model,
            api_key_id=made.api_key_id,
            metric=made.metric,
            limit_value=made.limit,
            period=made.period,
            tz=made.tz,
            since=made.since,
            thresholds=list(made.percents),
            amounts=list(made.amounts),
            webhook_id=made.webhook_id,
            created_at=made.created_at,
        )
    )
    return made


async def list_budgets(connection: AsyncConnection, *, tenant: str | None = None) -> list[Budget]:
    """The budgets not deleted, of `tenant` or of every tenant, oldest first."""
    statement = select(*_COLUMNS).where(budget.c.deleted_at.is_(None))
    if tenant is not None:
        statement = statement.where(budget.c.tenant == tenant)
    rows = await connection.execute(statement.order_by(budget.c.created_at, budget.c.id))
    return [_budget(row) for row in rows]


async def applying_budgets(
    connection: AsyncConnection, tenant: str, call: dict[str, str | None]
) -> list[Budget]:
    """The tenant's budgets that apply to a call: each dimension a budget names is the call's."""
    statement = select(*_COLUMNS).where(budget.c.deleted_at.is_(None), budget.c.tenant == tenant)
    for name in DIMENSIONS:
        column = budget.c[name]
        value = call.get(name)
        statement = statement.where(
            column.is_(None) if value is None else (column.is_(None) | (column == value))
        )
    rows = await connection.execute(statement.order_by(budget.c.created_at, budget.c.id))
    return [_budget(row) for row in rows]


async def delete_budget(
    connection: AsyncConnection, budget_id: str, *, tenant: str | None, now: datetime
) -> Budget | None:
    """Delete the budget (of `tenant`, when given): its notifications stop, and those not yet
    delivered are cancelled; the budget that was, or None if there is no such budget."""
    statement = update(budget).where(budget.c.id == budget_id, budget.c.deleted_at.is_(None))
    if tenant is not None:
        statement = statement.where(budget.c.tenant == tenant)
    row = (
        await connection.execute(statement.values(deleted_at=now).returning(*_COLUMNS))
    ).one_or_none()
    if row is None:
        return None
    await cancel_pending(
        connection,
        delivery.c.notification_id == notification.c.id,
        notification.c.budget_id == budget_id,
    )
    return _budget(row)
