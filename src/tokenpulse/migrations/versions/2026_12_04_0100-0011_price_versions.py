"""price versions: a model's prices per million tokens, each from a whole minute

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PRICE = sa.Numeric(24, 12)


def upgrade() -> None:
    op.create_table(
        "price_version",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("input", PRICE, nullable=False),
        sa.Column("cached_input", PRICE, nullable=False),
        sa.Column("cache_write_input", PRICE, nullable=False),
        sa.Column("output", PRICE, nullable=False),
        sa.Column("reasoning", PRICE, nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_version")),
    )
    op.create_index(
        "ix_price_version_model_effective_from",
        "price_version",
        ["model", "effective_from"],
        unique=True,
        postgresql_where=sa.text("ended_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_price_version_model_effective_from", table_name="price_version")
    op.drop_table("price_version")
