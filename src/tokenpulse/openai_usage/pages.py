"""Which buckets one page of an OpenAI-style read holds, the cursor to the page after it, and the
page as OpenAI answers it.

Buckets are whole UTC minutes, hours or days, as tokenpulse's rollups keep them: a read holds
every bucket that overlaps [start_time, end_time), so that a start_time inside a bucket counts
the whole of that bucket, and each bucket says which span it counted.
"""

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from tokenpulse.errors import InvalidParameters
from tokenpulse.instant_input import EARLIEST, LATEST
from tokenpulse.instants import ceil_to, floor_to
from tokenpulse.rollups.grains import DAY, HOUR, MINUTE

WIDTHS = {"1m": MINUTE.length, "1h": HOUR.length, "1d": DAY.length}


@dataclass(frozen=True)
class Limit:
    """How many buckets a page holds when `limit` is not given, and the most it may ask for."""

    default: int
    most: int


COMPLETIONS_LIMITS = {"1m": Limit(60, 1440), "1h": Limit(24, 168), "1d": Limit(7, 31)}
COSTS_LIMITS = {"1d": Limit(7, 180)}


def limits_text(limits: Mapping[str, Limit]) -> str:
    """`limits` as the API's description states them: "1 to 31 buckets for `1d` (default 7)"."""
    return ", ".join(
        f"1 to {limit.most:,} buckets for `{width}` (default {limit.default})"
        for width, limit in limits.items()
    )


_CURSOR_BYTES = 8
_FIRST_SECOND = int(EARLIEST.timestamp())
_LAST_SECOND = int(LATEST.timestamp())


@dataclass(frozen=True)
class Page:
    bounds: list[datetime]
    """Every bucket boundary of the page, from its first bucket's start to its last's end."""
    has_more: bool
    """Whether buckets of the range follow the page's last."""

    @property
    def next_page(self) -> str | None:
        return cursor(self.bounds[-1]) if self.has_more else None


def page_of(
    *,
    bucket_width: str,
    start_time: int,
    end_time: int | None,
    limit: int | None,
    page: str | None,
    limits: Mapping[str, Limit],
    now: datetime,
) -> Page:
    """The buckets of the range [start_time, end_time) (Unix seconds; `end_time` defaults to
    the end of the bucket that holds `now`) from the one `page` points to, at most `limit`."""
    length = WIDTHS[bucket_width]
    first = floor_to(_instant("start_time", start_time), length)
    if end_time is None:
        last = floor_to(now, length) + length
        if last <= first:
            raise InvalidParameters.of(
                "start_time", "must not be after now when end_time is left out"
            )
    else:
        if end_time <= start_time:
            raise InvalidParameters.of("end_time", "must be after start_time")
        last = ceil_to(_instant("end_time", end_time), length)
    count = _bucket_count(bucket_width, limit, limits)
    if page is not None:
        first = _page_start(page, first, last, length)
    bounds = [first]
    while len(bounds) <= count and bounds[-1] < last:
        bounds.append(bounds[-1] + length)
    return Page(bounds, has_more=bounds[-1] < last)


def page_answer(page: Page, results: Sequence[list[dict[str, Any]]]) -> dict[str, Any]:
    """The page of buckets as OpenAI answers it; `results`: those of each bucket."""
    seconds = [int(bound.timestamp()) for bound in page.bounds]
    return {
        "object": "page",
        "data": [
            {"object": "bucket", "start_time": start, "end_time": end, "results": bucket}
            for (start, end), bucket in zip(pairwise(seconds), results, strict=True)
        ],
        "has_more": page.has_more,
        "next_page": page.next_page,
    }


def cursor(start: datetime) -> str:
    """The opaque `next_page` of a page that starts at `start`."""
    packed = int(start.timestamp()).to_bytes(_CURSOR_BYTES, "big", signed=True)
    return base64.urlsafe_b64encode(packed).decode().rstrip("=")


def _page_start(page: str, first: datetime, last: datetime, length: timedelta) -> datetime:
    """The start of the page `page` points to, which must be a bucket of the range."""
    refusal = InvalidParameters.of(
        "page",
        "is not a next_page this endpoint answered for this start_time, end_time and bucket_width",
    )
    try:
        packed = base64.urlsafe_b64decode(page + "=" * (-len(page) % 4))
    except (binascii.Error, ValueError):
        raise refusal from None
    seconds = int.from_bytes(packed, "big", signed=True)
    if len(packed) != _CURSOR_BYTES or not _FIRST_SECOND <= seconds < _LAST_SECOND:
        raise refusal
    start = datetime.fromtimestamp(seconds, UTC)
    # Only the spelling this endpoint writes: base64 that decodes alike but reads otherwise is
    # not one of its cursors.
    if cursor(start) != page or not first <= start < last or floor_to(start, length) != start:
        raise refusal
    return start


def _bucket_count(bucket_width: str, limit: int | None, limits: Mapping[str, Limit]) -> int:
    allowed = limits[bucket_width]
    if limit is None:
        return allowed.default
    if not 1 <= limit <= allowed.most:
        raise InvalidParameters.of(
            "limit", f"must be 1 to {allowed.most} for bucket_width={bucket_width}, got {limit}"
        )
    return limit


def _instant(name: str, seconds: int) -> datetime:
    if not _FIRST_SECOND <= seconds < _LAST_SECOND:
        raise InvalidParameters.of(
            name,
            f"must be Unix seconds from {_FIRST_SECOND} to before {_LAST_SECOND} "
            f"(the year 9000), got {seconds}",
        )
    return datetime.fromtimestamp(seconds, UTC)
