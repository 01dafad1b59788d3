"""`/v1/organization/costs`: tokenpulse's exact cost per day in the fields of OpenAI's costs
result, a line item being a model."""

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.openai_usage.dimensions import openai_selection
from tokenpulse.openai_usage.page_sums import page_groups
from tokenpulse.openai_usage.pages import Page, page_answer
from tokenpulse.rollups.selection import Selection

GROUPS = {"project_id": "project", "api_key_id": "api_key_id", "line_item": "model"}
"""The group_by fields tokenpulse has data for. A model's tokens are priced together, so a line
item is a model; `user_id` and `api_source` group nothing and answer null."""
FILTERS = {"project_ids": "project", "api_key_ids": "api_key_id", "line_items": "model"}


def costs_selection(
    organization: str, group_by: Iterable[str], filters: Mapping[str, Sequence[str] | None]
) -> Selection:
    return openai_selection(organization, group_by, filters, groups=GROUPS, filtered=FILTERS)


async def costs_page(
    connection: AsyncConnection, selection: Selection, page: Page, *, currency: str, most: int
) -> dict[str, Any]:
    """The page; a group none of whose models has a price in effect has no cost to list, and is
    left out. Amounts are Decimals, for the answer to write every digit of."""
    by_line_item = "model" in selection.group_by
    buckets = await page_groups(connection, selection, page.bounds, most=most)
    return page_answer(
        page,
        [
            [
                costs_result(group, currency, by_line_item=by_line_item)
                for group in groups
                if group["cost"] is not None
            ]
            for groups in buckets
        ],
    )


def costs_result(group: Mapping[str, Any], currency: str, *, by_line_item: bool) -> dict[str, Any]:
    """One priced group as OpenAI's result has it; grouped by line item, its quantity is the
    model's tokens, input and output."""
    return {
        "object": "organization.costs.result",
        "amount": {"value": Decimal(group["cost"]), "currency": currency},
        "line_item": group.get("model"),
        "project_id": group.get("project"),
        "api_key_id": group.get("api_key_id"),
        "user_id": None,
        "api_source": None,
        "quantity": group["total_tokens"] if by_line_item else None,
        "quantity_unit": "tokens" if by_line_item else None,
    }
