"""When a delivery that failed is tried again, and when it is given up."""

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class RetryPolicy:
    first: timedelta = timedelta(seconds=5)
    """The wait after the first failed attempt; each further one waits twice as long."""
    longest: timedelta = timedelta(hours=1)
    """The most one wait may be."""
    retry_for: timedelta = timedelta(hours=24)
    """How long after a notification is found its deliveries are still tried."""

    def wait(self, attempts: int) -> timedelta:
        """The wait after the `attempts`-th attempt failed."""
        wait = self.first
        # Doubled a step at a time up to the longest: `first * 2 ** (attempts - 1)` outgrows
        # what a timedelta holds after a few dozen attempts of a long first wait.
        for _ in range(attempts - 1):
            if wait >= self.longest:
                break
            wait *= 2
        return min(wait, self.longest)
