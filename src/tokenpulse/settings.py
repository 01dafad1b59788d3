"""Service configuration: one validated settings object, read from `TOKENPULSE_*` variables."""

from datetime import timedelta
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOKENPULSE_", frozen=True, extra="ignore")

    database_url: SecretStr | None = Field(
        default=None,
        description="postgresql:// URL of the database; unset starts an embedded PostgreSQL.",
    )
    data_dir: Path = Field(
        default=Path(".tokenpulse"), description="Where the embedded PostgreSQL keeps its data."
    )

    db_pool_size: int = Field(default=5, ge=1, le=100)
    db_connect_timeout: timedelta = Field(default=timedelta(seconds=5))
    db_statement_timeout: timedelta = Field(default=timedelta(seconds=15))

    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_events_per_request: int = Field(default=10_000, ge=1)
    max_tokens_per_count: int = Field(default=1_000_000_000, ge=1)
    max_event_age: timedelta = Field(default=timedelta(days=35))
    max_event_lead: timedelta = Field(default=timedelta(minutes=5))

    batch_max_events: int = Field(default=5_000, ge=1)
    batch_max_wait: timedelta = Field(default=timedelta(milliseconds=2))
    batch_max_concurrent_flushes: int = Field(default=2, ge=1)
    queue_max_events: int = Field(default=100_000, ge=1)
    ingest_timeout: timedelta = Field(default=timedelta(seconds=20))
    retry_after_seconds: int = Field(default=1, ge=1)

    shutdown_grace: timedelta = Field(default=timedelta(seconds=20))

    @field_validator("database_url")
    @classmethod
    def _must_be_postgresql(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("postgresql://", "postgres://", "postgresql+asyncpg://")
        ):
            raise ValueError("must be a postgresql:// URL")
        return value
