"""price versions start at whole minutes, as every read that prices rollup rows assumes

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 02:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_check_constraint(
        op.f("ck_price_version_whole_minute"),
        "price_version",
        "date_trunc('minute', effective_from, 'UTC') = effective_from",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_price_version_whole_minute"), "price_version", type_="check")
