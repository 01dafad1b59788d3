"""The shapes of budget answers, as the OpenAPI document describes them."""

from tokenpulse.openapi import Shape

Amount = int | str
"""Of a measure, a count; of cost, an exact decimal string of the currency."""


class BudgetAnswer(Shape):
    id: str
    tenant: str
    project: str | None
    model: str | None
    api_key_id: str | None
    metric: str
    limit: Amount
    window: str
    tz: str
    since: str | None
    thresholds: list[int | float]
    amounts: list[Amount]
    webhook_id: str | None
    created_at: str
    deleted_at: str | None


class BudgetsAnswer(Shape):
    budgets: list[BudgetAnswer]


class CheckedBudget(Shape):
    id: str
    metric: str
    limit: Amount
    used: Amount | None
    """None for cost while nothing counted is priced."""
    remaining: Amount | None
    exceeded: bool
    window: str
    window_start: str
    window_end: str | None
    project: str | None
    model: str | None
    api_key_id: str | None


class CheckAnswer(Shape):
    tenant: str
    exceeded: bool
    """Whether any budget that applies is."""
    budgets: list[CheckedBudget]
