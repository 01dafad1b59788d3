"""Per-key rate limits: token buckets that refill at `rate` a second and hold up to `burst`."""

import time
from collections.abc import Callable, Mapping

from tokenpulse.keys.scopes import Scope


class TokenBuckets:
    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """Spend one token of `key`'s bucket: 0 if there was one, else seconds until there is."""
        now = self._clock()
        tokens, last = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self._rate


class RateLimits:
    """One bucket per key, filled at the rate configured for the key's scope (0: unlimited)."""

    def __init__(self, rates: Mapping[Scope, float], *, burst_seconds: float) -> None:
        self._buckets = {
            scope: TokenBuckets(rate, max(1.0, rate * burst_seconds))
            for scope, rate in rates.items()
            if rate > 0
        }

    def take(self, key_id: str, scope: Scope) -> float:
        """0 if the key may go ahead now, else the seconds until it may."""
        buckets = self._buckets.get(scope)
        return 0.0 if buckets is None else buckets.take(key_id)
