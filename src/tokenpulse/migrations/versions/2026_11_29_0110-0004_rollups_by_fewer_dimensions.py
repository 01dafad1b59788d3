"""rollups by (tenant, model) and by model, filled from the existing rollups

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 01:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GRAINS = ("minute", "hour", "day")
CUBES = {"_tenant_model": ("tenant", "model"), "_model": ("model",)}
COUNTS = ("requests", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")


def upgrade() -> None:
    # Writers wait while the new tables are filled, so that none of their rollups is missed.
    # Writers still running the previous version would feed only the old tables: stop them first.
    op.execute(
        "LOCK TABLE usage_event, rollup_minute, rollup_hour, rollup_day IN SHARE ROW EXCLUSIVE MODE"
    )
    for grain in GRAINS:
        for suffix, dimensions in CUBES.items():
            table = f"rollup_{grain}{suffix}"
            op.create_table(
                table,
                sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
                *(sa.Column(dimension, sa.Text(), nullable=False) for dimension in dimensions),
                *(sa.Column(count, sa.BigInteger(), nullable=False) for count in COUNTS),
                sa.PrimaryKeyConstraint("bucket_start", *dimensions, name=op.f(f"pk_{table}")),
            )
            keys = ", ".join(("bucket_start", *dimensions))
            sums = ", ".join(f"sum({count})::int8" for count in COUNTS)
            op.execute(
                f"INSERT INTO {table} ({keys}, {', '.join(COUNTS)}) "
                f"SELECT {keys}, {sums} FROM rollup_{grain} GROUP BY {keys}"
            )


def downgrade() -> None:
    for grain in GRAINS:
        for suffix in CUBES:
            op.drop_table(f"rollup_{grain}{suffix}")
