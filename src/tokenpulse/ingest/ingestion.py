"""Ingesting a decoded batch: every event ends as exactly one of accepted, duplicate or rejected."""

from dataclasses import dataclass, field
from typing import Any

from tokenpulse.errors import ServiceError, TooManyRequests, Unavailable
from tokenpulse.ingest.batcher import (
    AccountOverloaded,
    Batcher,
    Overloaded,
    ShuttingDown,
    StoreUnavailable,
)
from tokenpulse.ingest.validation import Rejection, Validated

OVER_SHARE = "this tenant has more events waiting than its share of this worker; retry later"

MAX_LISTED_REJECTIONS = 100
"""Most rejected events an answer lists with their reasons."""


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def stored_any(self) -> bool:
        return self.accepted + self.duplicates > 0

    def as_json(self) -> dict[str, Any]:
        """The answer: every count, and the first MAX_LISTED_REJECTIONS rejections with their
        reasons (`errors_omitted` says how many more there were), so that an answer stays
        small however many events a body gets wrong."""
        listed = self.rejections[:MAX_LISTED_REJECTIONS]
        answer: dict[str, Any] = {
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
                for rejection in listed
            ],
        }
        if len(listed) < len(self.rejections):
            answer["errors_omitted"] = len(self.rejections) - len(listed)
        return answer


async def ingest(
    validated: Validated, *, account: str, batcher: Batcher, retry_after: int
) -> IngestResult:
    """Store the valid events of `validated` and account for every one.

    Returns once the stored events are committed. Raises `Unavailable` when they could not be
    stored; then none of them was acknowledged and the client sends them all again.
    """
    result = IngestResult(rejections=validated.rejections)
    if not validated.events:
        return result
    try:
        outcomes = await batcher.submit(validated.events, account)
    except AccountOverloaded:
        raise TooManyRequests(OVER_SHARE, retry_after=retry_after) from None
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
