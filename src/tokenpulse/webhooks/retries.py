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
        if attempts > 40:
            return self.longest
        wait: timedelta = self.first * 2 ** (attempts - 1)
        return min(wait, self.longest)
