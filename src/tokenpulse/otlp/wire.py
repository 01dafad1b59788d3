"""OTLP/HTTP on the wire: a body's encoding from its headers, an `ExportTraceServiceRequest`
decoded from protobuf or OTLP JSON within bounds, and answers encoded as the request was.

Parsing makes an object of every message, however few bytes it took: 10 MiB of empty spans
parse into some 900 MB, of empty JSON objects into some 200 MB. So a protobuf body's spans and
what they hold are counted on its bytes, and a JSON body's values on its text, before any is
made into a message.
"""

import base64
import json
import re
from collections.abc import Iterator
from enum import Enum
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tokenpulse.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from tokenpulse.ingest.body import no_constants, parts_outside_strings
from tokenpulse.text import echo


class Encoding(Enum):
    PROTOBUF = "application/x-protobuf"
    JSON = "application/json"


def request_encoding(content_type: str | None) -> Encoding:
    media_type = _media_type(content_type)
    try:
        return Encoding(media_type)
    except ValueError:
        raise UnsupportedMediaType(
            f"Content-Type must be application/x-protobuf or application/json, "
            f"got {echo(media_type) or 'none'}"
        ) from None


def answer_encoding(content_type: str | None) -> Encoding:
    """How to answer a request, whatever it is: as it was sent, and JSON when that is neither
    (people read those answers, not exporters)."""
    is_protobuf = _media_type(content_type) == Encoding.PROTOBUF.value
    return Encoding.PROTOBUF if is_protobuf else Encoding.JSON


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_gzipped(content_encoding: str | None) -> bool:
    encoding = (content_encoding or "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise UnsupportedMediaType(f"Content-Encoding must be gzip or absent, got {echo(encoding)}")
    return encoding == "gzip"


def encoded(message: Message, encoding: Encoding) -> bytes:
    if encoding is Encoding.PROTOBUF:
        return message.SerializeToString()
    return json_format.MessageToJson(message, indent=None).encode()


MAX_SPANS = 100_000
"""Most spans one export may hold, the resource and scope groups that hold them counted too: a
collector batches 8,192 by default."""
MAX_SPAN_PARTS = 1_000_000
"""Most attributes, events and links it may hold in all: of its resources, scopes and spans, of
its spans' events and links, and the values inside arrays and key-value lists of attributes."""
MAX_JSON_VALUES = 1_000_000
"""Most values an OTLP JSON body may hold (its commas and brackets outside strings)."""


def decoded_request(
    body: bytes, encoding: Encoding, wanted: frozenset[str]
) -> ExportTraceServiceRequest:
    """The export a body holds. Raises `BadRequest` for one that is not an
    `ExportTraceServiceRequest` in `encoding`, `PayloadTooLarge` for one past the bounds above.

    Of a JSON body, only the attributes named in `wanted` are decoded; a protobuf body is
    decoded whole.
    """
    if encoding is Encoding.PROTOBUF:
        _count_protobuf(body)
        try:
            return ExportTraceServiceRequest.FromString(body)
        except DecodeError as error:
            raise BadRequest(
                f"the body is not a protobuf ExportTraceServiceRequest: {error}"
            ) from None
    document = _json_document(body)
    slim = _Slimming(wanted).request(document)
    try:
        return json_format.ParseDict(slim, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except json_format.ParseError as error:
        raise BadRequest(
            f"the body is not an OTLP JSON ExportTraceServiceRequest: {echo(str(error), 300)}"
        ) from None


class _Held:
    """What an export holds, counted as it is read, refused as soon as it passes a bound."""

    def __init__(self) -> None:
        self._spans = 0
        self._parts = 0

    def spans(self, count: int) -> None:
        self._spans += count
        if self._spans > MAX_SPANS:
            raise PayloadTooLarge(
                f"the body holds more than {MAX_SPANS:,} spans (counting the resource and scope "
                "groups that hold them); send smaller exports"
            )

    def parts(self, count: int) -> None:
        self._parts += count
        if self._parts > MAX_SPAN_PARTS:
            raise PayloadTooLarge(
                f"the body holds more than {MAX_SPAN_PARTS:,} attributes, events and links "
                "(with the values inside attribute values); send smaller exports"
            )


# Field numbers: ExportTraceServiceRequest.resource_spans; ResourceSpans.resource and
# .scope_spans; Resource.attributes; ScopeSpans.scope and .spans; InstrumentationScope.attributes;
# a Span's attributes, events and links; Span.Event.attributes and Span.Link.attributes.
_RESOURCE_SPANS, _RESOURCE, _SCOPE_SPANS, _RESOURCE_ATTRIBUTES = 1, 1, 2, 1
_SCOPE, _SPANS, _SCOPE_ATTRIBUTES = 1, 2, 3
_SPAN_ATTRIBUTES, _SPAN_EVENTS, _SPAN_LINKS = 9, 11, 13
_EVENT_ATTRIBUTES, _LINK_ATTRIBUTES = 3, 4
# KeyValue.value; AnyValue.array_value and .kvlist_value; ArrayValue.values and
# KeyValueList.values.
_VALUE, _ARRAY, _KVLIST, _VALUES = 2, 5, 6, 1
_MAX_VALUE_DEPTH = 32
"""Deepest nesting of arrays and key-value lists in an attribute's value."""


def _count_protobuf(body: bytes) -> None:
    """Refuse a protobuf body past the bounds, on its bytes: its groups and spans are walked,
    and every attribute, event and link (of a resource, a scope, a span, a span's events and
    links, and inside arrays and key-value lists) is counted and stepped over."""
    held = _Held()
    for resource_spans in _fields(body, 0, len(body), _RESOURCE_SPANS):
        held.spans(1)
        for number, start, end in _length_delimited(body, *resource_spans):
            if number == _RESOURCE:
                _count_attributes(held, body, start, end, _RESOURCE_ATTRIBUTES)
            elif number == _SCOPE_SPANS:
                held.spans(1)
                _count_scope_spans(held, body, start, end)


def _count_scope_spans(held: "_Held", body: bytes, at: int, end: int) -> None:
    for number, start, stop in _length_delimited(body, at, end):
        if number == _SCOPE:
            _count_attributes(held, body, start, stop, _SCOPE_ATTRIBUTES)
        elif number == _SPANS:
            held.spans(1)
            for part, part_start, part_end in _length_delimited(body, start, stop):
                if part == _SPAN_ATTRIBUTES:
                    held.parts(1)
                    _count_key_value(held, body, part_start, part_end, 0)
                elif part == _SPAN_EVENTS:
                    held.parts(1)
                    _count_attributes(held, body, part_start, part_end, _EVENT_ATTRIBUTES)
                elif part == _SPAN_LINKS:
                    held.parts(1)
                    _count_attributes(held, body, part_start, part_end, _LINK_ATTRIBUTES)


def _count_attributes(held: "_Held", body: bytes, at: int, end: int, number: int) -> None:
    for start, stop in _fields(body, at, end, number):
        held.parts(1)
        _count_key_value(held, body, start, stop, 0)


def _count_key_value(held: "_Held", body: bytes, at: int, end: int, depth: int) -> None:
    if _scalar(body, at, end):
        return
    for start, stop in _fields(body, at, end, _VALUE):
        _count_any_value(held, body, start, stop, depth)


# The first byte of a field's key: KeyValue.key and .value; AnyValue.array_value and
# .kvlist_value (field number << 3 | 2, length-delimited).
_KEY_TAG, _VALUE_TAG, _ARRAY_TAG, _KVLIST_TAG = 0x0A, 0x12, 0x2A, 0x32


def _scalar(body: bytes, at: int, end: int) -> bool:
    """Whether the KeyValue in `body[at:end]` is, as encoders write one, a key and then a value
    that is neither an array nor a key-value list: nothing in it to count. Read without walking
    its fields, since a span has many; any other layout is walked."""
    if at >= end or body[at] != _KEY_TAG:
        return at >= end
    length, at = _varint(body, at + 1, end)
    at += length
    if at >= end:
        return True
    if body[at] != _VALUE_TAG:
        return False
    length, at = _varint(body, at + 1, end)
    return at + length == end and (at == end or body[at] not in (_ARRAY_TAG, _KVLIST_TAG))


def _count_any_value(held: "_Held", body: bytes, at: int, end: int, depth: int) -> None:
    for number, start, stop in _length_delimited(body, at, end):
        if number not in (_ARRAY, _KVLIST):
            continue
        if depth >= _MAX_VALUE_DEPTH:
            raise _malformed(f"attribute values nest more than {_MAX_VALUE_DEPTH} deep")
        for value_start, value_end in _fields(body, start, stop, _VALUES):
            held.parts(1)
            if number == _ARRAY:
                _count_any_value(held, body, value_start, value_end, depth + 1)
            else:
                _count_key_value(held, body, value_start, value_end, depth + 1)


def _fields(data: bytes, at: int, end: int, wanted: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each length-delimited field numbered `wanted` of the message in
    `data[at:end]`, stepping over every other field."""
    for number, start, stop in _length_delimited(data, at, end):
        if number == wanted:
            yield start, stop


def _length_delimited(data: bytes, at: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of each length-delimited field of the message in
    `data[at:end]`, stepping over the others."""
    while at < end:
        key, at = _varint(data, at, end)
        number, wire_type = key >> 3, key & 7
        if wire_type == 2:
            length, at = _varint(data, at, end)
            start, at = at, at + length
            if at > end:
                raise _malformed(f"a field runs past the end of its message at byte {start}")
            yield number, start, at
        elif wire_type == 0:
            _, at = _varint(data, at, end)
        elif wire_type in (1, 5):
            at += 8 if wire_type == 1 else 4
            if at > end:
                raise _malformed(f"a fixed-size field is cut short at byte {end}")
        else:
            raise _malformed(f"wire type {wire_type} at byte {at}, which no OTLP message has")


def _varint(data: bytes, at: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while at < end and shift < 64:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
    raise _malformed(f"a varint is cut short or too long at byte {at}")


def _malformed(reason: str) -> BadRequest:
    return BadRequest(f"the body is not a protobuf ExportTraceServiceRequest: {reason}")


def _json_document(body: bytes) -> dict[str, Any]:
    """The decoded JSON object of the body, refused unread past MAX_JSON_VALUES: its strings,
    prompts among them, may hold commas and brackets of their own, so only the others count."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequest(
            f"the body is not valid JSON: invalid UTF-8 at byte {error.start}"
        ) from None
    if parts_outside_strings(text) > MAX_JSON_VALUES:
        raise PayloadTooLarge(
            f"the body holds more than {MAX_JSON_VALUES:,} JSON values; send smaller exports"
        )
    try:
        document = json.loads(text, parse_constant=no_constants)
    except RecursionError:
        raise BadRequest("the body is not valid JSON: nested too deeply") from None
    except ValueError as error:
        raise BadRequest(f"the body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise BadRequest("the body must be an ExportTraceServiceRequest object")
    return document


_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
_IDS = ("traceId", "spanId", "parentSpanId")
_SPAN_HOLDS = ("attributes", "events", "links")


class _Slimming:
    """A decoded OTLP JSON export cut down to what a usage span is read from, its sizes bounded
    and its ids turned from hex, as OTLP JSON writes them, into the base64 of protobuf's JSON.

    Member names are OTLP JSON's lowerCamelCase, or protobuf's own names as its JSON parser
    also takes them.
    """

    def __init__(self, wanted: frozenset[str]) -> None:
        self._wanted = wanted
        self._held = _Held()

    def request(self, document: dict[str, Any]) -> dict[str, Any]:
        return {
            "resourceSpans": [
                self._resource_spans(item, f"resourceSpans[{index}]")
                for index, item in enumerate(self._groups(document, "resourceSpans", ""))
            ]
        }

    def _resource_spans(self, group: object, path: str) -> dict[str, Any]:
        group = _object(group, path)
        resource = _object(_member(group, "resource") or {}, f"{path}.resource")
        return {
            "resource": {"attributes": self._wanted_of(resource, f"{path}.resource")},
            "scopeSpans": [
                self._scope_spans(item, f"{path}.scopeSpans[{index}]")
                for index, item in enumerate(self._groups(group, "scopeSpans", path))
            ],
        }

    def _scope_spans(self, group: object, path: str) -> dict[str, Any]:
        group = _object(group, path)
        return {
            "spans": [
                self._span(item, f"{path}.spans[{index}]")
                for index, item in enumerate(self._groups(group, "spans", path))
            ]
        }

    def _span(self, span: object, path: str) -> dict[str, Any]:
        span = _object(span, path)
        self._held.parts(sum(len(_array(span, name, path)) for name in _SPAN_HOLDS))
        slim: dict[str, Any] = {"attributes": self._wanted_of(span, path)}
        for name in _IDS:
            value = _member(span, name)
            if value is not None:
                slim[name] = _base64_of_hex(value, f"{path}.{name}")
        end = _member(span, "endTimeUnixNano")
        if end is not None:
            slim["endTimeUnixNano"] = end
        return slim

    def _groups(self, holder: dict[str, Any], name: str, path: str) -> list[Any]:
        items = _array(holder, name, path)
        self._held.spans(len(items))
        return items

    def _wanted_of(self, holder: dict[str, Any], path: str) -> list[Any]:
        attributes = _array(holder, "attributes", path)
        wanted = []
        for index, attribute in enumerate(attributes):
            key = _object(attribute, f"{path}.attributes[{index}]").get("key")
            if isinstance(key, str) and key in self._wanted:
                wanted.append(attribute)
        return wanted


_PROTOBUF_NAMES = {
    "resourceSpans": "resource_spans",
    "scopeSpans": "scope_spans",
    "traceId": "trace_id",
    "spanId": "span_id",
    "parentSpanId": "parent_span_id",
    "endTimeUnixNano": "end_time_unix_nano",
}


def _member(holder: dict[str, Any], name: str) -> Any:
    if name in holder:
        return holder[name]
    return holder.get(_PROTOBUF_NAMES.get(name, name))


def _array(holder: dict[str, Any], name: str, path: str) -> list[Any]:
    value = _member(holder, name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{_joined(path, name)}: must be an array")
    return value


def _object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{path}: must be an object")
    return value


def _base64_of_hex(value: object, path: str) -> str:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        shown = echo(value, 40) if isinstance(value, str) else type(value).__name__
        raise BadRequest(f"{path}: must be an id in hex, as OTLP JSON writes them, got {shown}")
    return base64.b64encode(bytes.fromhex(value)).decode("ascii")


def _joined(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
