"""A datacenter's template repository: how big its file system is and how much is free,
as its Appliance Manager last reported (RepositoryUsage), and when it measured that.

Revision ID: 0010
Revises: 0009
Create Date: 2025-05-04
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc_datetime() -> sa.types.TypeEngine[datetime]:
    # What db.types.UtcDateTime stores: microseconds on MariaDB.
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("datacenter") as batch:
        batch.add_column(
            sa.Column(
                "repository_capacity_bytes", sa.BigInteger(), nullable=False, server_default="0"
            )
        )
        batch.add_column(
            sa.Column("repository_free_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("repository_usage_at", _utc_datetime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datacenter") as batch:
        batch.drop_column("repository_usage_at")
        batch.drop_column("repository_free_bytes")
        batch.drop_column("repository_capacity_bytes")
