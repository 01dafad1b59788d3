"""Reading an ingest request body: size limits, gzip, and JSON or NDJSON into decoded events."""

import json
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

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


def body_format(content_type: str | None, content_encoding: str | None) -> tuple[Format, bool]:
    """The body's format and whether it is gzip-compressed, from the request headers."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        body = Format(media_type)
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
    reserve: Callable[[int], None] = lambda size: None,
) -> bytes:
    """The body's bytes, decompressed, refusing it as soon as it passes `limit` bytes.

    The limit applies to what is received and to what it decompresses to, so neither a lying
    Content-Length nor a small gzip bomb can make the service hold more than `limit` bytes.
    Every chunk kept is first passed to `reserve`, which may refuse it.
    """
    received = bytearray()
    inflater = _Inflater() if gzipped else None
    async for chunk in chunks:
        data = chunk if inflater is None else inflater.inflate(chunk, limit + 1 - len(received))
        if len(received) + len(data) > limit:
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


def decode_events(body: bytes, body_format: Format, *, max_events: int) -> list[object]:
    """The decoded events of a body, in order; NDJSON lines that are not JSON as `Undecodable`."""
    if not body.strip():
        raise BadRequest("the body is empty")
    events = _decode_json(body) if body_format is Format.JSON else _decode_ndjson(body)
    if not events:
        raise BadRequest("the body holds no events")
    if len(events) > max_events:
        raise PayloadTooLarge(
            f"the body holds {len(events):,} events; at most {max_events:,} are accepted at once"
        )
    return events


def _loads(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=object_from_pairs, parse_constant=_no_constants)
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError) or "integer string" not in str(exc):
            raise
    # An integer too long for Python to convert: decode again, slowly, so that it becomes one
    # bad count of one event instead of a bad body.
    return json.loads(
        text,
        object_pairs_hook=object_from_pairs,
        parse_int=integer_from_text,
        parse_constant=_no_constants,
    )


def _no_constants(name: str) -> None:
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
    try:
        return _parse(line)
    except json.JSONDecodeError as exc:
        # Each line is parsed alone: json's own "line 1 column N (char N-1)" would misname it.
        return Undecodable(f"{exc.msg} at column {exc.colno}")
    except ValueError as exc:
        return Undecodable(str(exc))


def _decode_ndjson(body: bytes) -> list[object]:
    events = [_parse_line(line) for line in body.split(b"\n") if line.strip()]
    if events and all(isinstance(event, Undecodable) for event in events):
        first = events[0]
        assert isinstance(first, Undecodable)
        raise BadRequest(
            f"the body is not valid NDJSON: no line is valid JSON (the first: {first.reason})"
        )
    return events
