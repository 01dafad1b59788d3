"""Service configuration: one validated settings object, read from `TOKENPULSE_*` variables."""

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)
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


# The widest window of `occurred_at` that may be accepted: the raw events keep a partition for
# each day of it, and each partition costs every read that spans it a little planning.
MOST_EVENT_AGE = timedelta(days=400)
MOST_EVENT_LEAD = timedelta(days=7)

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
    read_database_url: SecretStr | None = Field(
        default=None,
        description="postgresql:// URL of a streaming replica of the database for dashboards' "
        "reads (aggregates, launch summaries, milestones, the OpenAI-compatible reads, exports); "
        "unset: every read goes to the database.",
    )
    read_max_lag: Duration = Field(
        default=timedelta(seconds=5),
        description="Most the replica may be behind the database and still answer reads; "
        "beyond it, reads go to the database until it catches up.",
    )
    data_dir: Annotated[Path, AfterValidator(_absolute)] | None = Field(
        default=None,
        description="Folder of the embedded PostgreSQL's data (used without a database URL); "
        "unset: `$XDG_DATA_HOME/tokenpulse`, else `~/.local/share/tokenpulse`. A relative path "
        "is taken from the current directory.",
    )

    currency: str = Field(
        default="usd",
        pattern=r"^[a-z]{3}$",
        description="The currency prices are set in and costs answered in, as a lowercase ISO "
        "4217 code; every price is taken to be in it.",
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
        default=timedelta(days=35),
        description="Oldest `occurred_at` accepted, before now (at most "
        f"`P{MOST_EVENT_AGE.days}D`: each day of it is a partition of the raw events).",
    )
    max_event_lead: Duration = Field(
        default=timedelta(minutes=5),
        description="Latest `occurred_at` accepted, after now (at most "
        f"`P{MOST_EVENT_LEAD.days}D`).",
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
    notify_interval: Duration = Field(
        default=timedelta(seconds=1),
        description="How often budgets and launches are searched for crossings to notify, and "
        "each worker looks for webhook deliveries due.",
    )
    webhook_timeout: Duration = Field(
        default=timedelta(seconds=10),
        description="Longest a webhook delivery attempt may take; beyond it, it is retried.",
    )
    webhook_first_retry: Duration = Field(
        default=timedelta(seconds=5),
        description="Wait after a delivery's first failed attempt; each further wait is twice "
        "as long, up to an hour.",
    )
    webhook_private_addresses: bool = Field(
        default=False,
        description="Whether webhooks may be sent to loopback, private and link-local "
        "addresses (the service's own network); otherwise such a URL is refused, and a host "
        "that resolves to one is refused at each attempt.",
    )
    webhook_retry_for: Duration = Field(
        default=timedelta(hours=24),
        description="How long after a notification is found its deliveries are still tried.",
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
    export_max_concurrent: int = Field(
        default=2,
        ge=1,
        le=50,
        description="Exports one worker streams at once (one per tenant), each on a database "
        "connection of its own; beyond them 503, and 429 for a tenant already streaming one.",
    )
    send_timeout: Duration = Field(
        default=timedelta(seconds=30),
        description="Longest an answer may wait for its client to read what was sent of it "
        "(a long export to a client that stopped reading); beyond it the connection is closed.",
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

    # What POST /v1/traces reads of a usage span beside its counts and model: attribute names,
    # looked up on the span and then on its resource, the first present winning.
    otlp_tenant_attributes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["tenant.id"],
        description="Comma-separated attributes that name a span's tenant when the key is bound "
        "to none: the first present, on the span and then on its resource.",
    )
    otlp_project_attributes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["project.id"],
        description="Comma-separated attributes that name a span's project, found the same way "
        "(none present: the default project).",
    )
    otlp_api_key_id_attributes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["api_key.id"],
        description="Comma-separated attributes that name a span's api_key_id, found the same "
        "way (none present: none).",
    )
    otlp_rollup_spans: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "gen_ai.operation.name=invoke_agent",
            "openinference.span.kind=AGENT",
            "openinference.span.kind=CHAIN",
        ],
        description="Comma-separated `attribute=value` pairs that mark a span whose token counts "
        "add up those of the calls it made, which have spans of their own: such a span is never "
        "counted (empty: none is marked).",
    )

    @field_validator(
        "otlp_tenant_attributes",
        "otlp_project_attributes",
        "otlp_api_key_id_attributes",
        "otlp_rollup_spans",
        mode="before",
    )
    @classmethod
    def _comma_separated_names(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator(
        "otlp_tenant_attributes", "otlp_project_attributes", "otlp_api_key_id_attributes"
    )
    @classmethod
    def _not_span_content(cls, names: list[str]) -> list[str]:
        # The call's content: no setting may make tokenpulse store a prompt as a name.
        content = (
            "gen_ai.input.messages",
            "gen_ai.output.messages",
            "gen_ai.system_instructions",
            "gen_ai.prompt",
            "gen_ai.completion",
            "gen_ai.tool.call.arguments",
            "gen_ai.tool.call.result",
            "llm.input_messages",
            "llm.output_messages",
            "llm.prompts",
            "input.value",
            "output.value",
        )
        for name in names:
            if name.startswith(content):
                raise ValueError(f"must not name a span's prompt or completion ({name})")
        return names

    @field_validator("max_event_age", "max_event_lead")
    @classmethod
    def _within_the_days_made(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        most = MOST_EVENT_AGE if info.field_name == "max_event_age" else MOST_EVENT_LEAD
        if value > most:
            raise ValueError(f"must be at most {most.days} days")
        return value

    @field_validator("otlp_rollup_spans")
    @classmethod
    def _attribute_value_pairs(cls, pairs: list[str]) -> list[str]:
        for pair in pairs:
            name, equals, value = pair.partition("=")
            if not (equals and name.strip() and value.strip()):
                raise ValueError(
                    "must be attribute=value pairs such as gen_ai.operation.name=invoke_agent, "
                    f"got {pair}"
                )
        return pairs

    # Where POST /v1/integrations/litellm finds who a LiteLLM payload's usage is: dotted paths
    # into the payload.
    litellm_tenant_field: str = Field(
        default="metadata.user_api_key_team_id",
        min_length=1,
        description="The LiteLLM payload field that names an event's tenant, when the key is "
        "bound to none.",
    )
    litellm_project_field: str = Field(
        default="metadata.user_api_key_project_id",
        description="The LiteLLM payload field that names an event's project (empty: none is "
        "read; a payload without it is in the default project).",
    )
    litellm_api_key_id_field: str = Field(
        default="metadata.user_api_key_hash",
        description="The LiteLLM payload field that names an event's api_key_id (empty: none "
        "is read).",
    )

    @field_validator("litellm_tenant_field", "litellm_project_field", "litellm_api_key_id_field")
    @classmethod
    def _a_payload_field(cls, value: str) -> str:
        segments = value.split(".")
        if value and any(not segment or segment.strip() != segment for segment in segments):
            raise ValueError("must be a dotted path such as metadata.user_api_key_team_id")
        # The call's content: no setting may make tokenpulse store a prompt as a name.
        if segments[0] in ("messages", "response", "error_str", "error_information"):
            raise ValueError(f"must not name the call's content ({segments[0]})")
        return value

    @field_validator("database_url", "read_database_url")
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
