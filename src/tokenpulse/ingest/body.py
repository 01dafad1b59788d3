"""Reading an ingest request body: size limits, gzip, and JSON or NDJSON into decoded events."""

import json
import re
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import Enum
from itertools import islice
from typing import Any

from tokenpulse.arrival import BodyTimeouts, arriving
from tokenpulse.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from tokenpulse.ingest.decoded import DuplicateKeys, integer_from_text, object_from_pairs
from tokenpulse.text import echo


class Format(Enum):
    JSON = "application/json"
    NDJSON = "application/x-ndjson"


@dataclass(frozen=True, slots=True)
class Undecodable:
    """An NDJSON line that is not JSON; it is rejected on its own, like an invalid event."""

    reason: str

    @property
    def message(self) -> str:
        return f"the line is not valid JSON: {self.reason}"


@dataclass(frozen=True, slots=True)
class Overgrown:
    """An NDJSON line with more values than any event, rejected on its own before decoding."""

    message: str


NDJSON_ALIASES = ("application/ndjson", "application/jsonl", "application/x-jsonlines")
"""Other names clients give newline-delimited JSON, read as application/x-ndjson."""


def body_format(content_type: str | None, content_encoding: str | None) -> tuple[Format, bool]:
    """The body's format and whether it is gzip-compressed, from the request headers."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        body = Format.NDJSON if media_type in NDJSON_ALIASES else Format(media_type)
    except ValueError:
        raise UnsupportedMediaType(
            f"Content-Type must be application/json or application/x-ndjson, "
            f"got {media_type or 'none'}"
        ) from None
    encoding = (content_encoding or "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise UnsupportedMediaType(f"Content-Encoding must be gzip or absent, got {encoding}")
    return body, encoding == "gzip"


async def read_limited(
    chunks: AsyncIterator[bytes],
    *,
    limit: int,
    gzipped: bool,
    timeouts: BodyTimeouts,
    reserve: Callable[[int], None] = lambda size: None,
) -> bytes:
    """The body's bytes, decompressed, refusing it as soon as it passes `limit` bytes.

    The limit applies to what is received and to what it decompresses to, so neither a lying
    Content-Length, a small gzip bomb nor an endless stream of empty gzip members can make the
    service read or hold more than `limit` bytes. Every chunk kept is first passed to `reserve`,
    which may refuse it. A body that stalls, or trickles in for longer than the timeouts allow,
    is refused with 408: a connection cannot hold its bytes for ever.
    """
    received = bytearray()
    wire_bytes = 0
    inflater = _Inflater() if gzipped else None
    async for chunk in arriving(chunks, timeouts):
        wire_bytes += len(chunk)
        data = chunk if inflater is None else inflater.inflate(chunk, limit + 1 - len(received))
        if wire_bytes > limit or len(received) + len(data) > limit:
            raise PayloadTooLarge(f"the body is larger than the limit of {limit:,} bytes")
        reserve(len(data))
        received += data
    if inflater is not None:
        inflater.finish()
    return bytes(received)


class _Inflater:
    """gzip decompression of a stream of one or more concatenated gzip members."""

    def __init__(self) -> None:
        self._member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._started = False

    def inflate(self, chunk: bytes, room: int) -> bytes:
        """Up to `room` decompressed bytes of `chunk` (reaching `room` means: too large)."""
        out = bytearray()
        data = chunk
        while data and len(out) < room:
            if self._member.eof:
                self._member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            try:
                out += self._member.decompress(data, room - len(out))
            except zlib.error as exc:
                raise BadRequest(f"the body is not valid gzip: {exc}") from None
            self._started = True
            data = self._member.unused_data if self._member.eof else b""
        return bytes(out)

    def finish(self) -> None:
        if not self._started or not self._member.eof:
            raise BadRequest("the gzip body is truncated")


def decode_events(body: bytes, lines: list[bytes] | None, *, max_events: int) -> list[object]:
    """The decoded events of a body, in order; NDJSON lines that are not JSON as `Undecodable`.

    `lines` are an NDJSON body's, from `ndjson_lines`; None for a JSON body, which has passed
    `check_json_size`: either way the body was counted before, and is not counted again.
    """
    if not body.strip():
        raise BadRequest("the body is empty")
    events = _decode_json(body) if lines is None else _decode_ndjson(lines)
    if not events:
        raise BadRequest("the body holds no events")
    if len(events) > max_events:
        raise too_many(max_events)
    return events


def too_many(max_events: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the body holds more than {max_events:,} events; at most {max_events:,} are accepted "
        "at once"
    )


# Counting comes before any decoding: decoding and checking cost a little for every event and
# every value in it, and a body of a few bytes each (`1\n` lines, `{},` elements, `[1,1,…]`)
# holds millions of them. Long strings cost little; only many values in one place is refused.

EVENT_MAX_PARTS = 8192
"""Most commas and brackets in one event, inside its strings or not: a valid event has a few
dozen values, and even with every string made of commas fewer parts than this."""

_NON_BLANK_LINE = re.compile(rb"[^\s][^\n]*")
"""A line from its first character that is not white space to its end."""


def ndjson_lines(body: bytes, max_events: int) -> list[bytes]:
    """The body's lines that are not blank, refused as soon as there are more than `max_events`."""
    lines = [match[0] for match in islice(_NON_BLANK_LINE.finditer(body), max_events + 1)]
    if len(lines) > max_events:
        raise too_many(max_events)
    return lines


def parts(text: bytes | str) -> int:
    """An upper bound of how many values one JSON text holds, counted in C."""
    if isinstance(text, bytes):
        return text.count(b",") + text.count(b"[") + text.count(b"{")
    return text.count(",") + text.count("[") + text.count("{")


# Possessive, and ending at the end of the text when no quote closes it: every attempt matches,
# so a text of unclosed strings costs one pass, not one pass from each of its quotes.
_STRING = re.compile(r'"(?:[^"\\]++|\\[\s\S])*+(?:"|\\?\Z)')


def parts_outside_strings(text: str) -> int:
    """`parts` of `text` with its strings taken out: an upper bound of its values when strings
    (prompts among them) may hold commas and brackets of their own."""
    return parts(_STRING.sub("", text))


def too_many_parts(what: str) -> str:
    return f"{what} has more than {EVENT_MAX_PARTS:,} JSON values; no event has as many"


_BATCH_START = re.compile(rb'[ \t\n\r]*\{[ \t\n\r]*"events"[ \t\n\r]*:[ \t\n\r]*\[')
_SPACE = re.compile(r"[ \t\n\r]*")
# Values are only skipped over: numbers stay text, so no number can stop the count.
_SKIPPING = json.JSONDecoder(parse_int=len, parse_float=len, parse_constant=len)


def check_json_size(body: bytes, max_events: int) -> None:
    """Refuse a JSON body of more than `max_events` events, or with an event of more than
    EVENT_MAX_PARTS values, counting no further than that.

    A batch with few enough values in all is let through at once; any other is counted element
    by element, each skipped over by the C parser.
    """
    start = _BATCH_START.match(body)
    if start is None:
        if parts(body) > EVENT_MAX_PARTS:
            raise PayloadTooLarge(too_many_parts("the body"))
        return
    if parts(body) <= max(max_events, EVENT_MAX_PARTS):
        return
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return  # refused as a whole before any element is decoded
    # What the start matched is ASCII: its length in bytes is its length in characters.
    end = _check_elements(text, start.end(), max_events)
    # Whatever follows the batch's array is refused, but only once decoded: it must be small.
    if end is not None and parts(text[end:]) > EVENT_MAX_PARTS:
        raise PayloadTooLarge(too_many_parts('what follows "events" in the body'))


def _check_elements(text: str, at: int, most: int) -> int | None:
    """Refuse the array from `at` (just after its `[`) if it holds more than `most` elements or
    one with too many values; where the array ends, if it does.

    Counting ends early at the first element that is not JSON: every parser after this one
    stops there too, so no more than these elements are ever decoded.
    """
    count = 0
    at = after_space(text, at)
    while not text.startswith("]", at):
        try:
            _, end = _SKIPPING.raw_decode(text, at)
        except (ValueError, RecursionError):
            return None
        if parts(text[at:end]) > EVENT_MAX_PARTS:
            raise PayloadTooLarge(too_many_parts(f"event {count}"))
        count += 1
        if count > most:
            raise too_many(most)
        at = after_space(text, end)
        if text.startswith(",", at):
            at = after_space(text, at + 1)
        elif not text.startswith("]", at):
            return None
    return at + 1


def after_space(text: str, at: int) -> int:
    """Where the JSON white space that starts at `at` ends."""
    space = _SPACE.match(text, at)
    assert space is not None  # white space may be empty: it always matches
    return space.end()


def _loads(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=object_from_pairs, parse_constant=no_constants)
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError) or "integer string" not in str(exc):
            raise
    # An integer too long for Python to convert: decode again, slowly, so that it becomes one
    # bad count of one event instead of a bad body.
    return json.loads(
        text,
        object_pairs_hook=object_from_pairs,
        parse_int=integer_from_text,
        parse_constant=no_constants,
    )


def no_constants(name: str) -> None:
    """`parse_constant` for a decoder that refuses NaN and Infinity, which JSON has not."""
    raise ValueError(f"{name} is not a JSON value")


def _parse(raw: bytes) -> Any:
    """Decode one JSON document, raising ValueError with a readable reason."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"invalid UTF-8 at byte {exc.start}") from None
    try:
        return _loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _decode_json(body: bytes) -> list[object]:
    try:
        document = _parse(body)
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadRequest('the body must be an event object or {"events": [...]}')
    if "events" not in document:
        return [document]
    if isinstance(document, DuplicateKeys) and "events" in document.duplicated:
        raise BadRequest('"events" appears more than once')
    extra = sorted(set(document) - {"events"})
    if extra:
        raise BadRequest(f'a batch holds only "events"; unexpected: {echo(", ".join(extra))}')
    events = document["events"]
    if not isinstance(events, list):
        raise BadRequest('"events" must be an array of event objects')
    return events


def _parse_line(line: bytes) -> object:
    if parts(line) > EVENT_MAX_PARTS:
        return Overgrown(too_many_parts("the line"))
    try:
        return _parse(line)
    except json.JSONDecodeError as exc:
        # Each line is parsed alone: json's own "line 1 column N (char N-1)" would misname it.
        return Undecodable(f"{exc.msg} at column {exc.colno}")
    except ValueError as exc:
        return Undecodable(str(exc))


def _decode_ndjson(lines: list[bytes]) -> list[object]:
    events = [_parse_line(line) for line in lines]
    if events and all(isinstance(event, Undecodable) for event in events):
        first = events[0]
        assert isinstance(first, Undecodable)
        raise BadRequest(
            f"the body is not valid NDJSON: no line is valid JSON (the first: {first.reason})"
        )
    return events
