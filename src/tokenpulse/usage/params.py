"""The query parameters the read endpoints share: group_by and the dimension filters, read only
for a caller whose key may read."""

from typing import Annotated

from fastapi import Depends, Query

from tokenpulse.auth import Caller, require
from tokenpulse.rollups.selection import Selection, parse_selection
from tokenpulse.scopes import Scope

Filter = Annotated[
    list[str] | None, Query(description="Keep only these values; repeat to allow several.")
]


async def filters(
    caller: Annotated[Caller, Depends(require(Scope.READ))],
    tenant: Filter = None,
    project: Filter = None,
    model: Filter = None,
    api_key_id: Filter = None,
) -> Selection:
    """The dimension filters, narrowed to the caller's tenant for a tenant-bound key."""
    given = {"tenant": tenant, "project": project, "model": model, "api_key_id": api_key_id}
    chosen = parse_selection(None, {name: v for name, v in given.items() if v is not None})
    return chosen.for_tenant(caller.tenant)


ReaderFilters = Annotated[Selection, Depends(filters)]
"""The filters of a caller whose key has the read scope: a route taking them needs that key."""


async def selection(
    filtered: ReaderFilters,
    group_by: Annotated[
        str | None,
        Query(description="Comma-separated subset of tenant, project, model, api_key_id."),
    ] = None,
) -> Selection:
    """The filters, and the dimensions to group by."""
    return Selection(parse_selection(group_by, {}).group_by, filtered.filters)


ReaderSelection = Annotated[Selection, Depends(selection)]
"""The filters and group_by of a caller whose key has the read scope."""
