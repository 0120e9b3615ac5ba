"""Tenants (enterprise, role, role_privilege, user) and datacenters with their liveness.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc_datetime() -> sa.types.TypeEngine[datetime]:
    # Written out here rather than imported from db.types: a migration must keep
    # creating what it created on the day it was written, whatever the code becomes.
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "enterprise",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("is_reservation_restricted", sa.Boolean(), nullable=False),
        sa.Column("created_at", _utc_datetime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_enterprise"),
        sa.UniqueConstraint("name", name="uq_enterprise_name"),
    )
    op.create_table(
        "role",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("enterprise_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["enterprise_id"], ["enterprise.id"], name="fk_role_enterprise_id_enterprise"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_role"),
        sa.UniqueConstraint("name", name="uq_role_name"),
    )
    op.create_table(
        "role_privilege",
        sa.Column("role_id", sa.Integer(), nullable=False),
        sa.Column("privilege", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["role_id"],
            ["role.id"],
            name="fk_role_privilege_role_id_role",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("role_id", "privilege", name="pk_role_privilege"),
    )
    op.create_table(
        "user",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("enterprise_id", sa.Integer(), nullable=False),
        sa.Column("role_id", sa.Integer(), nullable=False),
        sa.Column("nick", sa.String(128), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("surname", sa.String(128), nullable=False),
        sa.Column("email", sa.String(255), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("locale", sa.String(16), nullable=False),
        sa.Column("created_at", _utc_datetime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["enterprise_id"], ["enterprise.id"], name="fk_user_enterprise_id_enterprise"
        ),
        sa.ForeignKeyConstraint(["role_id"], ["role.id"], name="fk_user_role_id_role"),
        sa.PrimaryKeyConstraint("id", name="pk_user"),
        sa.UniqueConstraint("nick", name="uq_user_nick"),
    )
    op.create_table(
        "datacenter",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("location", sa.String(255), nullable=False),
        sa.Column("created_at", _utc_datetime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_datacenter"),
        sa.UniqueConstraint("name", name="uq_datacenter_name"),
        sa.UniqueConstraint("uuid", name="uq_datacenter_uuid"),
    )
    op.create_table(
        "datacenter_liveness",
        sa.Column("dc_uuid", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("started_at", _utc_datetime(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("last_seen", _utc_datetime(), nullable=False),
        sa.Column("http_url", sa.String(1024), nullable=False),
        sa.Column("services", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("dc_uuid", name="pk_datacenter_liveness"),
    )


def downgrade() -> None:
    op.drop_table("datacenter_liveness")
    op.drop_table("datacenter")
    op.drop_table("user")
    op.drop_table("role_privilege")
    op.drop_table("role")
    op.drop_table("enterprise")
