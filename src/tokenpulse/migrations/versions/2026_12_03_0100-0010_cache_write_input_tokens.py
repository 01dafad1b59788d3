"""events, pending deltas and rollups count cache writes: cache_write_input_tokens, 0 for every
row stored before

Adding a NOT NULL column with a constant default changes only the catalog on PostgreSQL 11 and
later: no table is rewritten or scanned, so it takes as long on a large usage_event as on an
empty one. Nothing is backfilled and no index is built; the tenant index of the (tenant, model)
rollups keeps the counts it holds (see TENANT_INDEX_COUNTS in tables.py).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMN = "cache_write_input_tokens"
# In the order a flush (usage_event, then rollup_pending) and a fold (rollup_pending, then the
# rollups, finest grain first) take their locks.
TABLES = [
    "usage_event",
    "rollup_pending",
    *(
        f"rollup_{grain}{cube}"
        for grain in ("minute", "hour", "day")
        for cube in ("", "_tenant_model", "_model")
    ),
]


def upgrade() -> None:
    # Every table is locked up front, in the writers' order, so that neither a writer nor a
    # reader of two of them can hold one while the migration waits for it. The locks last only
    # as long as the catalog changes (unless later migrations follow in the same transaction).
    # Writers of the previous version may keep running: they name their columns, and the
    # default fills this one (their events cannot carry cache writes: they reject the field).
    op.execute(f"LOCK TABLE {', '.join(TABLES)} IN ACCESS EXCLUSIVE MODE")
    for table in TABLES:
        op.add_column(
            table, sa.Column(COLUMN, sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )


def downgrade() -> None:
    op.execute(f"LOCK TABLE {', '.join(TABLES)} IN ACCESS EXCLUSIVE MODE")
    for table in TABLES:
        op.drop_column(table, COLUMN)
