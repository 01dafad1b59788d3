"""Reading what LiteLLM's generic API logger sends into its payloads: a JSON array of them
(`json_array`), one a line (`ndjson`) or one alone (`single`), each counted before it is decoded.

LiteLLM labels all three `application/json`, so a JSON body is told apart by its shape: an
array, one document (pretty-printed too, as people send one by hand), or one document a line.
A payload carries its call's whole conversation, so unlike an event it is not refused for
holding many values of its own: tokenpulse reads a fixed handful of its fields, whatever its
size. What decoding a body costs is bounded by its size and by MAX_VALUES, counted outside its
strings before any is decoded: a few MiB of `[]` would otherwise decode into millions of
objects.
"""

import json
from typing import Any

from tokenpulse.errors import BadRequest, PayloadTooLarge
from tokenpulse.ingest.body import (
    Format,
    Undecodable,
    after_space,
    ndjson_lines,
    no_constants,
    parts_outside_strings,
    too_many,
)
from tokenpulse.ingest.decoded import integer_from_text, object_from_pairs

MAX_VALUES = 1_000_000
"""Most JSON values (counted as commas and brackets outside strings) in one body."""


_DECODER = json.JSONDecoder(object_pairs_hook=object_from_pairs, parse_constant=no_constants)
# Only for a value holding an integer longer than Python converts: slower, and rarely needed.
_LONG_INTEGERS = json.JSONDecoder(
    object_pairs_hook=object_from_pairs, parse_constant=no_constants, parse_int=integer_from_text
)


def payloads_of(body: bytes, body_format: Format, max_events: int) -> list[object]:
    """The body's payloads, in order; NDJSON lines that are not JSON as `Undecodable`.

    Raises `BadRequest` for a body that holds no payloads or is not JSON, and
    `PayloadTooLarge` for one of more than `max_events`, counted before they are decoded.
    """
    if not body.strip():
        raise BadRequest("the body is empty")
    # Counted on the text as far as it decodes: a line that does not is rejected on its own.
    if parts_outside_strings(body.decode("utf-8", "replace")) > MAX_VALUES:
        raise PayloadTooLarge(
            f"the body holds more than {MAX_VALUES:,} JSON values outside its strings; send "
            "fewer payloads at once"
        )
    if body_format is Format.NDJSON:
        return _lines(ndjson_lines(body, max_events))
    text = _text(body)
    start = len(text) - len(text.lstrip())
    if text.startswith("[", start):
        return _array(text, start + 1, max_events)
    try:
        payload, end = _value_at(text, start)
    except ValueError as exc:
        lines = ndjson_lines(body, max_events)
        if len(lines) == 1:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None
        return _lines(lines)
    if text[end:].strip():
        # More than one document: LiteLLM's `ndjson`, one payload a line.
        return _lines(ndjson_lines(body, max_events))
    if not isinstance(payload, dict):
        raise BadRequest("the body must be a payload object, an array of them, or one a line")
    return [payload]


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: invalid UTF-8 at byte {exc.start}") from None


def _value_at(text: str, at: int) -> tuple[Any, int]:
    """The JSON value that starts at `at`, and where it ends; ValueError says why there is none."""
    try:
        try:
            return _DECODER.raw_decode(text, at)
        except ValueError as exc:
            if isinstance(exc, json.JSONDecodeError) or "integer string" not in str(exc):
                raise
        return _LONG_INTEGERS.raw_decode(text, at)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _array(text: str, at: int, max_events: int) -> list[object]:
    """The elements of the array whose `[` is just before `at`, decoded one at a time and
    refused as soon as there are more than `max_events`."""
    payloads: list[object] = []
    at = after_space(text, at)
    while not text.startswith("]", at):
        if len(payloads) == max_events:
            raise too_many(max_events)
        try:
            payload, at = _value_at(text, at)
        except ValueError as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None
        payloads.append(payload)
        at = after_space(text, at)
        if text.startswith(",", at):
            at = after_space(text, at + 1)
            if text.startswith("]", at):
                raise BadRequest(f"the body is not valid JSON: a value is missing at char {at}")
        elif not text.startswith("]", at):
            raise BadRequest(f"the body is not valid JSON: expected ',' or ']' at char {at}")
    if text[at + 1 :].strip():
        raise BadRequest("the body holds more than one JSON array")
    if not payloads:
        raise BadRequest("the body holds no payloads")
    return payloads


def _lines(lines: list[bytes]) -> list[object]:
    payloads = [_line(line) for line in lines]
    if all(isinstance(payload, Undecodable) for payload in payloads):
        first = payloads[0]
        assert isinstance(first, Undecodable)
        raise BadRequest(
            f"the body is not valid NDJSON: no line is valid JSON (the first: {first.reason})"
        )
    return payloads


def _line(line: bytes) -> object:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Undecodable(f"invalid UTF-8 at byte {exc.start}")
    try:
        payload, end = _value_at(text, 0)
    except json.JSONDecodeError as exc:
        # Each line is decoded alone: json's own "line 1 column N (char N-1)" would misname it.
        return Undecodable(f"{exc.msg} at column {exc.colno}")
    except ValueError as exc:
        return Undecodable(str(exc))
    if text[end:].strip():
        return Undecodable(f"extra data at column {end + 1}")
    return payload
