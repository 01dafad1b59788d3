"""What a model name may be wherever one is named (a launch, a price): one ingest could have
stored."""

from tokenpulse.text import STRING_MAX, text_problem


def model_problem(model: str) -> str | None:
    """Why `model` cannot name a model, or None when it can."""
    if not 1 <= len(model) <= STRING_MAX:
        return f"must be 1 to {STRING_MAX} characters"
    return text_problem(model)
