"""The service's own figures, in Prometheus text format, added up across worker processes."""

import os
import re
from contextlib import suppress
from pathlib import Path
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

# With several workers, `tokenpulse serve` points PROMETHEUS_MULTIPROC_DIR at a fresh folder;
# each worker writes its figures there, and any worker's `/metrics` adds them all up. Counters
# and histograms of a worker that has exited still count (totals never go back); its gauges,
# which say how things are now, are dropped when the next scrape finds it gone, however it
# ended (a stop, a crash, a kill).

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db")


class Flush(Protocol):
    """One group commit, as the batcher reports it."""

    @property
    def events(self) -> int: ...

    @property
    def seconds(self) -> float: ...


class Detection(Protocol):
    """One search for crossings, as the notifier reports it."""

    @property
    def found(self) -> int: ...

    @property
    def corrected(self) -> int: ...

    @property
    def failed(self) -> int: ...


class Fold(Protocol):
    """One fold of pending deltas, as the materialiser reports it."""

    @property
    def rows(self) -> int: ...

    @property
    def lag(self) -> float: ...


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
        self.workers = Gauge(
            "tokenpulse_workers",
            "Worker processes running (each counts itself).",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.workers.set(1)
        self.database_errors = Counter(
            "tokenpulse_database_errors",
            "Database operations that failed, by kind: unavailable (unreachable, overloaded, "
            "timed out) or other.",
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

        self.leader = Gauge(
            "tokenpulse_materialiser_leader",
            "1 in the worker that folds pending deltas into the rollups (one per database), "
            "0 in the others; the pid label says which worker leads.",
            multiprocess_mode="liveall",
            registry=self.registry,
        )
        self.leader.set(0)
        self.fold_seconds = Histogram(
            "tokenpulse_fold_seconds",
            "Time to fold pending deltas into every rollup, commit included.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.folded_rows = Counter(
            "tokenpulse_folded_rows",
            "Pending delta rows folded into the rollups.",
            registry=self.registry,
        )
        self.fold_failures = Counter(
            "tokenpulse_fold_failures",
            "Folds that failed (they are retried; reads stay exact meanwhile).",
            registry=self.registry,
        )
        self.fold_lag = Histogram(
            "tokenpulse_fold_lag_seconds",
            "Per fold, the age of the oldest delta it folded.",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.pending_rows = Gauge(
            "tokenpulse_pending_rows",
            "Pending delta rows not yet folded into the rollups, as of this scrape.",
            multiprocess_mode="mostrecent",
            registry=self.registry,
        )
        self.materialiser_lag = Gauge(
            "tokenpulse_materialiser_lag_seconds",
            "Age of the oldest pending delta, as of this scrape: how far the rollups are behind.",
            multiprocess_mode="mostrecent",
            registry=self.registry,
        )

        self.notifications = Counter(
            "tokenpulse_notifications",
            "Crossings of budget thresholds and launch milestones recorded, by outcome: found "
            "(notified) or corrected (a late event moved one found before).",
            ["outcome"],
            registry=self.registry,
        )
        self.detection_seconds = Histogram(
            "tokenpulse_detection_seconds",
            "Time of one search for crossings of every budget and launch (it delays the fold "
            "after it by as much).",
            registry=self.registry,
        )
        self.detection_failures = Counter(
            "tokenpulse_detection_failures",
            "Searches for crossings that failed, of one budget or launch or of them all (the "
            "next detection tries again).",
            registry=self.registry,
        )
        self.webhook_attempts = Counter(
            "tokenpulse_webhook_attempts",
            "Webhook delivery attempts, by outcome: delivered or failed (retried later).",
            ["outcome"],
            registry=self.registry,
        )

        self.replica_lag_seconds = Gauge(
            "tokenpulse_replica_lag_seconds",
            "How far behind the database the read replica may be (+Inf: not known); the largest "
            "any worker saw.",
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.exported_events = Counter(
            "tokenpulse_exported_events",
            "Events written to export answers.",
            registry=self.registry,
        )
        self.exports_running = Gauge(
            "tokenpulse_exports_running",
            "Export answers being streamed.",
            multiprocess_mode="livesum",
            registry=self.registry,
        )

    def flushed(self, stats: Flush) -> None:
        self.batch_events.observe(stats.events)
        self.flush_seconds.observe(stats.seconds)

    def failed(self, *, unavailable: bool) -> None:
        self.database_errors.labels("unavailable" if unavailable else "other").inc()

    def holding(self, events: int) -> None:
        self.held_events.set(events)

    def leading(self, leads: bool) -> None:
        self.leader.set(1 if leads else 0)

    def folded(self, folded: Fold, seconds: float) -> None:
        self.fold_seconds.observe(seconds)
        self.folded_rows.inc(folded.rows)
        if folded.rows:
            self.fold_lag.observe(folded.lag)

    def fold_failed(self) -> None:
        self.fold_failures.inc()

    def detected(self, detected: Detection, seconds: float) -> None:
        self.detection_seconds.observe(seconds)
        self.notifications.labels("found").inc(detected.found)
        self.notifications.labels("corrected").inc(detected.corrected)
        self.detection_failures.inc(detected.failed)

    def detection_failed(self) -> None:
        self.detection_failures.inc()

    def attempted(self, delivered: bool) -> None:
        self.webhook_attempts.labels("delivered" if delivered else "failed").inc()

    def replica_lag(self, seconds: float | None) -> None:
        self.replica_lag_seconds.set(float("inf") if seconds is None else seconds)

    def exporting(self, running: int) -> None:
        self.exports_running.set(running)

    def exported(self, events: int) -> None:
        self.exported_events.inc(events)

    def pending(self, rows: int, lag: float) -> None:
        self.pending_rows.set(rows)
        self.materialiser_lag.set(lag)

    def exposition(self) -> bytes:
        if directory := os.environ.get(MULTIPROCESS_DIR):
            forget_exited_workers(Path(directory))
            combined = CollectorRegistry()
            MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            return generate_latest(combined)
        return generate_latest(self.registry)


def forget_exited_workers(directory: Path) -> None:
    """Drop the gauges of workers that are no longer running."""
    for path in directory.glob("gauge_live*.db"):
        if (match := _LIVE_GAUGE_FILE.fullmatch(path.name)) and not _is_running(int(match[1])):
            # Another worker's scrape may be removing the same files at this moment.
            with suppress(FileNotFoundError):
                mark_process_dead(int(match[1]), str(directory))  # type: ignore[no-untyped-call]


def _is_running(pid: int) -> bool:
    """Whether `pid` is a running process of this user (a worker's pid reused by another
    user's process is not)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
