"""The sources of "now", passed in from the composition root so that tests can set the time:
the wall clock for instants, the monotonic one for durations, deadlines and expiries."""

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]

Monotonic = Callable[[], float]
"""Seconds from an arbitrary start, never going back (`time.monotonic`)."""


def system_clock() -> datetime:
    return datetime.now(UTC)
