"""The service's own figures, in Prometheus text format, added up across worker processes."""

import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from tokenpulse.ingest.batcher import FlushStats

# With several workers, `tokenpulse serve` points PROMETHEUS_MULTIPROC_DIR at a fresh folder;
# each worker writes its figures there, and any worker's `/metrics` adds them all up.

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """The figures one worker keeps, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "tokenpulse_events",
            "Events submitted, by outcome: accepted, duplicate or rejected.",
            ["outcome"],
            registry=self.registry,
        )
        self.batch_events = Histogram(
            "tokenpulse_batch_events",
            "Events stored per transaction (group commit).",
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 25000),
            registry=self.registry,
        )
        self.flush_seconds = Histogram(
            "tokenpulse_flush_seconds",
            "Time to store one batch, commit included.",
            registry=self.registry,
        )
        self.held_events = Gauge(
            "tokenpulse_held_events",
            "Events taken and not yet answered.",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.database_errors = Counter(
            "tokenpulse_database_errors",
            "Failed flushes, by kind: unavailable or other.",
            ["kind"],
            registry=self.registry,
        )
        self.requests = Counter(
            "tokenpulse_http_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "tokenpulse_http_request_seconds",
            "Time to answer an HTTP request, by route and method.",
            ["route", "method"],
            registry=self.registry,
        )

    def flushed(self, stats: FlushStats) -> None:
        self.batch_events.observe(stats.events)
        self.flush_seconds.observe(stats.seconds)

    def failed(self, *, unavailable: bool) -> None:
        self.database_errors.labels("unavailable" if unavailable else "other").inc()

    def holding(self, events: int) -> None:
        self.held_events.set(events)

    def exposition(self) -> bytes:
        if os.environ.get(MULTIPROCESS_DIR):
            combined = CollectorRegistry()
            MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            return generate_latest(combined)
        return generate_latest(self.registry)


Scope_ = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope_, Receive, Send], Awaitable[None]]


class RequestMetrics:
    """ASGI middleware counting every HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope_, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            # The route's template, never the raw path: one series per endpoint, not per URL.
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(template, method, str(status)).inc()
            self.metrics.request_seconds.labels(template, method).observe(
                time.perf_counter() - started
            )
