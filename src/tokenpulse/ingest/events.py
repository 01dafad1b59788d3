"""What a usage event is, and the rules that turn a decoded JSON object into one, or into errors."""

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tokenpulse.errors import Problem
from tokenpulse.instants import parse_rfc3339, rfc3339_problem
from tokenpulse.settings import Settings
from tokenpulse.text import STRING_MAX, echo, text_problem

ATTRIBUTES_MAX_KEYS = 16
ATTRIBUTE_KEY_MAX = 64
ATTRIBUTE_VALUE_MAX = 256
DEFAULT_PROJECT = "default"
MAX_ERRORS_PER_EVENT = 20

COUNT_FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens")
KNOWN_FIELDS = frozenset(
    {"event_id", "occurred_at", "tenant", "project", "model", "api_key_id", "attributes"}
    | set(COUNT_FIELDS)
)

EVENT_ID = re.compile(r"[\x21-\x7e]{1,128}")


@dataclass(frozen=True, slots=True)
class Event:
    tenant: str
    event_id: str
    project: str
    model: str
    api_key_id: str | None
    occurred_at: datetime
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    attributes: dict[str, str] | None


@dataclass(frozen=True, slots=True)
class EventRules:
    """The configurable limits an event is checked against."""

    max_tokens: int
    max_age: timedelta
    max_lead: timedelta

    @classmethod
    def of(cls, settings: Settings) -> "EventRules":
        return cls(
            max_tokens=settings.max_tokens_per_count,
            max_age=settings.max_event_age,
            max_lead=settings.max_event_lead,
        )


class DuplicateKeys(dict[str, Any]):
    """A decoded JSON object in which some key appeared more than once."""

    def __init__(self, pairs: list[tuple[str, Any]], duplicated: list[str]) -> None:
        super().__init__(pairs)
        self.duplicated = duplicated


def object_from_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook` for `json.loads` that remembers duplicated keys, not just the last."""
    decoded = dict(pairs)
    if len(decoded) == len(pairs):
        return decoded
    counts = Counter(key for key, _ in pairs)
    return DuplicateKeys(pairs, [key for key, count in counts.items() if count > 1])


@dataclass(frozen=True, slots=True)
class LongInteger:
    """A JSON integer with more digits than Python converts (`sys.get_int_max_str_digits`)."""

    digits: int
    negative: bool


def integer_from_text(text: str) -> int | LongInteger:
    """`parse_int` for `json.loads`: an over-long integer is a bad count, not a bad body."""
    try:
        return int(text)
    except ValueError:
        return LongInteger(digits=len(text.lstrip("-")), negative=text.startswith("-"))


def describe(value: object) -> str:
    """The JSON type of a decoded value, as an error message names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | LongInteger):
        return "an integer"
    if isinstance(value, float):
        return "a number with a decimal point or exponent"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def validate_event(
    raw: object, *, key_tenant: str | None, rules: EventRules, now: datetime
) -> Event | list[Problem]:
    """Check one decoded event against every rule; return the event or all that is wrong with it.

    `key_tenant` is the tenant the caller's key is bound to, or None for a platform key.
    """
    if not isinstance(raw, dict):
        return [Problem(None, f"an event must be a JSON object, got {describe(raw)}")]
    errors: list[Problem] = []
    if isinstance(raw, DuplicateKeys):
        errors.extend(Problem(echo(key), "appears more than once") for key in raw.duplicated)
    errors.extend(
        Problem(echo(key), "is not a known field") for key in raw if key not in KNOWN_FIELDS
    )

    event_id = _event_id(raw.get("event_id"), errors)
    occurred_at = _occurred_at(raw.get("occurred_at"), rules, now, errors)
    tenant = _tenant(raw.get("tenant"), key_tenant, errors)
    model = _string("model", raw.get("model"), STRING_MAX, errors, required=True)
    project = _string("project", raw.get("project"), STRING_MAX, errors)
    api_key_id = _string("api_key_id", raw.get("api_key_id"), STRING_MAX, errors)
    counts = {
        name: _count(name, raw.get(name), rules.max_tokens, errors, required=index < 2)
        for index, name in enumerate(COUNT_FIELDS)
    }
    _part_of("cached_input_tokens", "input_tokens", counts, errors)
    _part_of("reasoning_tokens", "output_tokens", counts, errors)
    attributes = _attributes(raw.get("attributes"), errors)

    if len(errors) > MAX_ERRORS_PER_EVENT:
        unlisted = len(errors) - MAX_ERRORS_PER_EVENT
        # An answer must not grow far beyond the body that asked for it.
        return [*errors[:MAX_ERRORS_PER_EVENT], Problem(None, f"and {unlisted:,} more errors")]
    if errors:
        return errors
    assert event_id is not None
    assert occurred_at is not None
    assert tenant is not None
    assert model is not None
    return Event(
        tenant=tenant,
        event_id=event_id,
        project=project if project is not None else DEFAULT_PROJECT,
        model=model,
        api_key_id=api_key_id,
        occurred_at=occurred_at,
        input_tokens=counts["input_tokens"] or 0,
        cached_input_tokens=counts["cached_input_tokens"] or 0,
        output_tokens=counts["output_tokens"] or 0,
        reasoning_tokens=counts["reasoning_tokens"] or 0,
        attributes=attributes,
    )


def _string(
    field: str, value: object, max_length: int, errors: list[Problem], *, required: bool = False
) -> str | None:
    if value is None:
        if required:
            errors.append(Problem(field, "is required"))
        return None
    if not isinstance(value, str):
        errors.append(Problem(field, f"must be a string, got {describe(value)}"))
        return None
    if not value:
        errors.append(Problem(field, "must not be empty"))
        return None
    if len(value) > max_length:
        errors.append(Problem(field, f"must be at most {max_length} characters, got {len(value)}"))
        return None
    problem = text_problem(value)
    if problem is not None:
        errors.append(Problem(field, problem))
        return None
    return value


def _event_id(value: object, errors: list[Problem]) -> str | None:
    event_id = _string("event_id", value, STRING_MAX, errors, required=True)
    if event_id is not None and not EVENT_ID.fullmatch(event_id):
        errors.append(Problem("event_id", "must be printable ASCII characters without spaces"))
        return None
    return event_id


def _tenant(value: object, key_tenant: str | None, errors: list[Problem]) -> str | None:
    if key_tenant is None:
        return _string("tenant", value, STRING_MAX, errors, required=True)
    if value is None:
        return key_tenant
    tenant = _string("tenant", value, STRING_MAX, errors)
    if tenant is not None and tenant != key_tenant:
        errors.append(Problem("tenant", "names another tenant than the one the key is bound to"))
        return None
    return tenant


def _count(
    field: str, value: object, maximum: int, errors: list[Problem], *, required: bool
) -> int | None:
    if value is None:
        if required:
            errors.append(Problem(field, "is required"))
        return None
    if isinstance(value, LongInteger):
        bound = "at least 0" if value.negative else f"at most {maximum:,}"
        errors.append(Problem(field, f"must be {bound}, got an integer of {value.digits} digits"))
        return None
    # bool is a subclass of int in Python, and `true` is not a count.
    if not isinstance(value, int) or isinstance(value, bool):
        errors.append(Problem(field, f"must be an integer, got {describe(value)}"))
        return None
    if value < 0:
        errors.append(Problem(field, f"must be at least 0, got {_abbreviate(value)}"))
        return None
    if value > maximum:
        errors.append(Problem(field, f"must be at most {maximum:,}, got {_abbreviate(value)}"))
        return None
    return value


def _abbreviate(value: int) -> str:
    if value.bit_length() > 200:
        return f"an integer of {len(str(abs(value)))} digits"
    return str(value)


def _part_of(part: str, whole: str, counts: dict[str, int | None], errors: list[Problem]) -> None:
    part_value, whole_value = counts[part], counts[whole]
    if part_value is not None and whole_value is not None and part_value > whole_value:
        errors.append(
            Problem(part, f"must not exceed {whole} ({whole_value:,}), got {part_value:,}")
        )


def _occurred_at(
    value: object, rules: EventRules, now: datetime, errors: list[Problem]
) -> datetime | None:
    field = "occurred_at"
    if value is None:
        errors.append(Problem(field, "is required"))
        return None
    if not isinstance(value, str):
        errors.append(Problem(field, f"must be an RFC 3339 string, got {describe(value)}"))
        return None
    instant = parse_rfc3339(value)
    if instant is None:
        errors.append(Problem(field, rfc3339_problem(value)))
        return None
    if instant < now - rules.max_age:
        errors.append(Problem(field, f"is older than the accepted {_span(rules.max_age)}"))
        return None
    if instant > now + rules.max_lead:
        errors.append(Problem(field, f"is more than {_span(rules.max_lead)} in the future"))
        return None
    return instant


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds % length == 0 and seconds >= length:
            count = seconds // length
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def _attributes(value: object, errors: list[Problem]) -> dict[str, str] | None:
    field = "attributes"
    if value is None:
        return None
    if not isinstance(value, dict):
        errors.append(Problem(field, f"must be an object, got {describe(value)}"))
        return None
    before = len(errors)
    if isinstance(value, DuplicateKeys):
        errors.extend(
            Problem(f"{field}.{echo(key)}", "appears more than once") for key in value.duplicated
        )
    if len(value) > ATTRIBUTES_MAX_KEYS:
        errors.append(
            Problem(field, f"must have at most {ATTRIBUTES_MAX_KEYS} keys, got {len(value)}")
        )
    for key, item in value.items():
        name = f"{field}.{echo(key, ATTRIBUTE_KEY_MAX)}"
        if not key or len(key) > ATTRIBUTE_KEY_MAX:
            errors.append(Problem(name, f"keys must be 1 to {ATTRIBUTE_KEY_MAX} characters"))
        elif (problem := text_problem(key)) is not None:
            errors.append(Problem(name, f"key {problem}"))
        if not isinstance(item, str):
            errors.append(Problem(name, f"must be a string, got {describe(item)}"))
        elif len(item) > ATTRIBUTE_VALUE_MAX:
            errors.append(
                Problem(name, f"must be at most {ATTRIBUTE_VALUE_MAX} characters, got {len(item)}")
            )
        elif (problem := text_problem(item)) is not None:
            errors.append(Problem(name, problem))
    return value if len(errors) == before else None
