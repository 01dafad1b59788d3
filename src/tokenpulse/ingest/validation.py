"""From body bytes to events: one pydantic call for a clean body, and event by event only for a
body with bad events, to say what is wrong with each."""

import re
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError

from tokenpulse.errors import Problem
from tokenpulse.ingest.body import (
    EVENT_MAX_PARTS,
    Format,
    Overgrown,
    Undecodable,
    check_json_size,
    decode_events,
    ndjson_lines,
    parts,
)
from tokenpulse.ingest.decoded import DuplicateKeys, describe
from tokenpulse.ingest.events import Checking, Event, EventBatch, EventRules, UsageEvent
from tokenpulse.ingest.problems import event_problems
from tokenpulse.text import echo

_BATCH = re.compile(rb'\s*\{\s*"events"\s*:')
_KEY_END = b'":'
_SPACED_KEY_END = re.compile(rb'"[ \t\r\n]+:')


@dataclass(frozen=True)
class Rejection:
    index: int
    event_id: str | None
    errors: list[Problem]


@dataclass
class Validated:
    """Every event of a body, in order, as exactly one of: valid, or rejected with its reasons."""

    events: list[Event] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def validate_body(
    body: bytes, body_format: Format, checking: Checking, *, max_events: int
) -> Validated:
    """The body's events checked against every rule. Raises `BadRequest` for a body that is not
    JSON / NDJSON events, `PayloadTooLarge` for one with more than `max_events` or an event with
    more values than any, before decoding any."""
    lines = ndjson_lines(body, max_events) if body_format is Format.NDJSON else None
    if lines is None:
        check_json_size(body, max_events)
        clean = _clean_json(body, checking)
    else:
        clean = _clean_lines(body, lines, checking)
    if clean and len(clean) <= max_events:
        return Validated([event.stored(checking.key_tenant) for event in clean])
    validated = Validated()
    for index, raw in enumerate(decode_events(body, lines, max_events=max_events)):
        checked = _checked(raw, checking)
        if isinstance(checked, Event):
            validated.events.append(checked)
        else:
            validated.rejections.append(Rejection(index, _event_id_of(raw), checked))
    return validated


def _clean_json(body: bytes, checking: Checking) -> list[UsageEvent] | None:
    """Every event of a JSON body if all are valid (and no key repeats); None if any is not."""
    try:
        if _BATCH.match(body):
            events = EventBatch.model_validate_json(body, context=checking).events
            wrapper_keys = 1
        else:
            events = [UsageEvent.model_validate_json(body, context=checking)]
            wrapper_keys = 0
    except ValidationError:
        return None
    return events if _no_repeated_keys(body, events, wrapper_keys) else None


def _clean_lines(body: bytes, lines: list[bytes], checking: Checking) -> list[UsageEvent] | None:
    if any(parts(line) > EVENT_MAX_PARTS for line in lines):
        return None
    try:
        events = [UsageEvent.model_validate_json(line, context=checking) for line in lines]
    except ValidationError:
        return None
    return events if _no_repeated_keys(body, events, 0) else None


def _no_repeated_keys(body: bytes, events: list[UsageEvent], wrapper_keys: int) -> bool:
    """Whether no object of the body repeats a key, which pydantic's parser would let pass (the
    last value winning).

    Every key ends in `":`, and once no key has space before its colon, only a string value can
    add more: as many `":` as keys validated means that no key came twice. Anything else
    goes the slow way, which decodes every pair.
    """
    keys = wrapper_keys + sum(
        len(event.model_fields_set) + len(event.attributes or ()) for event in events
    )
    return body.count(_KEY_END) == keys and not _SPACED_KEY_END.search(body)


def _checked(raw: object, checking: Checking) -> Event | list[Problem]:
    if isinstance(raw, Undecodable | Overgrown):
        return [Problem(None, raw.message)]
    if not isinstance(raw, dict):
        return [Problem(None, f"an event must be a JSON object, got {describe(raw)}")]
    try:
        event = UsageEvent.model_validate(raw, context=checking)
    except ValidationError as error:
        return event_problems(raw, error, checking.rules.max_tokens)
    if isinstance(raw, DuplicateKeys) or isinstance(raw.get("attributes"), DuplicateKeys):
        return event_problems(raw, None, checking.rules.max_tokens)
    return event.stored(checking.key_tenant)


def validate_event(
    raw: object, *, key_tenant: str | None, rules: EventRules, now: datetime
) -> Event | list[Problem]:
    """One decoded event checked against every rule: the event, or all that is wrong with it."""
    return _checked(raw, Checking(rules, now, key_tenant))


def _event_id_of(raw: object) -> str | None:
    if isinstance(raw, dict):
        event_id = raw.get("event_id")
        if isinstance(event_id, str):
            return echo(event_id)
    return None
