"""budgets, webhooks, and the outbox of notifications with their deliveries

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AMOUNT = sa.Numeric()


def _instant(name: str, *, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "webhook",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("events", postgresql.ARRAY(sa.Text()), nullable=False),
        _instant("created_at", nullable=False),
        _instant("deleted_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook")),
    )
    op.create_table(
        "budget",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("project", sa.Text(), nullable=True),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("api_key_id", sa.Text(), nullable=True),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("limit_value", AMOUNT, nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("tz", sa.Text(), nullable=False),
        _instant("since", nullable=True),
        sa.Column("thresholds", postgresql.ARRAY(AMOUNT), nullable=False),
        sa.Column("amounts", postgresql.ARRAY(AMOUNT), nullable=False),
        sa.Column("webhook_id", sa.Text(), nullable=True),
        _instant("created_at", nullable=False),
        _instant("deleted_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget")),
        sa.ForeignKeyConstraint(
            ["webhook_id"], ["webhook.id"], name=op.f("fk_budget_webhook_id_webhook")
        ),
        sa.CheckConstraint(
            "period IN ('day', 'week', 'month', 'since')", name=op.f("ck_budget_period")
        ),
        sa.CheckConstraint(
            "(period = 'since') = (since IS NOT NULL)", name=op.f("ck_budget_since")
        ),
    )
    op.create_index(
        "ix_budget_tenant", "budget", ["tenant"], postgresql_where=sa.text("deleted_at IS NULL")
    )
    op.create_table(
        "notification",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("tenant", sa.Text(), nullable=True),
        sa.Column("budget_id", sa.Text(), nullable=True),
        sa.Column("body", postgresql.JSONB(), nullable=False),
        _instant("found_at", nullable=False),
        _instant("corrected_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification")),
    )
    op.create_index(
        "uq_notification_subject_amount", "notification", ["subject", "amount"], unique=True
    )
    op.create_index("ix_notification_found_at", "notification", ["found_at", "seq"])
    op.create_index("ix_notification_tenant", "notification", ["tenant", "found_at", "seq"])
    op.create_table(
        "delivery",
        sa.Column("notification_id", sa.Text(), nullable=False),
        sa.Column("webhook_id", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _instant("next_attempt_at", nullable=True),
        _instant("delivered_at", nullable=True),
        sa.PrimaryKeyConstraint("notification_id", "webhook_id", name=op.f("pk_delivery")),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notification.id"],
            name=op.f("fk_delivery_notification_id_notification"),
        ),
        sa.ForeignKeyConstraint(
            ["webhook_id"], ["webhook.id"], name=op.f("fk_delivery_webhook_id_webhook")
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'delivered', 'failed', 'cancelled')",
            name=op.f("ck_delivery_state"),
        ),
    )
    op.create_index(
        "ix_delivery_next_attempt_at",
        "delivery",
        ["next_attempt_at"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_index("ix_delivery_webhook_id", "delivery", ["webhook_id"])
    op.create_table(
        "delivery_attempt",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("notification_id", sa.Text(), nullable=False),
        sa.Column("webhook_id", sa.Text(), nullable=False),
        _instant("attempted_at", nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_attempt")),
        sa.ForeignKeyConstraint(
            ["notification_id", "webhook_id"],
            ["delivery.notification_id", "delivery.webhook_id"],
            name=op.f("fk_delivery_attempt_notification_id_delivery"),
        ),
    )
    op.create_index(
        "ix_delivery_attempt_notification_id",
        "delivery_attempt",
        ["notification_id", "webhook_id"],
    )


def downgrade() -> None:
    op.drop_table("delivery_attempt")
    op.drop_table("delivery")
    op.drop_table("notification")
    op.drop_table("budget")
    op.drop_table("webhook")
