"""The events a client records: each one made JSON once, when it is recorded, and kept as the
bytes it is sent as."""

import json
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


@dataclass(frozen=True, slots=True)
class Recorded:
    """One event as the client holds it until the server has answered for it."""

    seq: int
    """Its place among the events this client recorded, from 0."""
    event_id: str
    json: bytes
    at: float
    """The monotonic instant it was recorded: a batch goes out when its first has waited long
    enough."""

    def event(self) -> dict[str, Any]:
        """The event as it was sent."""
        decoded: dict[str, Any] = json.loads(self.json)
        return decoded


def encode_event(
    *,
    model: str,
    input_tokens: int,
    output_tokens: int,
    tenant: str | None,
    project: str | None,
    api_key_id: str | None,
    cached_input_tokens: int,
    cache_write_input_tokens: int,
    reasoning_tokens: int,
    attributes: Mapping[str, str] | None,
    event_id: str | None,
    occurred_at: datetime | None,
) -> tuple[str, bytes]:
    """The event's id (a new one unless given) and its JSON.

    Fields left as None and counts left at 0 are not sent: the server's defaults are the same,
    and a server from before `cache_write_input_tokens` takes every event that does not use it.
    Only what no JSON can carry is refused here (ValueError, TypeError); every other rule is
    the server's, and an event that breaks one reaches `on_rejected`.
    """
    event_id = new_event_id() if event_id is None else event_id
    event: dict[str, Any] = {
        "event_id": event_id,
        "occurred_at": rfc3339(datetime.now(UTC) if occurred_at is None else occurred_at),
        "model": model,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
    }
    for name, text in (("tenant", tenant), ("project", project), ("api_key_id", api_key_id)):
        if text is not None:
            event[name] = text
    for name, count in (
        ("cached_input_tokens", cached_input_tokens),
        ("cache_write_input_tokens", cache_write_input_tokens),
        ("reasoning_tokens", reasoning_tokens),
    ):
        if count != 0:
            event[name] = count
    if attributes is not None:
        event["attributes"] = dict(attributes)
    return event_id, _encode(event).encode()


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits. Ids ordered by
    time make the server's index on (tenant, event_id) grow at its end, not everywhere."""
    milliseconds = time.time_ns() // 1_000_000
    random_bits = int.from_bytes(os.urandom(10)) >> 6
    value = (
        (milliseconds & (1 << 48) - 1) << 80
        | 0x7 << 76
        | (random_bits >> 62) << 64
        | 0b10 << 62
        | random_bits & (1 << 62) - 1
    )
    return str(uuid.UUID(int=value))


def rfc3339(instant: datetime) -> str:
    """`instant` in UTC to the microsecond, as `2026-11-27T09:00:00.000000Z`."""
    if instant.utcoffset() is None:
        raise ValueError(
            f"occurred_at must carry a time zone, got {instant.isoformat()}: "
            "the server refuses an instant without an offset"
        )
    # isoformat is twice as fast as strftime; in UTC it always ends in +00:00.
    return instant.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"
