"""A budget's windows: a day, week or month from midnight in its time zone, or one from an
instant on."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

PERIODS = ("day", "week", "month", "since")


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime | None
    """None: the window of a `since` budget, which never ends."""


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of `day` in `zone`. Where a change of offset skips midnight, a local
    time that never was is read at the offset before the change: the instant of the change."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _period_start(period: str, day: date) -> date:
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return day


def _next_start(period: str, start: date) -> date:
    if period == "week":
        return start + timedelta(days=7)
    if period == "month":
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return start + timedelta(days=1)


def window_at(period: str, tz: str, since: datetime | None, at: datetime) -> Window:
    """The window of a budget of `period` in zone `tz` that holds the instant `at`."""
    if period == "since":
        assert since is not None
        return Window(since, None)
    zone = ZoneInfo(tz)
    first = _period_start(period, at.astimezone(zone).date())
    start = _midnight(first, zone)
    if start > at:
        # Only where a zone's day begins after midnight (a change of offset at 00:00).
        first = _period_start(period, first - timedelta(days=1))
        start = _midnight(first, zone)
    return Window(start, _midnight(_next_start(period, first), zone))


def window_before(period: str, tz: str, window: Window) -> Window | None:
    """The window just before `window`; None for a `since` budget, which has one."""
    if period == "since":
        return None
    return window_at(period, tz, None, window.start - timedelta(microseconds=1))
