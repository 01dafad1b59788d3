"""Ingesting a decoded batch: every event ends as exactly one of accepted, duplicate or rejected."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tokenpulse.errors import Problem, ServiceError, Unavailable
from tokenpulse.ingest.batcher import Batcher, Overloaded, ShuttingDown, StoreUnavailable
from tokenpulse.ingest.body import Undecodable
from tokenpulse.ingest.events import Event, EventRules, validate_event
from tokenpulse.text import echo


@dataclass(frozen=True)
class Rejection:
    index: int
    event_id: str | None
    errors: list[Problem]


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def stored_any(self) -> bool:
        return self.accepted + self.duplicates > 0

    def as_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": len(self.rejections),
            "errors": [
                {
                    "index": rejection.index,
                    "event_id": rejection.event_id,
                    "errors": [
                        {"field": error.field, "message": error.message}
                        for error in rejection.errors
                    ],
                }
                for rejection in self.rejections
            ],
        }


async def ingest(
    decoded: list[object],
    *,
    key_tenant: str | None,
    rules: EventRules,
    now: datetime,
    batcher: Batcher,
    retry_after: int,
) -> IngestResult:
    """Validate each event on its own, store the valid ones, and account for every one.

    Returns once the stored events are committed. Raises `Unavailable` when they could not be
    stored; then none of them was acknowledged and the client sends them all again.
    """
    result = IngestResult()
    valid: list[Event] = []
    for index, raw in enumerate(decoded):
        if isinstance(raw, Undecodable):
            result.rejections.append(Rejection(index, None, [Problem(None, raw.message)]))
            continue
        checked = validate_event(raw, key_tenant=key_tenant, rules=rules, now=now)
        if isinstance(checked, Event):
            valid.append(checked)
        else:
            result.rejections.append(Rejection(index, _event_id_of(raw), checked))
    if not valid:
        return result
    try:
        outcomes = await batcher.submit(valid)
    except Overloaded:
        raise Unavailable("ingest is overloaded; retry later", retry_after=retry_after) from None
    except ShuttingDown:
        raise Unavailable("the service is shutting down", retry_after=retry_after) from None
    except StoreUnavailable:
        raise Unavailable("the database is unavailable", retry_after=retry_after) from None
    except Exception as exc:
        raise ServiceError("storing the events failed") from exc
    result.accepted = sum(outcomes)
    result.duplicates = len(outcomes) - result.accepted
    return result


def _event_id_of(raw: object) -> str | None:
    if isinstance(raw, dict):
        event_id = raw.get("event_id")
        if isinstance(event_id, str):
            return echo(event_id)
    return None
