"""User text: what PostgreSQL can store, and how to quote it back in an error safely."""

STRING_MAX = 128
"""Longest name or id, in characters: tenant, project, model, api_key_id, event_id."""


def echo(value: str, limit: int = STRING_MAX) -> str:
    """`value` made safe to quote back in an error: shortened, lone surrogates escaped."""
    shortened = value if len(value) <= limit else value[:limit] + "…"
    return shortened.encode("utf-8", "backslashreplace").decode("utf-8")


def text_problem(value: str) -> str | None:
    """Why a decoded string cannot be stored as text, or None when it can."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (it holds a lone surrogate)"
    return None


def storable(value: str) -> str:
    """`value`, if it can be stored as text; a pydantic validator (AfterValidator)."""
    if (problem := text_problem(value)) is not None:
        raise ValueError(problem)
    return value
