"""How long a client waits before it sends unanswered events again, and when it gives up."""

import random
from dataclasses import dataclass

RETRY_AFTER_JITTER = 0.1
"""Up to this share of Retry-After is added to it, so that clients told the same do not all
come back at the same instant."""


@dataclass(frozen=True)
class Retries:
    """Events without an answer (a 429, a 503, a timeout, a dropped connection...) are sent
    again, with the same event ids, after the server's Retry-After when it sends one, else after
    an exponential backoff with jitter: `first_delay`, doubling up to `max_delay`.

    With `give_up_after` None (the default) a batch is sent again for as long as it takes:
    while the server is away, the buffer fills, and `record` then blocks or raises as
    configured. With a number of seconds, a batch still unanswered that long after its first
    attempt is given up and reaches `on_undelivered`.
    """

    first_delay: float = 0.2
    max_delay: float = 10.0
    give_up_after: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.first_delay <= self.max_delay:
            raise ValueError("Retries needs 0 < first_delay <= max_delay")
        if self.give_up_after is not None and self.give_up_after < 0:
            raise ValueError("Retries.give_up_after must be None or at least 0")

    def delay(self, attempt: int, retry_after: float | None, jitter: random.Random) -> float:
        """Seconds to wait after the `attempt`-th failure in a row (from 0)."""
        if retry_after is not None:
            # Never sooner than the server asked; a Retry-After of 0 is no reason to hammer it.
            floor = max(retry_after, self.first_delay)
            return floor + jitter.uniform(0, RETRY_AFTER_JITTER * floor)
        # Doubling from first_delay up to max_delay; a random half of it, so that clients that
        # failed together spread out.
        ceiling = min(self.max_delay, self.first_delay * 2.0 ** min(attempt, 64))
        return ceiling / 2 + jitter.uniform(0, ceiling / 2)
