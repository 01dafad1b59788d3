"""Instants on the wire: parsing and writing RFC 3339, and rounding to whole minutes or hours."""

import re
from datetime import UTC, datetime, timedelta, timezone

# RFC 3339 date-time: 'T' (or 't' or a space) between date and time, seconds required, and an
# offset that is 'Z' or ±hh:mm. Anything looser is ambiguous about which instant it names.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_WITHOUT_OFFSET = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_rfc3339(value: str) -> datetime | None:
    """The UTC instant an RFC 3339 date-time names, to the microsecond (finer digits dropped)."""
    match = _RFC3339.fullmatch(value)
    if match is None:
        return None
    if value[10] == "T" and value[-1] != "z":
        # The common spelling, which datetime parses natively and several times faster; what
        # it refuses (a 30 February, an hour 24, an offset of 24 hours) is no instant either.
        try:
            return datetime.fromisoformat(value).astimezone(UTC)
        except (ValueError, OverflowError):
            return None
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    if zulu:
        offset = UTC
    else:
        if int(off_h) > 23 or int(off_m) > 59:
            return None
        delta = timedelta(hours=int(off_h), minutes=int(off_m))
        offset = timezone(-delta if sign == "-" else delta)
    try:
        local = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "0").ljust(6, "0")[:6]),
            tzinfo=offset,
        )
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def rfc3339_problem(value: str) -> str:
    """Why `value`, which `parse_rfc3339` refused, is not an RFC 3339 instant."""
    if _WITHOUT_OFFSET.fullmatch(value):
        return "must include a UTC offset ('Z' or ±hh:mm)"
    return "must be an RFC 3339 timestamp such as 2026-11-27T09:00:00Z"


def format_rfc3339(instant: datetime) -> str:
    """`instant` in RFC 3339: UTC as 'Z', other offsets as ±hh:mm; microseconds only if any."""
    text = instant.isoformat(timespec="microseconds" if instant.microsecond else "seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def floor_to(instant: datetime, length: timedelta) -> datetime:
    """The last instant at or before `instant` that is a whole number of `length`s after 1970."""
    return instant - (instant - _EPOCH) % length


def ceil_to(instant: datetime, length: timedelta) -> datetime:
    floored = floor_to(instant, length)
    return floored if floored == instant else floored + length
