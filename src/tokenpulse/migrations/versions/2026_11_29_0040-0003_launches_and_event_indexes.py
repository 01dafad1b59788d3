"""launches, and indexes that find one minute's raw events for milestones

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "launch",
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("launched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("model", name=op.f("pk_launch")),
    )
    op.create_index(
        "ix_usage_event_model_occurred_at_event_id",
        "usage_event",
        ["model", "occurred_at", "event_id"],
    )
    op.create_index(
        "ix_usage_event_occurred_at_brin",
        "usage_event",
        ["occurred_at"],
        postgresql_using="brin",
    )


def downgrade() -> None:
    op.drop_index("ix_usage_event_occurred_at_brin", table_name="usage_event")
    op.drop_index("ix_usage_event_model_occurred_at_event_id", table_name="usage_event")
    op.drop_table("launch")
