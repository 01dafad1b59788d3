"""Query parameters the read endpoints share: instants, group_by and the dimension filters."""

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Query

from tokenpulse.auth import Caller, require
from tokenpulse.errors import InvalidParameters
from tokenpulse.instants import format_rfc3339, parse_rfc3339, rfc3339_problem
from tokenpulse.keys.scopes import Scope
from tokenpulse.rollups.selection import Selection, parse_selection

# Instants asked about lie well inside the years Python can count in, so that a range, a day in
# a time zone or a bucket after one never runs past them.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)

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


async def selection(
    filtered: Annotated[Selection, Depends(filters)],
    group_by: Annotated[
        str | None,
        Query(description="Comma-separated subset of tenant, project, model, api_key_id."),
    ] = None,
) -> Selection:
    """The filters, and the dimensions to group by."""
    return Selection(parse_selection(group_by, {}).group_by, filtered.filters)


def instant_query(description: str) -> Any:
    """A query parameter that is an RFC 3339 instant (read with `instant`)."""
    return Query(description=description, json_schema_extra={"format": "date-time"})


def instant(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    # An unescaped '+' in a query string arrives as a space: "…T00:00:00 01:00".
    if len(value) > 6 and value[-6] == " " and value[-3] == ":":
        value = value[:-6] + "+" + value[-5:]
    parsed = parse_rfc3339(value)
    if parsed is None:
        raise InvalidParameters.of(name, rfc3339_problem(value))
    if not EARLIEST <= parsed < LATEST:
        raise InvalidParameters.of(
            name, f"must lie from {format_rfc3339(EARLIEST)} to before {format_rfc3339(LATEST)}"
        )
    return parsed
