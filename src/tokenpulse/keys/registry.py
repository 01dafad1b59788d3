"""Finding the key behind a request, for one worker: looked up by id, remembered briefly, and
never asked of the database on behalf of an address that keeps failing to authenticate."""

import asyncio
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tokenpulse.clock import Monotonic
from tokenpulse.keys.store import StoredKey
from tokenpulse.ratelimit import TokenBuckets
from tokenpulse.refusals import failed_authentications

# A key that was found is trusted for `ttl` seconds and then read again: a revoked key is
# refused by every worker within `ttl`, and a burst of requests with one key costs one query.
# An id that was not found is remembered as unknown for longer: ids are random, so none that is
# missing now can be issued later, and a client repeating one costs a query every
# UNKNOWN_KEY_SECONDS. Unknown ids are kept apart from keys, so that a flood of random ones
# cannot push real keys out.

UNKNOWN_KEY_SECONDS = 10.0
"""How long an id that no key has is answered as unknown without asking the database."""
MAX_UNKNOWN_KEYS = 10_000
"""Unknown ids remembered at once; the oldest is forgotten first."""

Find = Callable[[str], Awaitable[StoredKey | None]]
Value = TypeVar("Value")


class KeyRegistry:
    def __init__(
        self,
        find: Find,
        *,
        ttl: float,
        clock: Monotonic,
        max_entries: int = 10_000,
        unknown_ttl: float = UNKNOWN_KEY_SECONDS,
        max_unknown: int = MAX_UNKNOWN_KEYS,
        failures: TokenBuckets | None = None,
    ) -> None:
        self._find = find
        self._ttl = ttl
        self._clock = clock
        self._max_entries = max_entries
        self._unknown_ttl = unknown_ttl
        self._max_unknown = max_unknown
        # A key stays here after its `ttl` (it is then read again before it is trusted): that it
        # exists is enough to let an address that fails too often still look it up.
        self._known: OrderedDict[str, tuple[float, StoredKey]] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._pending: dict[str, asyncio.Future[StoredKey | None]] = {}
        self.failures = failures or failed_authentications(clock)

    async def lookup(self, key_id: str) -> StoredKey | None:
        """The key with this id, revoked or not; None when there is none."""
        now = self._clock()
        known = self._known.get(key_id)
        if known is not None and now - known[0] < self._ttl:
            return known[1]
        if self._unknown_since(key_id, now):
            return None
        pending = self._pending.get(key_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[StoredKey | None] = asyncio.get_running_loop().create_future()
        self._pending[key_id] = future
        try:
            found = await self._find(key_id)
        except BaseException as exc:
            future.set_exception(exc)
            # Retrieved here, so that no waiter-less future complains when it is collected.
            future.exception()
            raise
        finally:
            del self._pending[key_id]
        future.set_result(found)
        self._remember(key_id, now, found)
        return found

    def is_new(self, key_id: str) -> bool:
        """Whether looking `key_id` up would ask the database about an id that this worker has
        never seen a key of: the lookups an address that fails too often is refused."""
        return key_id not in self._known and not self._unknown_since(key_id, self._clock())

    def forget(self, key_id: str) -> None:
        """Read the key afresh before trusting it again (after a revocation)."""
        known = self._known.get(key_id)
        if known is not None:
            self._known[key_id] = (-math.inf, known[1])

    def __len__(self) -> int:
        """How many ids this worker remembers, keys and unknown ids together."""
        return len(self._known) + len(self._unknown)

    def _unknown_since(self, key_id: str, now: float) -> bool:
        since = self._unknown.get(key_id)
        return since is not None and now - since < self._unknown_ttl

    def _remember(self, key_id: str, now: float, found: StoredKey | None) -> None:
        if found is None:
            self._known.pop(key_id, None)
            _put(self._unknown, key_id, now, self._max_unknown)
        else:
            self._unknown.pop(key_id, None)
            _put(self._known, key_id, (now, found), self._max_entries)


def _put(entries: OrderedDict[str, Value], key: str, value: Value, limit: int) -> None:
    entries[key] = value
    entries.move_to_end(key)
    while len(entries) > limit:
        entries.popitem(last=False)
