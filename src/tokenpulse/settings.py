"""Service configuration: one validated settings object, read from `TOKENPULSE_*` variables."""

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tokenpulse.logs import LogFormat, LogLevel


def _plain_number_as_seconds(value: object) -> object:
    if isinstance(value, str):
        try:
            return timedelta(seconds=float(value))
        except ValueError:
            return value
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be a positive duration")
    return value


Duration = Annotated[
    timedelta, BeforeValidator(_plain_number_as_seconds), AfterValidator(_positive)
]
"""A positive duration: seconds (`2.5`) or ISO 8601 (`PT5M`, `P35D`)."""


def _default_data_dir() -> Path:
    """`$XDG_DATA_HOME/tokenpulse`, else `~/.local/share/tokenpulse`: one folder per user,
    whichever directory a command runs in."""
    xdg_data_home = Path(os.environ.get("XDG_DATA_HOME", ""))
    # The XDG specification has a relative value ignored, as if it were unset.
    if xdg_data_home.is_absolute():
        return xdg_data_home / "tokenpulse"
    try:
        home = Path.home()
    except RuntimeError:
        raise ValueError(
            "there is no home folder to keep the embedded PostgreSQL's data in: set "
            "TOKENPULSE_DATA_DIR, or TOKENPULSE_DATABASE_URL"
        ) from None
    return home / ".local" / "share" / "tokenpulse"


def _absolute(path: Path) -> Path:
    """Resolved once, at start: a relative folder is taken from the directory the command was
    started in, and does not move should the process change directory afterwards."""
    return path.expanduser().resolve()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOKENPULSE_", frozen=True, extra="ignore")

    database_url: SecretStr | None = Field(
        default=None,
        description="postgresql:// URL of the database; unset starts an embedded PostgreSQL.",
    )
    data_dir: Annotated[Path, AfterValidator(_absolute)] | None = Field(
        default=None,
        description="Folder of the embedded PostgreSQL's data (used without a database URL); "
        "unset: `$XDG_DATA_HOME/tokenpulse`, else `~/.local/share/tokenpulse`. A relative path "
        "is taken from the current directory.",
    )

    db_pool_size: int = Field(
        default=4,
        ge=1,
        le=100,
        description="Database connections per worker for reads; ingest has its own, one per "
        "concurrent flush.",
    )
    db_connect_timeout: Duration = Field(
        default=timedelta(seconds=5),
        description="How long to wait for a database connection before answering 503.",
    )
    db_statement_timeout: Duration = Field(
        default=timedelta(seconds=15), description="How long one database statement may take."
    )

    max_body_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        description="Largest ingest body, counted after gzip decompression.",
    )
    max_events_per_request: int = Field(
        default=10_000, ge=1, description="Most events in one ingest request."
    )
    max_tokens_per_count: int = Field(
        default=1_000_000_000,
        ge=1,
        # Far beyond any request; sums of counts are bigint, which holds 9.2 million such events.
        le=10**12,
        description="Largest value of any token count of an event.",
    )
    max_event_age: Duration = Field(
        default=timedelta(days=35), description="Oldest `occurred_at` accepted, before now."
    )
    max_event_lead: Duration = Field(
        default=timedelta(minutes=5), description="Latest `occurred_at` accepted, after now."
    )
    max_groups: int = Field(
        default=10_000,
        ge=1,
        description="Most groups one `/v1/totals` answer holds; more is a `422` that says how "
        "to narrow the query.",
    )
    max_series_results: int = Field(
        default=50_000,
        ge=1,
        description="Most results one `/v1/usage` answer holds over all its buckets (a group "
        "in a bucket is one result); more is a `422` that says how to narrow the query.",
    )

    batch_max_events: int = Field(
        default=5_000, ge=1, description="Most events stored in one transaction (group commit)."
    )
    batch_max_wait: Duration = Field(
        default=timedelta(milliseconds=2),
        description="Longest an event waits for others to share its transaction.",
    )
    batch_max_concurrent_flushes: int = Field(
        default=2, ge=1, description="Transactions one worker may have in flight at once."
    )
    materialise_interval: Duration = Field(
        default=timedelta(milliseconds=500),
        description="How often pending deltas are folded into the rollups (sooner while many "
        "are pending); reads are exact either way, but each reads what is still pending.",
    )
    ingest_max_held_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Most body bytes one worker holds for the requests it is reading; beyond "
        "it ingest answers 503.",
    )
    queue_max_events: int = Field(
        default=100_000,
        ge=1,
        description="Most events a worker holds unanswered; beyond it ingest answers 503.",
    )
    tenant_share: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="Largest share of a worker's unanswered events and body bytes that one "
        "tenant (or platform key) may hold; beyond it that tenant gets 429.",
    )
    body_timeout: Duration = Field(
        default=timedelta(seconds=30),
        description="Longest an ingest body may take to arrive; beyond it 408.",
    )
    body_idle_timeout: Duration = Field(
        default=timedelta(seconds=5),
        description="Longest an ingest body may go without sending a byte; beyond it 408.",
    )
    ingest_timeout: Duration = Field(
        default=timedelta(seconds=20),
        description="Longest an ingest request waits for its commit before answering 503.",
    )
    retry_after_seconds: int = Field(
        default=1, ge=1, description="`Retry-After` sent with 503 answers."
    )
    key_cache_seconds: Duration = Field(
        default=timedelta(milliseconds=500),
        description="How long a worker trusts what it read of a key: how soon a revocation takes "
        "effect everywhere (keep it under 1 s to refuse a revoked key within a second).",
    )
    rate_limit_ingest: float = Field(
        default=5000, ge=0, description="Requests per second per ingest key (0: no limit)."
    )
    rate_limit_ingest_events: float = Field(
        default=10_000,
        ge=0,
        description="Events per second per tenant (or platform key), stored, duplicate or "
        "rejected alike (0: no limit).",
    )
    rate_limit_read: float = Field(
        default=100, ge=0, description="Requests per second per read key (0: no limit)."
    )
    rate_limit_admin: float = Field(
        default=20, ge=0, description="Requests per second per admin key (0: no limit)."
    )
    rate_limit_burst_seconds: float = Field(
        default=2,
        gt=0,
        description="A key may save up this many seconds' worth of requests for a burst.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated browser origins allowed to call the API (none: no CORS).",
    )
    metrics_public: bool = Field(
        default=True,
        description="Serve /metrics without a key; false asks for a platform read or admin key.",
    )
    head_timeout: Duration = Field(
        default=timedelta(seconds=10),
        description="Longest a request line and headers may take to arrive, from the "
        "connection's opening or the request's first byte; beyond it 408 and the connection "
        "is closed (closed without an answer if nothing was sent).",
    )
    keepalive_timeout: int = Field(
        default=5,
        ge=1,
        description="Seconds an idle keep-alive connection stays open before it is closed "
        "(whole seconds, as uvicorn counts them).",
    )
    shutdown_drain: Annotated[timedelta, BeforeValidator(_plain_number_as_seconds)] = Field(
        default=timedelta(0),
        ge=timedelta(0),
        description="After SIGTERM, how long a worker keeps serving with /readyz answering 503 "
        "before it stops accepting connections.",
    )
    shutdown_grace: Duration = Field(
        default=timedelta(seconds=20),
        description="How long a stopping worker lets in-flight requests finish.",
    )
    log_format: LogFormat = Field(
        default="json",
        description="`json`: one JSON object per line on stderr; `text`: plain lines for people.",
    )
    log_level: LogLevel = Field(
        default="info", description="`debug`, `info`, `warning` or `error`: the least logged."
    )

    @field_validator("database_url")
    @classmethod
    def _must_be_postgresql(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("postgresql://", "postgres://", "postgresql+asyncpg://")
        ):
            raise ValueError("must be a postgresql:// URL")
        return value

    def embedded_data_dir(self) -> Path:
        """`data_dir`, else the user's default folder: looked for only when the embedded
        PostgreSQL is used, so that a service given a database URL needs no home folder.

        Raises ValueError when there is neither.
        """
        return self.data_dir if self.data_dir is not None else _absolute(_default_data_dir())

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value
