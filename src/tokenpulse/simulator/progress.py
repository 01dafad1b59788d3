"""The progress line on stderr while a run sends: events acked, rate, the simulated clock reached,
and tokens so far."""

import asyncio
import sys
import time
from collections import deque
from datetime import datetime
from typing import TextIO

from tokenpulse.simulator.ledger import Ledger
from tokenpulse.simulator.retries import Traffic

REDRAW_SECONDS = 0.25
# Without a terminal, a line of its own now and then, for logs.
LOG_LINE_SECONDS = 5.0
RATE_WINDOW_SECONDS = 2.0


class ProgressLine:
    def __init__(
        self,
        *,
        ledger: Ledger,
        traffic: Traffic,
        events: int | None,
        start: datetime,
        stream: TextIO = sys.stderr,
    ) -> None:
        self.ledger = ledger
        self.traffic = traffic
        self.events = events
        self.start = start
        self.stream = stream
        self.redraws = stream.isatty()
        self._began = time.monotonic()
        self._recent: deque[tuple[float, int]] = deque([(self._began, 0)])

    async def show(self) -> None:
        """Draw the line until cancelled."""
        interval = REDRAW_SECONDS if self.redraws else LOG_LINE_SECONDS
        while True:
            await asyncio.sleep(interval)
            self._write(self.line())

    def note(self, message: str) -> None:
        """A line of its own, above the progress line where that is redrawn."""
        if self.redraws:
            self.stream.write(f"\r{message}\x1b[K\n")
        else:
            self.stream.write(f"{message}\n")
        self.stream.flush()

    def finish(self) -> None:
        self._write(self.line())
        if self.redraws:
            self.stream.write("\n")
            self.stream.flush()

    def line(self) -> str:
        now = time.monotonic()
        acked = self.ledger.acked + self.ledger.rejected
        self._recent.append((now, acked))
        while len(self._recent) > 2 and now - self._recent[1][0] >= RATE_WINDOW_SECONDS:
            self._recent.popleft()
        then, acked_then = self._recent[0]
        rate = (acked - acked_then) / (now - then) if now > then else 0.0
        reached = self.ledger.latest
        clock = (
            f"day +{_hours_minutes_seconds((reached - self.start).total_seconds())}"
            f" ({reached:%H:%M:%S}Z)"
            if reached is not None
            else "day not begun"
        )
        if self.events is None:
            sent = f"{acked:,} events"
        else:
            share = acked / self.events if self.events else 1.0
            sent = f"{acked:,} of {self.events:,} events ({share:.0%})"
        parts = [
            sent,
            f"{rate:,.0f} events/s",
            clock,
            f"{short_count(self.ledger.total_tokens)} tokens",
        ]
        if self.traffic.retries:
            parts.append(f"{self.traffic.retries:,} retries")
        return " · ".join(parts)

    def _write(self, line: str) -> None:
        if self.redraws:
            self.stream.write(f"\r{line}\x1b[K")
        else:
            self.stream.write(f"{line}\n")
        self.stream.flush()


def short_count(count: int) -> str:
    """A count in three significant digits: 950, 12.3k, 4.56M, 1.23B, 7.89T."""
    for scale, suffix in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "k")):
        # 999,999 rounds to 1M, not 1e+03k.
        if count >= scale * 0.9995:
            return f"{count / scale:.3g}{suffix}"
    return str(count)


def _hours_minutes_seconds(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"
