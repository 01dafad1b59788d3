"""pending rollup deltas: flushes append here, the materialiser folds them into the rollups,
which leave room on their pages for folds to update rows in place

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DIMENSIONS = ("tenant", "project", "model", "api_key_id")
ROLLUPS = [
    f"rollup_{grain}{cube}"
    for grain in ("minute", "hour", "day")
    for cube in ("", "_tenant_model", "_model")
]
COUNTS = ("requests", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")


def upgrade() -> None:
    # A new table only: nothing existing is locked or rewritten, and writers need not stop.
    # Writers of the previous version keep adding to the rollups directly, which every reader
    # still counts; readers of the previous version do not see pending deltas until they are
    # folded, so their answers lag by a fold interval until they are replaced.
    op.create_table(
        "rollup_pending",
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        *(sa.Column(name, sa.Text(), nullable=False) for name in DIMENSIONS),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in COUNTS),
        sa.Column(
            "appended_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        # Every fold leaves its rows dead: let autovacuum clean up after a few thousand of them,
        # not after a fifth of a table that is nearly always empty.
        postgresql_with={
            "autovacuum_vacuum_scale_factor": "0",
            "autovacuum_vacuum_threshold": "5000",
            "autovacuum_vacuum_insert_scale_factor": "0",
            "autovacuum_vacuum_insert_threshold": "5000",
        },
    )
    # Reads keep to the minutes of their range, so that a range long past reads no pending row.
    op.create_index("ix_rollup_pending_bucket_start", "rollup_pending", ["bucket_start"])
    # Folds add to rollup rows again and again: room on each page lets PostgreSQL update them in
    # place. Only pages written from now on get it; nothing is rewritten or locked against
    # writers (SET of a storage parameter takes a SHARE UPDATE EXCLUSIVE lock).
    for table in ROLLUPS:
        op.execute(f"ALTER TABLE {table} SET (fillfactor = 70)")


def downgrade() -> None:
    for table in ROLLUPS:
        op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
    # The previous version reads no pending deltas: what is still pending must be folded first
    # (stop every writer; the last materialiser to stop folds it), or the rollups would lose it.
    remaining = op.get_bind().scalar(sa.text("SELECT count(*) FROM rollup_pending"))
    if remaining:
        raise RuntimeError(
            f"{remaining} pending rollup deltas are not folded yet: stop tokenpulse (its "
            "materialiser folds them as it stops), then downgrade"
        )
    op.drop_table("rollup_pending")
