"""The ASGI application: `create_app(settings)` wires routers, error rendering and the lifespan."""

import gc
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.types import ASGIApp

from tokenpulse import health, runtime
from tokenpulse.access import AccessLayer
from tokenpulse.apidocs import router as apidocs_router
from tokenpulse.arrival import BodyTimeouts
from tokenpulse.auth import AUTHENTICATOR, RATE_LIMITS
from tokenpulse.budgets import router as budgets_router
from tokenpulse.budgets.router import BudgetRequest
from tokenpulse.clock import Clock, Monotonic, system_clock
from tokenpulse.dashboard import router as dashboard_router
from tokenpulse.database import create_engine
from tokenpulse.error_handlers import install_error_handlers
from tokenpulse.exports import router as exports_router
from tokenpulse.exports.answers import ExportCursor, ExportedEvent
from tokenpulse.exports.slots import ExportSlots
from tokenpulse.http_protocol import BoundedHeadHttpProtocol
from tokenpulse.ingest import dependencies as ingest
from tokenpulse.ingest import router as ingest_router
from tokenpulse.ingest.admission import BodyBudget
from tokenpulse.ingest.batcher import Batcher
from tokenpulse.ingest.events import EventBatch, EventRules, UsageEvent
from tokenpulse.ingest.writer import EventWriter
from tokenpulse.keys import router as keys_router
from tokenpulse.keys.authentication import KEY_REGISTRY, KeyAuthenticator
from tokenpulse.keys.registry import KeyRegistry
from tokenpulse.keys.router import KeyRequest
from tokenpulse.keys.store import StoredKey, find_key
from tokenpulse.launches import router as launches_router
from tokenpulse.launches.router import LaunchRequest
from tokenpulse.litellm import router as litellm_router
from tokenpulse.logs import configure_logging
from tokenpulse.metrics import Metrics
from tokenpulse.migrations import head_revision
from tokenpulse.notifications import router as notifications_router
from tokenpulse.notifications.notifier import Notifier
from tokenpulse.openai_usage import router as openai_usage_router
from tokenpulse.openapi import with_bearer_auth, with_body_schemas
from tokenpulse.orphans import end_with_parent
from tokenpulse.otlp import router as otlp_router
from tokenpulse.prices import router as prices_router
from tokenpulse.prices.router import PriceRequest
from tokenpulse.ratelimit import RateLimits, TokenBuckets
from tokenpulse.readiness import CommitProbe
from tokenpulse.replica import ReadRouting, Source
from tokenpulse.rollups.materialiser import Materialiser, pending
from tokenpulse.scopes import Scope
from tokenpulse.settings import Settings
from tokenpulse.storage.dedupe import window_for
from tokenpulse.storage.upkeep import Upkeep
from tokenpulse.usage import router as usage_router
from tokenpulse.webhooks import router as webhooks_router
from tokenpulse.webhooks.retries import RetryPolicy
from tokenpulse.webhooks.router import WebhookRequest
from tokenpulse.webhooks.sender import Sender

EXPORT_RETRY_AFTER_SECONDS = 5
"""`Retry-After` of an export refused for want of a free slot: exports last a while."""


class _Service(FastAPI):
    """FastAPI with the access layer outside even its error handling: the 500 answer to an
    unexpected failure carries its request id, and is logged and counted like any other."""

    def __init__(self, *, metrics: Metrics, **kwargs: Any) -> None:
        self._metrics = metrics
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        return AccessLayer(super().build_middleware_stack(), self._metrics)


def create_app(
    settings: Settings, *, clock: Clock = system_clock, monotonic: Monotonic = time.monotonic
) -> FastAPI:
    """The application; `clock` and `monotonic` are where every part of it reads the time."""
    if settings.database_url is None:
        raise ValueError("create_app needs settings.database_url; `tokenpulse serve` provides one")
    database_url = settings.database_url.get_secret_value()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings, database_url, pool_size=settings.db_pool_size)
        # Ingest has connections of its own, so that no number of slow dashboard reads can
        # keep a flush waiting for one.
        ingest_engine = create_engine(
            settings, database_url, pool_size=settings.batch_max_concurrent_flushes
        )

        # Unpooled: the lock that makes one worker the materialiser lives as long as the
        # connection that took it.
        materialiser_engine = create_engine(
            settings,
            database_url,
            pool_size=None,
            application_name="tokenpulse-materialiser",
            timeout_on_server=True,
        )
        notifier = Notifier(
            clock=clock,
            monotonic=monotonic,
            interval=settings.notify_interval.total_seconds(),
            lead=settings.max_event_lead,
            observer=metrics,
        )
        upkeep = Upkeep(
            clock=clock,
            monotonic=monotonic,
            max_event_age=settings.max_event_age,
            max_event_lead=settings.max_event_lead,
            window=window_for(settings),
        )

        async def after_fold(leader: AsyncConnection) -> None:
            await upkeep.when_due(leader)
            await notifier.when_due(leader)

        materialiser = Materialiser(
            materialiser_engine,
            interval=settings.materialise_interval.total_seconds(),
            observer=metrics,
            monotonic=monotonic,
            after_fold=after_fold,
        )
        # Deliveries have connections of their own, so that no number of slow dashboard reads
        # can keep an outcome from being written, nor the sender's polls hold up a read.
        webhook_engine = create_engine(
            settings, database_url, pool_size=2, application_name="tokenpulse-webhooks"
        )
        sender = Sender(
            webhook_engine,
            clock=clock,
            monotonic=monotonic,
            private_addresses=settings.webhook_private_addresses,
            interval=settings.notify_interval.total_seconds(),
            timeout=settings.webhook_timeout.total_seconds(),
            retries=RetryPolicy(
                first=settings.webhook_first_retry, retry_for=settings.webhook_retry_for
            ),
            observer=metrics,
        )

        # Exports hold a connection as long as their client reads: connections of their own,
        # so that none keeps a dashboard read or a flush waiting.
        export_engines: dict[Source, AsyncEngine] = {
            "primary": create_engine(
                settings,
                database_url,
                pool_size=settings.export_max_concurrent,
                application_name="tokenpulse-exports",
            )
        }
        # Dashboards' reads may go to a replica: a pool of their own there.
        replica_engine = None
        if settings.read_database_url is not None:
            replica_url = settings.read_database_url.get_secret_value()
            replica_engine = create_engine(
                settings,
                replica_url,
                pool_size=settings.db_pool_size,
                application_name="tokenpulse-reads",
            )
            export_engines["replica"] = create_engine(
                settings,
                replica_url,
                pool_size=settings.export_max_concurrent,
                application_name="tokenpulse-exports",
            )
        routing = ReadRouting(
            engine,
            replica_engine,
            max_lag=settings.read_max_lag.total_seconds(),
            monotonic=monotonic,
            observer=metrics,
        )
        export_slots = ExportSlots(
            export_engines,
            most=settings.export_max_concurrent,
            observer=metrics,
            retry_after=EXPORT_RETRY_AFTER_SECONDS,
        )

        async def find(key_id: str) -> StoredKey | None:
            async with engine.connect() as connection:
                return await find_key(connection, key_id)

        batcher = Batcher(
            EventWriter(ingest_engine, clock=clock, window=window_for(settings)).store,
            max_batch_events=settings.batch_max_events,
            max_wait=settings.batch_max_wait.total_seconds(),
            max_concurrent_flushes=settings.batch_max_concurrent_flushes,
            max_queued_events=settings.queue_max_events,
            max_account_events=max(
                settings.max_events_per_request,
                int(settings.queue_max_events * settings.tenant_share),
            ),
            answer_timeout=settings.ingest_timeout.total_seconds(),
            clock=monotonic,
            observer=metrics,
        )
        registry = KeyRegistry(
            find, ttl=settings.key_cache_seconds.total_seconds(), clock=monotonic
        )
        readiness = health.Readiness(
            engine, CommitProbe(monotonic), head_revision(), ingest=batcher
        )
        # What requests share: each piece is read by the typed dependency that names it, so
        # that a route gets what its signature declares and nothing else.
        runtime.SETTINGS.provide(app, settings)
        runtime.ENGINE.provide(app, engine)
        runtime.CLOCK.provide(app, clock)
        runtime.METRICS.provide(app, metrics)
        runtime.BODY_TIMEOUTS.provide(app, BodyTimeouts.of(settings, monotonic))
        RATE_LIMITS.provide(
            app,
            RateLimits(
                {
                    Scope.INGEST: settings.rate_limit_ingest,
                    Scope.READ: settings.rate_limit_read,
                    Scope.ADMIN: settings.rate_limit_admin,
                },
                burst_seconds=settings.rate_limit_burst_seconds,
                clock=monotonic,
            ),
        )
        KEY_REGISTRY.provide(app, registry)
        AUTHENTICATOR.provide(
            app,
            KeyAuthenticator(registry, observer=metrics, retry_after=settings.retry_after_seconds),
        )
        health.READINESS.provide(app, readiness)
        health.READ_BACKLOG.provide(app, pending)
        ingest.BATCHER.provide(app, batcher)
        ingest.BODY_BUDGET.provide(
            app,
            BodyBudget(
                settings.ingest_max_held_bytes,
                account_limit=int(settings.ingest_max_held_bytes * settings.tenant_share),
                retry_after=settings.retry_after_seconds,
            ),
        )
        ingest.EVENT_RULES.provide(app, EventRules.of(settings))
        ingest.EVENT_RATE.provide(app, _event_rate(settings, monotonic))
        exports_router.EXPORT_SLOTS.provide(app, export_slots)
        runtime.READ_ROUTING.provide(app, routing)
        await upkeep.at_start(engine)
        batcher.start()
        materialiser.start()
        sender.start()
        routing.start()
        try:
            with health.unready_on_stop_signal(readiness, settings.shutdown_drain.total_seconds()):
                yield
        finally:
            readiness.shutting_down = True
            await batcher.close()
            await sender.close()
            await materialiser.close()
            await materialiser_engine.dispose()
            await webhook_engine.dispose()
            await routing.close()
            for each in (*export_engines.values(), *([replica_engine] if replica_engine else [])):
                await each.dispose()
            await ingest_engine.dispose()
            await engine.dispose()

    app = _Service(
        metrics=metrics,
        title="tokenpulse",
        summary="Token-usage telemetry: durable, exactly-once usage events and exact aggregates.",
        description="Every operation but the health checks takes an API key, sent as "
        "`Authorization: Bearer <key>`; each says which scope it needs. `tokenpulse keys create` "
        "or `POST /v1/keys` makes one.",
        version="1",
        lifespan=lifespan,
        # Served from the package by the apidocs router instead of from public CDNs.
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(ingest_router.router)
    app.include_router(otlp_router.router)
    app.include_router(litellm_router.router)
    app.include_router(usage_router.router)
    app.include_router(exports_router.router)
    app.include_router(openai_usage_router.router)
    app.include_router(launches_router.router)
    app.include_router(prices_router.router)
    app.include_router(budgets_router.router)
    app.include_router(webhooks_router.router)
    app.include_router(notifications_router.router)
    app.include_router(keys_router.router)
    app.include_router(dashboard_router.router)
    app.include_router(apidocs_router.router)
    if settings.cors_origins:
        # Keys travel in the Authorization header, never in cookies: no credentials to allow.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=False,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Content-Encoding",
                "X-Request-ID",
                "OpenAI-Organization",
                "Tokenpulse-Consistency",
            ],
            expose_headers=["X-Request-ID", "Retry-After", runtime.READ_FROM_HEADER],
            max_age=600,
        )
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        # The bodies read by hand are not parameters FastAPI knows: their schemas are added;
        # keys are checked by the routes' own dependencies: the scheme they share is added.
        if app.openapi_schema is None:
            app.openapi_schema = with_bearer_auth(
                with_body_schemas(
                    generate_openapi(),
                    (
                        UsageEvent,
                        EventBatch,
                        KeyRequest,
                        LaunchRequest,
                        PriceRequest,
                        BudgetRequest,
                        WebhookRequest,
                        ExportedEvent,
                        ExportCursor,
                    ),
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _event_rate(settings: Settings, clock: Monotonic) -> TokenBuckets | None:
    rate = settings.rate_limit_ingest_events
    if not rate:
        return None
    # A burst holds at least one request of the most events, which is then never refused.
    burst = max(rate * settings.rate_limit_burst_seconds, settings.max_events_per_request)
    return TokenBuckets(rate, burst, clock=clock)


THREAD_SWITCH_SECONDS = 0.0005
"""How long a thread may hold the interpreter's lock while another waits for it."""


def app_from_environment() -> FastAPI:
    """Factory for uvicorn worker processes: settings come from the `TOKENPULSE_*` environment."""
    settings = Settings()
    # uvicorn has configured logging the same way already, but not the capture of warnings.
    configure_logging(settings.log_format, settings.log_level)
    end_with_parent()
    # uvicorn builds each connection's handler from its own configuration, which has no room
    # for this one: the worker hands its setting to the class it builds them from.
    BoundedHeadHttpProtocol.head_timeout = settings.head_timeout.total_seconds()
    BoundedHeadHttpProtocol.send_timeout = settings.send_timeout.total_seconds()
    # While a thread validates a large body, the event loop waits for the interpreter's lock at
    # every await; at Python's default interval of 5 ms, that is most of another tenant's
    # answer time.
    sys.setswitchinterval(THREAD_SWITCH_SECONDS)
    app = create_app(settings)
    # What exists now lives as long as the process: frozen out of the collector's way, it is no
    # longer walked by every full collection, which otherwise held an answer up for about 80 ms
    # now and then.
    gc.collect()
    gc.freeze()
    return app
