"""What a launch may be, however it is set: a model name ingest could have stored, going live no
more than a year ahead."""

from datetime import datetime, timedelta

LAUNCH_LEAD = timedelta(days=366)


def launched_at_problem(launched_at: datetime, now: datetime) -> str | None:
    """Why a launch cannot be set at `launched_at`, or None when it can."""
    if launched_at > now + LAUNCH_LEAD:
        return "must not lie more than a year ahead"
    return None
