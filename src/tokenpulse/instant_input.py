"""An instant a client names, in a query parameter, a body field or a command's option."""

from datetime import UTC, datetime

from tokenpulse.errors import InvalidParameters
from tokenpulse.instants import format_rfc3339, parse_rfc3339, rfc3339_problem

# Instants asked about lie well inside the years Python can count in, so that a range, a day in
# a time zone or a bucket after one never runs past them.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def instant(name: str, value: str | None) -> datetime | None:
    """The instant `value` names, or a 422 naming `name`."""
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
