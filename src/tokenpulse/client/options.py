"""What both clients are configured with, checked once when a client is made."""

import math
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from tokenpulse.client.retries import Retries

WhenFull = Literal["block", "raise"]

MAX_BATCH_EVENTS = 10_000
"""Most events the server takes in one request."""


@dataclass(frozen=True)
class Options:
    url: str
    key: str
    batch_size: int
    max_wait: float
    max_buffered_events: int
    when_full: WhenFull
    block_timeout: float
    retries: Retries
    timeout: float
    exit_timeout: float
    concurrency: int

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url must be an http:// or https:// URL, got {self.url!r}")
        if not 1 <= self.batch_size <= MAX_BATCH_EVENTS:
            raise ValueError(f"batch_size must be from 1 to {MAX_BATCH_EVENTS:,}")
        if self.max_buffered_events < self.batch_size:
            raise ValueError("max_buffered_events must hold at least one batch (batch_size)")
        if self.when_full not in ("block", "raise"):
            raise ValueError(f"when_full must be 'block' or 'raise', got {self.when_full!r}")
        if not 1 <= self.concurrency <= 64:
            raise ValueError("concurrency must be from 1 to 64")
        for name in ("max_wait", "block_timeout", "exit_timeout"):
            seconds = getattr(self, name)
            if not (math.isfinite(seconds) and seconds >= 0):
                raise ValueError(f"{name} must be a number of seconds, at least 0")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError("timeout must be a number of seconds, more than 0")

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")

    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.key}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "User-Agent": "tokenpulse-client",
        }
