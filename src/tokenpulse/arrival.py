"""How long a request body may take to arrive, and the chunks of one that keeps to it."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tokenpulse.clock import Monotonic
from tokenpulse.errors import RequestTimeout
from tokenpulse.settings import Settings


@dataclass(frozen=True, slots=True)
class BodyTimeouts:
    """How long a body may take to arrive: in all, as `clock` counts, and between two of its
    chunks."""

    total: float
    idle: float
    clock: Monotonic

    @classmethod
    def of(cls, settings: Settings, clock: Monotonic) -> "BodyTimeouts":
        return cls(
            settings.body_timeout.total_seconds(), settings.body_idle_timeout.total_seconds(), clock
        )


async def arriving(chunks: AsyncIterator[bytes], timeouts: BodyTimeouts) -> AsyncIterator[bytes]:
    """The chunks of a body, refused with 408 once it stalls or trickles in for longer than the
    timeouts allow: a connection cannot hold a worker's attention, or its bytes, for ever."""
    deadline = timeouts.clock() + timeouts.total
    iterator = aiter(chunks)
    while True:
        left = deadline - timeouts.clock()
        # Checked before waiting: a timeout of zero still lets a chunk already at hand through.
        if left <= 0:
            raise _too_slow(timeouts, stalled=False)
        wait = min(timeouts.idle, left)
        try:
            async with asyncio.timeout(wait):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise _too_slow(timeouts, stalled=wait >= timeouts.idle) from None
        yield chunk


def _too_slow(timeouts: BodyTimeouts, *, stalled: bool) -> RequestTimeout:
    return RequestTimeout(
        f"no part of the body arrived for {timeouts.idle:g} s"
        if stalled
        else f"the body did not arrive within {timeouts.total:g} s"
    )
