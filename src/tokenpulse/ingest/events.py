"""What a usage event is: one pydantic model that validates it and documents it, with the rules
no type can state (the accepted window, the key's tenant, parts within wholes, storable text)
checked by validators that get `now` and the key through the validation context."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Self, cast

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tokenpulse.ingest.decoded import describe
from tokenpulse.instants import parse_rfc3339, rfc3339_problem
from tokenpulse.settings import Settings
from tokenpulse.text import STRING_MAX

ATTRIBUTES_MAX_KEYS = 16
ATTRIBUTE_KEY_MAX = 64
ATTRIBUTE_VALUE_MAX = 256
DEFAULT_PROJECT = "default"
EVENT_ID_PATTERN = r"^[\x21-\x7e]+$"
"""Printable ASCII, no spaces."""

PARTS = (
    (("cached_input_tokens", "cache_write_input_tokens"), "input_tokens"),
    (("reasoning_tokens",), "output_tokens"),
)
"""Counts that are parts of another: each part, and the sum of them, at most the whole."""

RULE = "tokenpulse"
"""The pydantic error type of every rule stated here: its context holds the house message."""

_DEFAULTS = {name: field.default for name, field in Settings.model_fields.items()}


@dataclass(frozen=True, slots=True)
class Event:
    """An event that passed every rule, with its defaults filled in: what is stored."""

    tenant: str
    event_id: str
    project: str
    model: str
    api_key_id: str | None
    occurred_at: datetime
    input_tokens: int
    cached_input_tokens: int
    cache_write_input_tokens: int
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


@dataclass(frozen=True, slots=True)
class Checking:
    """What checking an event needs beside its body: pydantic's validation context."""

    rules: EventRules
    now: datetime
    key_tenant: str | None
    """The tenant the caller's key is bound to; None for a platform key."""


def rule_error(message: str) -> PydanticCustomError:
    # The message travels in the context: a template would read braces in it as placeholders.
    return PydanticCustomError(RULE, "{message}", {"message": message})


def _instant(value: object, info: ValidationInfo) -> object:
    """An RFC 3339 string as the instant it names, within the accepted window around now."""
    if value is None:
        raise rule_error("is required")
    if not isinstance(value, str):
        raise rule_error(f"must be an RFC 3339 string, got {describe(value)}")
    instant = parse_rfc3339(value)
    if instant is None:
        raise rule_error(rfc3339_problem(value))
    checking = cast(Checking, info.context)
    rules = checking.rules
    if instant < checking.now - rules.max_age:
        raise rule_error(f"is older than the accepted {_span(rules.max_age)}")
    if instant > checking.now + rules.max_lead:
        raise rule_error(f"is more than {_span(rules.max_lead)} in the future")
    return instant


STORABLE = r"^[^\x00]*$"
"""Text PostgreSQL can store: no NUL. (A lone surrogate is no valid string to pydantic at all.)"""

Name = Annotated[str, Field(min_length=1, max_length=STRING_MAX, pattern=STORABLE)]
Count = Annotated[
    int,
    Field(
        ge=0,
        description="Limit configurable.",
        json_schema_extra={"maximum": _DEFAULTS["max_tokens_per_count"]},
    ),
]
_WINDOW = (
    f"within [now - {_DEFAULTS['max_event_age'].days} days,"
    f" now + {_DEFAULTS['max_event_lead'].seconds // 60} minutes] by default"
)


class UsageEvent(BaseModel):
    """One model request as a gateway saw it. Types are strict: a count is a JSON integer."""

    model_config = ConfigDict(strict=True, extra="forbid")

    event_id: Annotated[
        str,
        Field(
            min_length=1,
            max_length=STRING_MAX,
            pattern=EVENT_ID_PATTERN,
            description="Unique per tenant: the idempotency key.",
        ),
    ]
    occurred_at: Annotated[
        datetime,
        BeforeValidator(_instant),
        Field(description=f"RFC 3339 with an offset, {_WINDOW}."),
    ]
    tenant: Annotated[
        Name | None,
        Field(
            description="Required with a platform key; a bound key's by default.",
            validate_default=True,
        ),
    ] = None
    model: Name
    project: Annotated[Name | None, Field(description=f'Default "{DEFAULT_PROJECT}".')] = None
    api_key_id: Name | None = None
    input_tokens: Count
    output_tokens: Count
    cached_input_tokens: Annotated[
        Count | None,
        Field(
            description="Part of input_tokens served from a cache; with "
            "cache_write_input_tokens at most input_tokens."
        ),
    ] = None
    cache_write_input_tokens: Annotated[
        Count | None,
        Field(
            description="Part of input_tokens written to a cache; with cached_input_tokens "
            "at most input_tokens."
        ),
    ] = None
    reasoning_tokens: Annotated[Count | None, Field(description="At most output_tokens.")] = None
    attributes: Annotated[
        dict[
            Annotated[str, Field(min_length=1, max_length=ATTRIBUTE_KEY_MAX, pattern=STORABLE)],
            Annotated[str, Field(max_length=ATTRIBUTE_VALUE_MAX, pattern=STORABLE)],
        ]
        | None,
        Field(max_length=ATTRIBUTES_MAX_KEYS),
    ] = None

    @field_validator("tenant", mode="after")
    @classmethod
    def _the_keys_tenant(cls, tenant: str | None, info: ValidationInfo) -> str | None:
        key_tenant = cast(Checking, info.context).key_tenant
        if key_tenant is None and tenant is None:
            raise rule_error("is required")
        if key_tenant is not None and tenant is not None and tenant != key_tenant:
            raise rule_error("names another tenant than the one the key is bound to")
        return tenant

    @model_validator(mode="after")
    def _counts_within_limits(self, info: ValidationInfo) -> Self:
        """The configured limit of every count, and parts within their wholes: one error whose
        context lists each (field, message)."""
        problems = _count_problems(self, cast(Checking, info.context).rules.max_tokens)
        if problems:
            raise PydanticCustomError(
                RULE, "{message}", {"message": "breaks a rule", "problems": problems}
            )
        return self

    def stored(self, key_tenant: str | None) -> Event:
        """The event as stored: the defaults of what was left out filled in."""
        return Event(
            tenant=cast(str, self.tenant or key_tenant),
            event_id=self.event_id,
            project=self.project or DEFAULT_PROJECT,
            model=self.model,
            api_key_id=self.api_key_id,
            occurred_at=self.occurred_at,
            input_tokens=self.input_tokens,
            cached_input_tokens=self.cached_input_tokens or 0,
            cache_write_input_tokens=self.cache_write_input_tokens or 0,
            output_tokens=self.output_tokens,
            reasoning_tokens=self.reasoning_tokens or 0,
            attributes=self.attributes,
        )


class EventBatch(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    events: Annotated[
        list[UsageEvent],
        # The limit is configurable, and counted before validating: described, not enforced.
        Field(min_length=1, json_schema_extra={"maxItems": _DEFAULTS["max_events_per_request"]}),
    ]


def _count_problems(event: UsageEvent, maximum: int) -> list[tuple[str, str]]:
    problems = []
    counts: dict[str, Any] = {
        "input_tokens": event.input_tokens,
        "output_tokens": event.output_tokens,
        "cached_input_tokens": event.cached_input_tokens,
        "cache_write_input_tokens": event.cache_write_input_tokens,
        "reasoning_tokens": event.reasoning_tokens,
    }
    for name, value in counts.items():
        if value is not None and value > maximum:
            problems.append((name, f"must be at most {maximum:,}, got {abbreviate(value)}"))
    for parts, whole in PARTS:
        whole_value = counts[whole]
        present = [(part, counts[part]) for part in parts if counts[part] is not None]
        if max((whole_value, *(value for _, value in present))) > maximum:
            continue  # past the limit: wrong already
        too_large = [(part, value) for part, value in present if value > whole_value]
        for part, value in too_large:
            problems.append((part, f"must not exceed {whole} ({whole_value:,}), got {value:,}"))
        total = sum(value for _, value in present)
        if too_large or total <= whole_value:
            continue
        # Each part fits on its own, their sum does not: the last part is the one that overflows.
        *others, (part, value) = present
        beside = " and ".join(f"{other} ({other_value:,})" for other, other_value in others)
        problems.append(
            (
                part,
                f"plus {beside} must not exceed {whole} ({whole_value:,}),"
                f" got {value:,} ({total:,} in all)",
            )
        )
    return problems


def abbreviate(value: int) -> str:
    if value.bit_length() > 200:
        return f"an integer of {len(str(abs(value)))} digits"
    return str(value)


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds % length == 0 and seconds >= length:
            count = seconds // length
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"
