"""A usage span as the event it stands for, checked by every rule an event is: its id from the
span's ids, its instant the span's end, the rest from the attributes `attributes.py` names.
What is wrong is said of the attribute it was read from, which is what an operator can find.

No other attribute is read: a span's prompt and completion are never stored, nor quoted back.
"""

from datetime import UTC, datetime, timedelta

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tokenpulse.errors import Problem, capped
from tokenpulse.ingest.events import Checking, Event
from tokenpulse.ingest.validation import validate_event
from tokenpulse.instants import format_rfc3339
from tokenpulse.otlp.attributes import (
    COUNTS,
    MODELS,
    Reading,
    Unreadable,
    count_of,
    first_present,
    name_of,
)
from tokenpulse.otlp.calls import UsageSpan

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_REPORTED_ALONE = ("input_tokens", "output_tokens")
"""Counts a span may leave out, as 0: an embeddings call reports no output tokens."""


def event_id_of(span: Span) -> str:
    """`<trace id>:<span id>` in lowercase hex: the same span sent again is a duplicate."""
    return f"{span.trace_id.hex()}:{span.span_id.hex()}"


def checked_event(usage: UsageSpan, reading: Reading, checking: Checking) -> Event | list[Problem]:
    """The span's event, or everything wrong with it."""
    span = usage.span
    raw: dict[str, object] = {"event_id": event_id_of(span)}
    # Each field's attribute, to name in a problem with it.
    source = {"occurred_at": "end_time_unix_nano"}
    problems = _id_problems(span)
    # Fields whose problem is said already: the event's rules would only find them missing.
    unread: set[str] = set()

    if span.end_time_unix_nano:
        ended = _EPOCH + timedelta(microseconds=span.end_time_unix_nano // 1000)
        raw["occurred_at"] = format_rfc3339(ended)
    else:
        problems.append(Problem("end_time_unix_nano", "is required: the span has not ended"))
        unread.add("occurred_at")

    for field, names in COUNTS.items():
        found = first_present(usage.attributes, names)
        if found is None:
            if field in _REPORTED_ALONE:
                raw[field] = 0
            continue
        name, value = found
        source[field] = name
        count = count_of(value)
        if isinstance(count, Unreadable):
            problems.append(Problem(name, count.message))
            unread.add(field)
        else:
            raw[field] = count

    named = {"model": MODELS, "project": reading.project, "api_key_id": reading.api_key_id}
    if checking.key_tenant is None:
        # A bound key's tenant is the span's, whatever it says.
        named["tenant"] = reading.tenant
    for field, attributes in named.items():
        found = first_present(usage.attributes, attributes)
        if found is None and field != "model":
            found = first_present(usage.resource, attributes)
        if found is None:
            if field in ("model", "tenant"):
                problems.append(Problem(field, _missing(field, attributes)))
                unread.add(field)
            continue
        name, value = found
        source[field] = name
        text = name_of(value)
        if isinstance(text, Unreadable):
            problems.append(Problem(name, text.message))
            unread.add(field)
        else:
            raw[field] = text

    checked = validate_event(
        raw, key_tenant=checking.key_tenant, rules=checking.rules, now=checking.now
    )
    if isinstance(checked, Event):
        return checked if not problems else capped(problems)
    return capped(
        problems
        + [
            Problem(source.get(problem.field, problem.field), problem.message)
            if problem.field is not None
            else problem
            for problem in checked
            if problem.field not in unread
        ]
    )


def _id_problems(span: Span) -> list[Problem]:
    problems = []
    for name, value, size in (("trace_id", span.trace_id, 16), ("span_id", span.span_id, 8)):
        if len(value) != size or not any(value):
            problems.append(
                Problem(name, f"must be {size} bytes, not all zero, got {len(value)} bytes")
            )
    return problems


def _missing(field: str, attributes: tuple[str, ...]) -> str:
    if field == "model":
        return f"is required: the span has no {' or '.join(attributes)}"
    if not attributes:
        return "is required: the key is bound to no tenant, and no attribute is read for one"
    return (
        "is required: the key is bound to no tenant, and neither the span nor its resource "
        f"has {' or '.join(attributes)}"
    )
