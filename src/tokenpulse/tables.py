"""The database schema as SQLAlchemy Core tables; Alembic migrations are written against it."""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

usage_event = Table(
    "usage_event",
    metadata,
    # Fixed-width columns first, then the texts: no padding between them.
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("input_tokens", BigInteger, nullable=False),
    Column("cached_input_tokens", BigInteger, nullable=False),
    # Events stored before cache writes were counted hold 0.
    Column("cache_write_input_tokens", BigInteger, nullable=False, server_default=text("0")),
    Column("output_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    Column("tenant", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("project", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("api_key_id", Text, nullable=True),
    Column("attributes", JSONB, nullable=True),
    # Milestones read the raw events of one minute in crossing order, usually for one model.
    Index("ix_usage_event_model_occurred_at_event_id", "model", "occurred_at", "event_id"),
    # Any other filter narrows to the minute through block ranges: events arrive roughly in
    # time order, and a BRIN index costs next to nothing to keep up at ingest.
    Index("ix_usage_event_occurred_at_brin", "occurred_at", postgresql_using="brin"),
    # A partition a day (storage.partitions), dropped whole when retention is past it. No
    # unique key: one on a partitioned table must hold the partition key, and an event is
    # stored once whatever its occurred_at says; event_key is what keeps it once.
    postgresql_partition_by="RANGE (occurred_at)",
)

event_key = Table(
    "event_key",
    metadata,
    Column("tenant", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("slot", Integer, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    # The idempotency key, within a slot: an event is stored once per tenant, whatever else it
    # says, for the dedupe window (storage.dedupe). A partition a slot: a slot past the window
    # is dropped whole.
    PrimaryKeyConstraint("tenant", "event_id", "slot"),
    postgresql_partition_by="LIST (slot)",
)

dedupe_window = Table(
    "dedupe_window",
    metadata,
    Column("id", SmallInteger, nullable=False),
    Column("slot", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("id"),
    CheckConstraint("id = 1", name="one_row"),
)
"""The slot of event_key that stores receive into, since when (one row, never emptied)."""

# Rollup rows store "no api key" as the empty string, which a real key id can never be, so that
# the primary key needs no nullable column and ON CONFLICT can merge into it.
NO_API_KEY = ""

ROLLUP_DIMENSIONS = ("tenant", "project", "model", "api_key_id")
ROLLUP_COUNTS = (
    "requests",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
    "reasoning_tokens",
)
ADDED_COUNTS = frozenset({"cache_write_input_tokens"})
"""Counts added once rows were stored: those rows, and the rows of a previous version still
running, hold 0."""

TENANT_INDEX_COUNTS = tuple(count for count in ROLLUP_COUNTS if count not in ADDED_COUNTS)
"""The counts the tenant index of the (tenant, model) rollups holds: those it was built with.
Rebuilding it to hold an added count would keep every writer waiting for minutes on a large
database (migrations run in one transaction, so not CONCURRENTLY): a tenant's reads visit the
table for the added counts."""


# Each grain is rolled up by every dimension, and again by fewer: a query reads the smallest
# set that holds its group_by and filters, so "per model" sums 8 rows a bucket, not 20,000.
ROLLUP_CUBES = {
    "": ROLLUP_DIMENSIONS,
    "_tenant_model": ("tenant", "model"),
    "_model": ("model",),
}


ROLLUP_FILLFACTOR = "70"

# Hour and day rows by model also keep their busiest minute (by total tokens, the earliest of
# ties), so that a launch's peak minute over a month reads about 30 day rows, not 43,200 minutes.
PEAK_CUBE = "_model"


def _count_columns() -> list[Column[int]]:
    """A rollup's count columns; an added one defaults to 0, as the migration that added it."""
    return [
        Column(count, BigInteger, nullable=False)
        if count not in ADDED_COUNTS
        else Column(count, BigInteger, nullable=False, server_default=text("0"))
        for count in ROLLUP_COUNTS
    ]


def _rollup(name: str, dimensions: tuple[str, ...], *, peaks: bool) -> Table:
    table = Table(
        name,
        metadata,
        Column("bucket_start", DateTime(timezone=True), nullable=False),
        *(Column(dimension, Text, nullable=False) for dimension in dimensions),
        *_count_columns(),
        PrimaryKeyConstraint("bucket_start", *dimensions),
        # Folds add to rows again and again: room on each page lets PostgreSQL update a row in
        # place (a HOT update) rather than add index entries for every new version.
        postgresql_with={"fillfactor": ROLLUP_FILLFACTOR},
    )
    if peaks:
        table.append_column(Column("peak_minute", DateTime(timezone=True), nullable=False))
        table.append_column(Column("peak_minute_tokens", BigInteger, nullable=False))
    if dimensions == ("tenant", "model"):
        # A tenant's dashboard reads its own rows over days without scanning every tenant's,
        # and their counts (but the added ones) from this index: the rows it needs lie together
        # here, not in the table, where each bucket's rows of every tenant are interleaved.
        Index(
            f"ix_{name}_tenant_bucket_start",
            table.c.tenant,
            table.c.bucket_start,
            postgresql_include=["model", *TENANT_INDEX_COUNTS],
        )
    return table


ROLLUP_TABLES = {
    grain: tuple(
        _rollup(
            f"rollup_{grain}{suffix}",
            dimensions,
            peaks=grain != "minute" and suffix == PEAK_CUBE,
        )
        for suffix, dimensions in ROLLUP_CUBES.items()
    )
    for grain in ("minute", "hour", "day")
}
"""Per grain, its rollup tables, the one with every dimension first."""

# What flushes have stored and the materialiser has not yet folded into the rollups: per minute
# and every dimension, one row per flush and group. Flushes only append here, so concurrent
# flushes share no row; a fold moves rows out in the transaction that adds them to every rollup,
# and every read adds the rows still here to the rollups it reads. No key: rows are never
# updated, only appended and deleted, and a fold reads them all.
rollup_pending = Table(
    "rollup_pending",
    metadata,
    Column("bucket_start", DateTime(timezone=True), nullable=False),
    *(Column(dimension, Text, nullable=False) for dimension in ROLLUP_DIMENSIONS),
    *_count_columns(),
    # When the flush committed, near enough: the age of the oldest row is the materialiser's lag.
    Column("appended_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Reads keep to the minutes of their range: a range long past reads no pending row.
    Index("ix_rollup_pending_bucket_start", "bucket_start"),
    # Every fold leaves its rows dead: autovacuum cleans up after a few thousand of them, not
    # after a fifth of a table that is nearly always empty.
    postgresql_with={
        "autovacuum_vacuum_scale_factor": "0",
        "autovacuum_vacuum_threshold": "5000",
        "autovacuum_vacuum_insert_scale_factor": "0",
        "autovacuum_vacuum_insert_threshold": "5000",
    },
)

api_key = Table(
    "api_key",
    metadata,
    Column("id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("scope", Text, nullable=False),
    # NULL: a platform key, which may act for every tenant.
    Column("tenant", Text, nullable=True),
    # SHA-256 of the random secret; the secret itself is shown once and never stored.
    Column("secret_hash", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("id"),
    CheckConstraint("scope IN ('ingest', 'read', 'admin')", name="scope"),
)

launch = Table(
    "launch",
    metadata,
    Column("model", Text, nullable=False),
    Column("launched_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("model"),
)

PRICE_PLACES = 12
PRICE = Numeric(24, PRICE_PLACES)
"""A price per million tokens: up to 12 digits on each side of the point, kept exactly."""

# Versions of a model's prices, each from a whole minute until the next one's. A version is never
# changed in place: one replaced or withdrawn keeps its row, with when that happened, so that an
# answer that named it can still be explained.
price_version = Table(
    "price_version",
    metadata,
    Column("id", BigInteger, Identity(), nullable=False),
    Column("model", Text, nullable=False),
    Column("effective_from", DateTime(timezone=True), nullable=False),
    Column("input", PRICE, nullable=False),
    Column("cached_input", PRICE, nullable=False),
    Column("cache_write_input", PRICE, nullable=False),
    Column("output", PRICE, nullable=False),
    # NULL: reasoning tokens cost what output does.
    Column("reasoning", PRICE, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("id"),
    # Reads split their ranges where versions start, at whole minutes: rows of no grain span two.
    CheckConstraint(
        "date_trunc('minute', effective_from, 'UTC') = effective_from", name="whole_minute"
    ),
    # The versions in effect: one a model and minute.
    Index(
        "ix_price_version_model_effective_from",
        "model",
        "effective_from",
        unique=True,
        postgresql_where=text("ended_at IS NULL"),
    ),
)

# The one row `/readyz` writes and commits, so that readiness says whether a commit can succeed
# now (a full disk, a read-only database), not only whether the database answers queries.
readiness_probe = Table(
    "readiness_probe",
    metadata,
    Column("id", SmallInteger, nullable=False),
    Column("written_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("id"),
    CheckConstraint("id = 1", name="one_row"),
)

AMOUNT = Numeric()
"""A count of a measure or an amount of money in the currency, kept exactly."""

# Where notifications go: a URL and the secret their deliveries are signed with. A webhook
# deleted keeps its row (`deleted_at`), so that the deliveries made to it stay explained.
webhook = Table(
    "webhook",
    metadata,
    Column("id", Text, nullable=False),
    # NULL: a platform webhook, which a budget of any tenant may notify.
    Column("tenant", Text, nullable=True),
    Column("url", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("secret", Text, nullable=False),
    Column("events", ARRAY(Text), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("id"),
)

# A running sum to watch over a window, and the amounts of it to notify at. A budget deleted keeps
# its row, so that its notifications stay explained.
budget = Table(
    "budget",
    metadata,
    Column("id", Text, nullable=False),
    Column("tenant", Text, nullable=False),
    Column("project", Text, nullable=True),
    Column("model", Text, nullable=True),
    Column("api_key_id", Text, nullable=True),
    Column("metric", Text, nullable=False),
    Column("limit_value", AMOUNT, nullable=False),
    # The window: day, week or month in `tz`, or since an instant.
    Column("period", Text, nullable=False),
    Column("tz", Text, nullable=False),
    # The start of the one window of a `since` budget; NULL for the others.
    Column("since", DateTime(timezone=True), nullable=True),
    Column("thresholds", ARRAY(AMOUNT), nullable=False),
    Column("amounts", ARRAY(AMOUNT), nullable=False),
    Column("webhook_id", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("id"),
    ForeignKeyConstraint(["webhook_id"], ["webhook.id"]),
    CheckConstraint("period IN ('day', 'week', 'month', 'since')", name="period"),
    CheckConstraint("(period = 'since') = (since IS NOT NULL)", name="since"),
    Index("ix_budget_tenant", "tenant", postgresql_where=text("deleted_at IS NULL")),
)

# The outbox: one row a crossing, written in the transaction that found it. `subject` and `amount`
# name the crossing (a budget's window, a launch), so that no crossing is ever recorded twice.
notification = Table(
    "notification",
    metadata,
    Column("id", Text, nullable=False),
    # The order notifications were recorded in: of one search, in increasing amount.
    Column("seq", BigInteger, Identity(), nullable=False),
    Column("type", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("amount", AMOUNT, nullable=False),
    # NULL: a launch milestone, or a platform webhook's test.
    Column("tenant", Text, nullable=True),
    Column("budget_id", Text, nullable=True),
    Column("body", JSONB, nullable=False),
    Column("found_at", DateTime(timezone=True), nullable=False),
    Column("corrected_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("id"),
    Index("uq_notification_subject_amount", "subject", "amount", unique=True),
    Index("ix_notification_found_at", "found_at", "seq"),
    # A tenant's own, newest first, however many other tenants have.
    Index("ix_notification_tenant", "tenant", "found_at", "seq"),
)

# One notification's way to one webhook: due at `next_attempt_at` while `pending`. A sender
# claims it by moving `next_attempt_at` past the longest an attempt may take, so that it is sent
# again, by any worker, only if the attempt's outcome was never written.
delivery = Table(
    "delivery",
    metadata,
    Column("notification_id", Text, nullable=False),
    Column("webhook_id", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("notification_id", "webhook_id"),
    ForeignKeyConstraint(["notification_id"], ["notification.id"]),
    ForeignKeyConstraint(["webhook_id"], ["webhook.id"]),
    CheckConstraint("state IN ('pending', 'delivered', 'failed', 'cancelled')", name="state"),
    Index(
        "ix_delivery_next_attempt_at",
        "next_attempt_at",
        postgresql_where=text("state = 'pending'"),
    ),
    Index("ix_delivery_webhook_id", "webhook_id"),
)

delivery_attempt = Table(
    "delivery_attempt",
    metadata,
    Column("id", BigInteger, Identity(), nullable=False),
    Column("notification_id", Text, nullable=False),
    Column("webhook_id", Text, nullable=False),
    Column("attempted_at", DateTime(timezone=True), nullable=False),
    # NULL: no answer came (the error says why).
    Column("status", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("seconds", Float, nullable=False),
    PrimaryKeyConstraint("id"),
    ForeignKeyConstraint(
        ["notification_id", "webhook_id"],
        ["delivery.notification_id", "delivery.webhook_id"],
    ),
    Index("ix_delivery_attempt_notification_id", "notification_id", "webhook_id"),
)
