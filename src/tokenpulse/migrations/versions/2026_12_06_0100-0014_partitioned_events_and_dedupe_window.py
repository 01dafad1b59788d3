"""usage events partitioned by day; event keys kept for a dedupe window

`usage_event` becomes a table partitioned by `occurred_at`, a partition a day, which serving
creates ahead of the events (storage.partitions). The existing table, renamed
`usage_event_legacy`, becomes its partition for every event before the first day, without being
copied or rewritten: it is read twice, for its newest event and while a check proves its range,
then attached; readers and writers wait meanwhile. On a database that holds events that range
ends at the second midnight (UTC) after this migration, or after the newest event if later; on
one that holds none, long before any event accepted, and the days start at once. A writer of
the previous version cannot store into the partitioned table: stop them first.

Keys of new events go to `event_key`, partitioned by slot, for the dedupe window
(storage.dedupe); `usage_event_legacy` keeps its primary key, which stores check too.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EMPTY_DATABASE_DAYS_START = "2000-01-01 00:00:00+00"
COLUMNS = (
    "occurred_at, received_at, input_tokens, cached_input_tokens, cache_write_input_tokens,"
    " output_tokens, reasoning_tokens, tenant, event_id, project, model, api_key_id, attributes"
)


INDEXES = (
    (
        "ix_usage_event_model_occurred_at_event_id",
        "ix_usage_event_legacy_model_occurred_at_event_id",
    ),
    ("ix_usage_event_occurred_at_brin", "ix_usage_event_legacy_occurred_at_brin"),
)


def _instant(name: str, **kwargs: object) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, **kwargs)  # type: ignore[arg-type]


def upgrade() -> None:
    connection = op.get_bind()
    # From here to the commit no one stores: what is read now stays true.
    op.execute("LOCK TABLE usage_event IN SHARE MODE")
    # Past the newest event stored, however far ahead the previous version accepted it.
    days_start = connection.exec_driver_sql(
        "SELECT greatest(date_trunc('day', now(), 'UTC') + interval '2 days',"
        " date_trunc('day', max(occurred_at), 'UTC') + interval '1 day')"
        " FROM usage_event HAVING count(*) > 0"
    ).scalar()
    if days_start is None:
        days_start = EMPTY_DATABASE_DAYS_START

    op.rename_table("usage_event", "usage_event_legacy")
    op.execute(
        "ALTER TABLE usage_event_legacy RENAME CONSTRAINT pk_usage_event TO pk_usage_event_legacy"
    )
    for old, new in INDEXES:
        op.execute(f"ALTER INDEX {old} RENAME TO {new}")

    op.create_table(
        "usage_event",
        _instant("occurred_at"),
        _instant("received_at", server_default=sa.func.now()),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_write_input_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("project", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("api_key_id", sa.Text(), nullable=True),
        sa.Column("attributes", postgresql.JSONB(), nullable=True),
        postgresql_partition_by="RANGE (occurred_at)",
    )
    # Defined as the legacy table's are, so that attaching it adopts its indexes, not builds them.
    op.create_index(
        "ix_usage_event_model_occurred_at_event_id",
        "usage_event",
        ["model", "occurred_at", "event_id"],
    )
    op.create_index(
        "ix_usage_event_occurred_at_brin", "usage_event", ["occurred_at"], postgresql_using="brin"
    )
    # The check proves the partition's range, so attaching does not scan again.
    op.execute(
        "ALTER TABLE usage_event_legacy ADD CONSTRAINT ck_usage_event_legacy_before_the_days"
        f" CHECK (occurred_at < '{days_start}')"
    )
    op.execute(
        "ALTER TABLE usage_event ATTACH PARTITION usage_event_legacy"
        f" FOR VALUES FROM (MINVALUE) TO ('{days_start}')"
    )
    op.execute(
        "ALTER TABLE usage_event_legacy DROP CONSTRAINT ck_usage_event_legacy_before_the_days"
    )

    op.create_table(
        "event_key",
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        _instant("received_at"),
        sa.PrimaryKeyConstraint("tenant", "event_id", "slot", name=op.f("pk_event_key")),
        postgresql_partition_by="LIST (slot)",
    )
    op.execute("CREATE TABLE event_key_1 PARTITION OF event_key FOR VALUES IN (1)")
    op.create_table(
        "dedupe_window",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        _instant("started_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dedupe_window")),
        sa.CheckConstraint("id = 1", name=op.f("ck_dedupe_window_one_row")),
    )
    op.execute("INSERT INTO dedupe_window (id, slot, started_at) VALUES (1, 1, now())")


def downgrade() -> None:
    # The days' events go back into one table; of two with one key (sent again past the
    # dedupe window), the one received first stays.
    op.execute("ALTER TABLE usage_event DETACH PARTITION usage_event_legacy")
    op.execute(
        f"INSERT INTO usage_event_legacy ({COLUMNS}) SELECT {COLUMNS} FROM usage_event"
        " ORDER BY received_at ON CONFLICT (tenant, event_id) DO NOTHING"
    )
    op.drop_table("dedupe_window")
    op.drop_table("event_key")
    op.drop_table("usage_event")
    for old, new in INDEXES:
        op.execute(f"ALTER INDEX {new} RENAME TO {old}")
    op.execute(
        "ALTER TABLE usage_event_legacy RENAME CONSTRAINT pk_usage_event_legacy TO pk_usage_event"
    )
    op.rename_table("usage_event_legacy", "usage_event")
