"""What is wrong with an event, in the house voice: pydantic's errors as `{field, message}`."""

from typing import cast

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from tokenpulse.errors import Problem, capped
from tokenpulse.ingest.decoded import DuplicateKeys, LongInteger
from tokenpulse.ingest.events import ATTRIBUTE_KEY_MAX, RULE, UsageEvent, abbreviate
from tokenpulse.text import echo, text_problem
from tokenpulse.validation_messages import UNKNOWN, house_message

_KEY = "[key]"
"""The last part of an error's location when a dict's key, not its value, is wrong."""


def event_problems(
    raw: dict[str, object], error: ValidationError | None, max_tokens: int
) -> list[Problem]:
    """Everything wrong with the decoded event `raw`: its repeated keys, then what validating it
    raised: the first MAX_LISTED_PROBLEMS, then a count of the rest."""
    problems: list[Problem] = []
    if isinstance(raw, DuplicateKeys):
        problems.extend(Problem(echo(key), "appears more than once") for key in raw.duplicated)
    attributes = raw.get("attributes")
    if isinstance(attributes, DuplicateKeys):
        problems.extend(
            Problem(f"attributes.{echo(key)}", "appears more than once")
            for key in attributes.duplicated
        )
    if error is not None:
        found = [
            problem
            for details in error.errors(include_url=False)
            for problem in _problems(details, raw, max_tokens)
        ]
        # Unknown fields first, as the event's own keys come before what is wrong inside them.
        unknown = [problem for problem in found if problem.message == UNKNOWN]
        problems += unknown + [problem for problem in found if problem.message != UNKNOWN]
    return capped(problems)


def _problems(details: ErrorDetails, raw: dict[str, object], max_tokens: int) -> list[Problem]:
    kind, location, value = details["type"], details["loc"], details["input"]
    context = details.get("ctx") or {}
    if kind == RULE and "problems" in context:
        return [Problem(field, message) for field, message in context["problems"]]
    if not location:
        # A key pydantic cannot even read as text (a lone surrogate): no field of ours.
        return [Problem(echo(key), UNKNOWN) for key in raw if key not in UsageEvent.model_fields]
    field = _field(location)
    if kind == RULE:
        return [Problem(field, context["message"])]
    key = location[-1] == _KEY
    if key and (problem := _unstorable(kind, value)) is not None:
        return [Problem(field, f"key {problem}")]
    top = len(location) == 1
    message = _message(kind, value, context, key=key, top=top, max_tokens=max_tokens)
    return [Problem(field, message)]


def _field(location: tuple[int | str, ...]) -> str | None:
    """`attributes.<key>` for an attribute, else the top-level field's name."""
    if not location:
        return None
    if location[0] == "attributes" and len(location) > 1:
        return f"attributes.{echo(str(location[1]), ATTRIBUTE_KEY_MAX)}"
    return echo(str(location[0]))


def _message(
    kind: str,
    value: object,
    context: dict[str, object],
    *,
    key: bool,
    top: bool,
    max_tokens: int,
) -> str:
    if key:
        return f"keys must be 1 to {ATTRIBUTE_KEY_MAX} characters"
    # null stands for a top-level field left out, which a required one may not be.
    if top and value is None and kind in ("string_type", "int_type"):
        return "is required"
    if isinstance(value, LongInteger) and kind not in ("missing", "extra_forbidden"):
        bound = "at least 0" if value.negative else f"at most {max_tokens:,}"
        return f"must be {bound}, got an integer of {value.digits} digits"
    if (problem := _unstorable(kind, value)) is not None:
        return problem
    if kind == "string_pattern_mismatch":
        return "must be printable ASCII characters without spaces"
    if kind == "greater_than_equal":
        return f"must be at least 0, got {abbreviate(cast(int, value))}"
    return house_message(kind, value, context)


def _unstorable(kind: str, value: object) -> str | None:
    """Why a string is text PostgreSQL cannot store, if that is what the error is about: the
    graver fault, before event_id's own pattern."""
    if kind == "string_unicode":
        return "must be valid Unicode (it holds a lone surrogate)"
    if kind == "string_pattern_mismatch":
        return text_problem(str(value))
    return None
