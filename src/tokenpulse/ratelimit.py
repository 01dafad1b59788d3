"""Rate limits: token buckets, one per key, that refill at `rate` a second and hold up to
`burst`."""

from collections import OrderedDict
from collections.abc import Mapping

from tokenpulse.clock import Monotonic
from tokenpulse.scopes import Scope


class TokenBuckets:
    """Buckets by key; with `max_keys`, those used least recently are forgotten past that many
    (a forgotten bucket starts full again), so that keys an attacker makes up cannot grow it."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Monotonic,
        max_keys: int | None = None,
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, cost: float = 1) -> float:
        """Spend `cost` tokens of `key`'s bucket: 0 if it had them, else seconds until it has.

        A cost larger than the bucket holds is taken from a full bucket, which it leaves in
        debt, so that no cost is refused for ever.
        """
        now = self._clock()
        tokens = self._refilled(key, now)
        enough = tokens >= min(cost, self._burst)
        self._keep(key, (tokens - cost if enough else tokens, now))
        return 0.0 if enough else (min(cost, self._burst) - tokens) / self._rate

    def refund(self, key: str, cost: float = 1) -> None:
        """Give back `cost` tokens taken too soon (for what turned out not to count)."""
        if (bucket := self._buckets.get(key)) is not None:
            self._buckets[key] = (min(self._burst, bucket[0] + cost), bucket[1])

    def __len__(self) -> int:
        return len(self._buckets)

    def _keep(self, key: str, bucket: tuple[float, float]) -> None:
        self._buckets[key] = bucket
        self._buckets.move_to_end(key)
        if self._max_keys is not None:
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)

    def wait(self, key: str) -> float:
        """0 if `key`'s bucket holds a token now, else seconds until it does; nothing spent."""
        tokens = self._refilled(key, self._clock())
        return 0.0 if tokens >= 1 else (1 - tokens) / self._rate

    def _refilled(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (self._burst, now))
        return min(self._burst, tokens + (now - last) * self._rate)


class RateLimits:
    """One bucket per key, filled at the rate configured for the key's scope (0: unlimited)."""

    def __init__(
        self, rates: Mapping[Scope, float], *, burst_seconds: float, clock: Monotonic
    ) -> None:
        self._buckets = {
            scope: TokenBuckets(rate, max(1.0, rate * burst_seconds), clock=clock)
            for scope, rate in rates.items()
            if rate > 0
        }

    def take(self, key_id: str, scope: Scope) -> float:
        """0 if the key may go ahead now, else the seconds until it may."""
        buckets = self._buckets.get(scope)
        return 0.0 if buckets is None else buckets.take(key_id)
