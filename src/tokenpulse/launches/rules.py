"""What a launch may be, however it is set: a model name ingest could have stored, going live no
more than a year ahead."""

from datetime import datetime, timedelta

from tokenpulse.text import STRING_MAX, text_problem

LAUNCH_LEAD = timedelta(days=366)


def model_problem(model: str) -> str | None:
    """Why `model` cannot name a launch, or None when it can."""
    if not 1 <= len(model) <= STRING_MAX:
        return f"must be 1 to {STRING_MAX} characters"
    return text_problem(model)


def launched_at_problem(launched_at: datetime, now: datetime) -> str | None:
    """Why a launch cannot be set at `launched_at`, or None when it can."""
    if launched_at > now + LAUNCH_LEAD:
        return "must not lie more than a year ahead"
    return None
