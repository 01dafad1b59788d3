"""How many body bytes one worker holds at once across the ingest requests it is serving, and
how much of that one account (a tenant, or a platform key) may hold."""

from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tokenpulse.errors import TooManyRequests, Unavailable


class BodyBudget:
    def __init__(self, limit: int, *, account_limit: int, retry_after: int) -> None:
        self._limit = limit
        self._account_limit = account_limit
        self._retry_after = retry_after
        self._held = 0
        self._by_account: defaultdict[str, int] = defaultdict(int)

    @contextmanager
    def holding(self, account: str) -> Iterator[Callable[[int], None]]:
        """A `reserve(n)` for one request's bytes, all given back when the request is done.

        `reserve` raises `TooManyRequests` (429) when the account would hold more than its
        share, and `Unavailable` (503) when the worker would hold more than its limit, so that
        overload costs a quick answer rather than memory, and one account cannot take every
        other's room.
        """
        reserved = 0

        def reserve(size: int) -> None:
            nonlocal reserved
            # A request alone may pass either limit (the body limit still bounds it), so that
            # a limit set below the body limit cannot refuse every large request.
            others = self._held - reserved
            if others and self._held + size > self._limit:
                raise Unavailable(
                    "ingest is overloaded; retry later", retry_after=self._retry_after
                )
            account_others = self._by_account[account] - reserved
            if account_others and self._by_account[account] + size > self._account_limit:
                raise TooManyRequests(
                    "this tenant's uploads in progress hold more than its share of this worker; "
                    "retry when some have finished",
                    retry_after=self._retry_after,
                )
            self._held += size
            self._by_account[account] += size
            reserved += size

        try:
            yield reserve
        finally:
            self._held -= reserved
            self._by_account[account] -= reserved
            if not self._by_account[account]:
                del self._by_account[account]
