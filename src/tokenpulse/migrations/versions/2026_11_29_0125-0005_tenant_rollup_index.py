"""an index that finds one tenant's rows in the (tenant, model) rollups

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 01:25:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GRAINS = ("minute", "hour", "day")


def upgrade() -> None:
    for grain in GRAINS:
        table = f"rollup_{grain}_tenant_model"
        op.create_index(f"ix_{table}_tenant_bucket_start", table, ["tenant", "bucket_start"])


def downgrade() -> None:
    for grain in GRAINS:
        table = f"rollup_{grain}_tenant_model"
        op.drop_index(f"ix_{table}_tenant_bucket_start", table_name=table)
