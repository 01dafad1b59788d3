"""hour and day rollups by model keep their busiest minute, filled from the minute rollups

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GRAINS = ("hour", "day")


def upgrade() -> None:
    # Writers wait while the new columns are filled, so that no minute they add is missed.
    # Writers still running the previous version could not store at all afterwards (they leave
    # the columns empty): stop them first. The tables that change are locked whole up front, so
    # that a reader of both cannot hold one while the migration waits for it.
    op.execute("LOCK TABLE rollup_hour_model, rollup_day_model IN ACCESS EXCLUSIVE MODE")
    op.execute("LOCK TABLE rollup_minute_model IN SHARE ROW EXCLUSIVE MODE")
    for grain in GRAINS:
        table = f"rollup_{grain}_model"
        op.add_column(table, sa.Column("peak_minute", sa.DateTime(timezone=True)))
        op.add_column(table, sa.Column("peak_minute_tokens", sa.BigInteger()))
        op.execute(
            f"""
            UPDATE {table} AS bucket
            SET peak_minute = peaks.peak_minute, peak_minute_tokens = peaks.peak_minute_tokens
            FROM (
                SELECT DISTINCT ON (1, 2)
                       date_trunc('{grain}', bucket_start, 'UTC') AS bucket_start, model,
                       bucket_start AS peak_minute,
                       input_tokens + output_tokens AS peak_minute_tokens
                FROM rollup_minute_model
                ORDER BY 1, 2, input_tokens + output_tokens DESC, rollup_minute_model.bucket_start
            ) AS peaks
            WHERE bucket.bucket_start = peaks.bucket_start AND bucket.model = peaks.model
            """
        )
        op.alter_column(table, "peak_minute", nullable=False)
        op.alter_column(table, "peak_minute_tokens", nullable=False)


def downgrade() -> None:
    for grain in GRAINS:
        table = f"rollup_{grain}_model"
        op.drop_column(table, "peak_minute_tokens")
        op.drop_column(table, "peak_minute")
