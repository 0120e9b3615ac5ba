"""The event log.

Revision ID: 0002
Revises: 0001
Create Date: 2025-03-01
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The columns the event log is filtered by, each with an index of its own.
_INDEXED = (
    "timestamp",
    "severity",
    "component",
    "action",
    "user_id",
    "enterprise_id",
    "datacenter_id",
)


def _utc_datetime() -> sa.types.TypeEngine[datetime]:
    # Written out rather than imported from db.types: see 0001.
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "event",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("timestamp", _utc_datetime(), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("component", sa.String(32), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("user_name", sa.String(128), nullable=True),
        sa.Column("enterprise_id", sa.Integer(), nullable=True),
        sa.Column("enterprise_name", sa.String(128), nullable=True),
        sa.Column("datacenter_id", sa.Integer(), nullable=True),
        sa.Column("virtual_machine_id", sa.Integer(), nullable=True),
        sa.Column("target", sa.String(1024), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_event"),
    )
    for column in _INDEXED:
        op.create_index(f"ix_event_{column}", "event", [column])


def downgrade() -> None:
    op.drop_table("event")
