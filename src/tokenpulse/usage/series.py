"""`/v1/usage`: the seven measures per group in consecutive buckets of a minute, an hour, a day."""

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.errors import InvalidParameters
from tokenpulse.instants import floor_to, format_rfc3339
from tokenpulse.rollups.grains import DAY, HOUR, MINUTE
from tokenpulse.rollups.selection import Selection
from tokenpulse.rollups.sums import TooManyGroups, groups_by_bucket

BUCKET_GRAINS = {"1m": MINUTE, "1h": HOUR, "1d": DAY}
MAX_BUCKETS = 1440


class Buckets:
    """Bucket boundaries: whole UTC minutes or hours, or local midnights in `zone` for days."""

    def __init__(self, size: str, zone: ZoneInfo) -> None:
        self.size = size
        self.zone = zone
        self._length = BUCKET_GRAINS[size].length

    def floor(self, instant: datetime) -> datetime:
        """The start of the bucket that holds `instant`."""
        if self.size != "1d":
            return floor_to(instant, self._length)
        day = instant.astimezone(self.zone).date()
        start = self._midnight(day)
        return start if start <= instant else self._midnight(day - timedelta(days=1))

    def next(self, boundary: datetime) -> datetime:
        if self.size != "1d":
            return boundary + self._length
        return self._midnight(boundary.astimezone(self.zone).date() + timedelta(days=1))

    def render(self, boundary: datetime) -> str:
        """Day boundaries carry the zone's offset, so that they read as local midnights."""
        return format_rfc3339(boundary.astimezone(self.zone) if self.size == "1d" else boundary)

    def _midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(), self.zone).astimezone(UTC)

    def check_boundary(self, name: str, instant: datetime) -> None:
        floor = self.floor(instant)
        if floor == instant:
            if instant.second or instant.microsecond:
                # Only zones with historical offsets in seconds (local mean time) get here.
                raise InvalidParameters.of(
                    name, f"the {self.size} boundary is not a whole minute in this tz"
                )
            return
        following = self.next(floor)
        nearest = floor if instant - floor <= following - instant else following
        where = (
            f"midnight in {self.zone.key}"
            if self.size == "1d"
            else "a whole UTC " + ("minute" if self.size == "1m" else "hour")
        )
        raise InvalidParameters.of(
            name,
            f"must lie on a {self.size} bucket boundary ({where}); "
            f"the nearest is {self.render(nearest)}",
        )

    def between(self, start: datetime, end: datetime) -> list[datetime]:
        """Every boundary from `start` to `end`, both included."""
        bounds = [start]
        while bounds[-1] < end:
            if len(bounds) > MAX_BUCKETS:
                raise InvalidParameters.of(
                    "end", f"the range holds more than {MAX_BUCKETS:,} buckets"
                )
            bounds.append(self.next(bounds[-1]))
        return bounds


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise InvalidParameters.of("tz", f"{name!r} is not an IANA time zone") from None


async def usage_series(
    connection: AsyncConnection,
    selection: Selection,
    *,
    buckets: Buckets,
    start: datetime,
    end: datetime | None,
    now: datetime,
    max_results: int,
) -> dict[str, Any]:
    """Every bucket of [start, end) in order, empty ones included. `end` defaults to the end
    of the bucket that holds `now`; at most `max_results` results over all the buckets."""
    buckets.check_boundary("start", start)
    if end is None:
        end = buckets.next(buckets.floor(now))
        if end <= start:
            raise InvalidParameters.of(
                "start", f"must be before the end of the current bucket, {buckets.render(end)}"
            )
    else:
        buckets.check_boundary("end", end)
        if end <= start:
            raise InvalidParameters.of("end", "must be after start")
    bounds = buckets.between(start, end)
    try:
        results = await groups_by_bucket(connection, selection, bounds, most=max_results)
    except TooManyGroups as refused:
        raise InvalidParameters.of(
            "group_by",
            f"the answer would hold more than {refused.most:,} results over its buckets "
            "(TOKENPULSE_MAX_SERIES_RESULTS); narrow it with filters (tenant, project, model, "
            "api_key_id), group by fewer dimensions, or ask for a shorter range or larger "
            "buckets",
        ) from None
    rendered = [buckets.render(bound) for bound in bounds]
    return {
        "bucket": buckets.size,
        "start": buckets.render(start),
        "end": buckets.render(end),
        "data": [
            {"start": lo, "end": hi, "results": bucket_results}
            for lo, hi, bucket_results in zip(rendered, rendered[1:], results, strict=False)
        ],
    }
