"""Allocation limits on enterprises (soft and hard, 0 meaning unlimited).

Revision ID: 0004
Revises: 0003
Create Date: 2025-03-15
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from db.tables: a migration must keep creating the
# schema it created when it was written, whatever the tables become later.
LIMITS: tuple[tuple[str, type[sa.Integer]], ...] = (
    ("cpu", sa.Integer),
    ("ram", sa.Integer),
    ("hd", sa.BigInteger),
    ("storage", sa.BigInteger),
    ("repository", sa.BigInteger),
    ("vlans", sa.Integer),
    ("public_ips", sa.Integer),
)
COLUMNS = [(f"{name}_{bound}", kind) for name, kind in LIMITS for bound in ("soft", "hard")]


def upgrade() -> None:
    # batch_alter_table: SQLite alters a table only by copying it.
    with op.batch_alter_table("enterprise") as batch:
        for column, kind in COLUMNS:
            batch.add_column(sa.Column(column, kind(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("enterprise") as batch:
        for column, _ in reversed(COLUMNS):
            batch.drop_column(column)
