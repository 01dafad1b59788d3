"""The sums of each bucket of a page, read from the rollups and priced as `/v1/usage` reads its
buckets, so that both answer the same figures."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.errors import InvalidParameters
from tokenpulse.rollups.costs import priced_cover
from tokenpulse.rollups.selection import Selection
from tokenpulse.rollups.sums import TooManyGroups, sum_rollups


async def bucket_sums(
    connection: AsyncConnection, selection: Selection, bounds: Sequence[datetime], *, most: int
) -> list[list[dict[str, Any]]]:
    """The groups of each bucket between `bounds`, each with the seven measures and the cost;
    at most `most` over all the buckets."""
    spans, priced = await priced_cover(connection, selection, bounds)
    try:
        groups = await sum_rollups(connection, selection, spans, bounds, most=most, priced=priced)
    except TooManyGroups as refused:
        raise InvalidParameters.of(
            "group_by",
            f"the page would hold more than {refused.most:,} results over its buckets "
            "(TOKENPULSE_MAX_SERIES_RESULTS); narrow it with filters, group by fewer fields, or "
            "ask for fewer buckets a page with limit",
        ) from None
    buckets: list[list[dict[str, Any]]] = [[] for _ in bounds[:-1]]
    for bucket, group in groups:
        buckets[bucket].append(group)
    return buckets
