"""usage events and minute, hour and day rollups

Revision ID: 0001
Revises:
Create Date: 2026-11-28 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DIMENSIONS = ("tenant", "project", "model", "api_key_id")
COUNTS = ("requests", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")


def upgrade() -> None:
    op.create_table(
        "usage_event",
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("project", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("api_key_id", sa.Text(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
        sa.Column("attributes", postgresql.JSONB(), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "event_id", name=op.f("pk_usage_event")),
    )
    for grain in ("minute", "hour", "day"):
        table = f"rollup_{grain}"
        op.create_table(
            table,
            sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
            *(sa.Column(dimension, sa.Text(), nullable=False) for dimension in DIMENSIONS),
            *(sa.Column(count, sa.BigInteger(), nullable=False) for count in COUNTS),
            sa.PrimaryKeyConstraint("bucket_start", *DIMENSIONS, name=op.f(f"pk_{table}")),
        )


def downgrade() -> None:
    for grain in ("day", "hour", "minute"):
        op.drop_table(f"rollup_{grain}")
    op.drop_table("usage_event")
