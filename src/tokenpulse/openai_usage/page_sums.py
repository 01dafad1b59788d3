"""The sums of each bucket of a page, read from the rollups and priced as `/v1/usage` reads its
buckets, so that both answer the same figures."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.errors import InvalidParameters
from tokenpulse.rollups.selection import Selection
from tokenpulse.rollups.sums import TooManyGroups, groups_by_bucket


async def page_groups(
    connection: AsyncConnection, selection: Selection, bounds: Sequence[datetime], *, most: int
) -> list[list[dict[str, Any]]]:
    """The groups of each bucket between `bounds`, each with the seven measures and the cost;
    at most `most` over all the buckets."""
    try:
        return await groups_by_bucket(connection, selection, bounds, most=most)
    except TooManyGroups as refused:
        raise InvalidParameters.of(
            "group_by",
            f"the page would hold more than {refused.most:,} results over its buckets "
            "(TOKENPULSE_MAX_SERIES_RESULTS); narrow it with filters, group by fewer fields, or "
            "ask for fewer buckets a page with limit",
        ) from None
