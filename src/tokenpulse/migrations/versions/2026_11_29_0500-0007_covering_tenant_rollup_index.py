"""the tenant index of the (tenant, model) rollups also holds their counts

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 05:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GRAINS = ("minute", "hour", "day")
COVERED = [
    "model",
    "requests",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
]


def upgrade() -> None:
    # Writers to these tables wait while each index is rebuilt: minutes on large tables.
    for grain in GRAINS:
        table = f"rollup_{grain}_tenant_model"
        name = f"ix_{table}_tenant_bucket_start"
        op.drop_index(name, table_name=table)
        op.create_index(name, table, ["tenant", "bucket_start"], postgresql_include=COVERED)


def downgrade() -> None:
    for grain in GRAINS:
        table = f"rollup_{grain}_tenant_model"
        name = f"ix_{table}_tenant_bucket_start"
        op.drop_index(name, table_name=table)
        op.create_index(name, table, ["tenant", "bucket_start"])
