"""How long a request body may take to arrive, and the chunks of one that keeps to it."""

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tokenpulse.errors import RequestTimeout
from tokenpulse.settings import Settings


@dataclass(frozen=True, slots=True)
class BodyTimeouts:
    """How long a body may take to arrive: in all, and between two of its chunks."""

    total: float
    idle: float

    @classmethod
    def of(cls, settings: Settings) -> "BodyTimeouts":
        return cls(
            settings.body_timeout.total_seconds(), settings.body_idle_timeout.total_seconds()
        )


async def arriving(chunks: AsyncIterator[bytes], timeouts: BodyTimeouts) -> AsyncIterator[bytes]:
    """The chunks of a body, refused with 408 once it stalls or trickles in for longer than the
    timeouts allow: a connection cannot hold a worker's attention, or its bytes, for ever."""
    deadline = time.monotonic() + timeouts.total
    iterator = aiter(chunks)
    while True:
        wait = min(timeouts.idle, deadline - time.monotonic())
        try:
            async with asyncio.timeout(max(wait, 0)):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            stalled = wait >= timeouts.idle
            raise RequestTimeout(
                f"no part of the body arrived for {timeouts.idle:g} s"
                if stalled
                else f"the body did not arrive within {timeouts.total:g} s"
            ) from None
        yield chunk
