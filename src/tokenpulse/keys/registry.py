"""Finding the key behind a request, for one worker: looked up by id, remembered briefly."""

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from tokenpulse.keys.store import StoredKey

# Every answer, found or not, is kept for `ttl` seconds and then asked again: a revoked key is
# refused by every worker within `ttl`, and a burst of requests with one key costs one query.

Find = Callable[[str], Awaitable[StoredKey | None]]


class KeyRegistry:
    def __init__(self, find: Find, *, ttl: float, max_entries: int = 10_000) -> None:
        self._find = find
        self._ttl = ttl
        self._max_entries = max_entries
        self._known: OrderedDict[str, tuple[float, StoredKey | None]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[StoredKey | None]] = {}

    async def lookup(self, key_id: str) -> StoredKey | None:
        """The key with this id, revoked or not; None when there is none."""
        now = time.monotonic()
        known = self._known.get(key_id)
        if known is not None and now - known[0] < self._ttl:
            return known[1]
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

    def forget(self, key_id: str) -> None:
        """Drop what is known of a key, so that this worker reads it afresh (after a revocation)."""
        self._known.pop(key_id, None)

    def _remember(self, key_id: str, now: float, found: StoredKey | None) -> None:
        self._known[key_id] = (now, found)
        self._known.move_to_end(key_id)
        while len(self._known) > self._max_entries:
            self._known.popitem(last=False)
