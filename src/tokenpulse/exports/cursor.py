"""The cursor an export answer ends with when it stops at its limit: the range it exports, the
event the next answer starts after, and which filters it was asked with."""

import base64
import binascii
import hashlib
import json
from datetime import datetime

from tokenpulse.errors import InvalidParameters
from tokenpulse.exports.events import Position
from tokenpulse.instants import format_rfc3339, parse_rfc3339
from tokenpulse.rollups.selection import Selection

_VERSION = 1
_NOT_A_CURSOR = "is not a cursor an export answered; pass the next_cursor it ended with"


def filters_digest(selection: Selection) -> str:
    """A short digest of the filters an export reads with, as a key bound to a tenant has them."""
    canonical = json.dumps(
        {name: sorted(values) for name, values in sorted(selection.filters.items())},
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_cursor(last: Position, *, start: datetime, end: datetime, selection: Selection) -> str:
    fields = [
        _VERSION,
        format_rfc3339(start),
        format_rfc3339(end),
        last.model,
        format_rfc3339(last.occurred_at),
        last.event_id,
        last.tenant,
        filters_digest(selection),
    ]
    packed = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(packed).decode().rstrip("=")


def decode_cursor(cursor: str, selection: Selection) -> tuple[datetime, datetime, Position]:
    """The range of the export and the position its answer ended at; 422 unless `cursor` is one
    an export with the same filters gave."""
    try:
        packed = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, start, end, model, occurred_at, event_id, tenant, digest = json.loads(packed)
        instants = parse_rfc3339(start), parse_rfc3339(end), parse_rfc3339(occurred_at)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidParameters.of("cursor", _NOT_A_CURSOR) from None
    if (
        version != _VERSION
        or None in instants
        or not all(isinstance(part, str) for part in (model, event_id, tenant, digest))
    ):
        raise InvalidParameters.of("cursor", _NOT_A_CURSOR)
    if digest != filters_digest(selection):
        raise InvalidParameters.of(
            "cursor",
            "belongs to an export with other filters; repeat the filters it was asked with",
        )
    if (models := selection.filters.get("model")) is not None and model not in models:
        raise InvalidParameters.of("cursor", _NOT_A_CURSOR)
    first, last, at = instants
    assert first is not None
    assert last is not None
    assert at is not None
    return first, last, Position(model, at, event_id, tenant)
