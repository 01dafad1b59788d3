"""How many body bytes one worker holds at once, across all the ingest requests it is serving."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tokenpulse.errors import Unavailable


class BodyBudget:
    def __init__(self, limit: int, *, retry_after: int) -> None:
        self._limit = limit
        self._retry_after = retry_after
        self._held = 0

    @contextmanager
    def holding(self) -> Iterator[Callable[[int], None]]:
        """A `reserve(n)` for one request's bytes, all given back when the request is done.

        `reserve` raises `Unavailable` (503) when the worker would hold more than its limit, so
        that overload costs a quick answer rather than memory.
        """
        reserved = 0

        def reserve(size: int) -> None:
            nonlocal reserved
            # A request alone may pass the limit (the body limit still bounds it), so that a
            # limit set below the body limit cannot refuse every large request.
            others = self._held - reserved
            if others and self._held + size > self._limit:
                raise Unavailable(
                    "ingest is overloaded; retry later", retry_after=self._retry_after
                )
            self._held += size
            reserved += size

        try:
            yield reserve
        finally:
            self._held -= reserved
