"""The physical infrastructure and the rest of the administrative model.

Remote services, racks, machines and their datastores; per-datacenter enterprise limits;
template categories and system properties; a role's `blocked` flag; a user's
authentication type and available VDCs. A datacenter's uuid becomes optional: one
created through the API learns it from its VIRTUAL_FACTORY remote service.

Revision ID: 0005
Revises: 0004
Create Date: 2025-04-01
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
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


def _utc_datetime() -> sa.types.TypeEngine[datetime]:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("datacenter") as batch:
        batch.alter_column("uuid", existing_type=sa.String(36), nullable=True)
    with op.batch_alter_table("role") as batch:
        batch.add_column(sa.Column("blocked", sa.Boolean(), nullable=False, server_default="0"))
    with op.batch_alter_table("user") as batch:
        batch.add_column(
            sa.Column("auth_type", sa.String(16), nullable=False, server_default="ABIQUO")
        )
        batch.add_column(
            sa.Column("available_vdcs", sa.String(1024), nullable=False, server_default="")
        )
    op.create_table(
        "remote_service",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("datacenter_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("uri", sa.String(1024), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("checked_at", _utc_datetime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["datacenter_id"],
            ["datacenter.id"],
            name="fk_remote_service_datacenter_id_datacenter",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_remote_service"),
        sa.UniqueConstraint("datacenter_id", "type", name="uq_remote_service_datacenter_id_type"),
    )
    op.create_index("ix_remote_service_datacenter_id", "remote_service", ["datacenter_id"])
    op.create_table(
        "rack",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("datacenter_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("short_description", sa.String(255), nullable=False),
        sa.Column("long_description", sa.String(1024), nullable=False),
        sa.Column("vlan_id_min", sa.Integer(), nullable=False),
        sa.Column("vlan_id_max", sa.Integer(), nullable=False),
        sa.Column("vlans_id_avoided", sa.String(1024), nullable=False),
        sa.Column("vlan_per_vdc_reserved", sa.Integer(), nullable=False),
        sa.Column("nrsq", sa.Integer(), nullable=False),
        sa.Column("ha_enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", _utc_datetime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["datacenter_id"], ["datacenter.id"], name="fk_rack_datacenter_id_datacenter"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_rack"),
        sa.UniqueConstraint("datacenter_id", "name", name="uq_rack_datacenter_id_name"),
    )
    op.create_index("ix_rack_datacenter_id", "rack", ["datacenter_id"])
    op.create_table(
        "machine",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("datacenter_id", sa.Integer(), nullable=False),
        sa.Column("rack_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.String(1024), nullable=False),
        sa.Column("ip", sa.String(64), nullable=False),
        sa.Column("ip_service", sa.String(64), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("password_secret", sa.Text(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("cpu", sa.Integer(), nullable=False),
        sa.Column("ram", sa.Integer(), nullable=False),
        sa.Column("cpu_used", sa.Integer(), nullable=False),
        sa.Column("ram_used", sa.Integer(), nullable=False),
        sa.Column("virtual_switch", sa.String(255), nullable=False),
        sa.Column("initiator_iqn", sa.String(255), nullable=False),
        sa.Column("reserved_enterprise_id", sa.Integer(), nullable=True),
        sa.Column("created_at", _utc_datetime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["datacenter_id"], ["datacenter.id"], name="fk_machine_datacenter_id_datacenter"
        ),
        sa.ForeignKeyConstraint(["rack_id"], ["rack.id"], name="fk_machine_rack_id_rack"),
        sa.ForeignKeyConstraint(
            ["reserved_enterprise_id"],
            ["enterprise.id"],
            name="fk_machine_reserved_enterprise_id_enterprise",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_machine"),
        sa.UniqueConstraint("datacenter_id", "ip", name="uq_machine_datacenter_id_ip"),
    )
    op.create_index("ix_machine_rack_id", "machine", ["rack_id"])
    op.create_index("ix_machine_type", "machine", ["type"])
    op.create_index("ix_machine_reserved_enterprise_id", "machine", ["reserved_enterprise_id"])
    op.create_table(
        "datastore",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("root_path", sa.String(1024), nullable=False),
        sa.Column("directory", sa.String(1024), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("used_size", sa.BigInteger(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("datastore_uuid", sa.String(255), nullable=False),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machine.id"],
            name="fk_datastore_machine_id_machine",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_datastore"),
        sa.UniqueConstraint("machine_id", "name", name="uq_datastore_machine_id_name"),
    )
    op.create_table(
        "enterprise_limit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("enterprise_id", sa.Integer(), nullable=False),
        sa.Column("datacenter_id", sa.Integer(), nullable=False),
        *(
            sa.Column(f"{name}_{bound}", kind(), nullable=False, server_default="0")
            for name, kind in LIMITS
            for bound in ("soft", "hard")
        ),
        sa.ForeignKeyConstraint(
            ["enterprise_id"],
            ["enterprise.id"],
            name="fk_enterprise_limit_enterprise_id_enterprise",
        ),
        sa.ForeignKeyConstraint(
            ["datacenter_id"],
            ["datacenter.id"],
            name="fk_enterprise_limit_datacenter_id_datacenter",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_enterprise_limit"),
        sa.UniqueConstraint(
            "enterprise_id",
            "datacenter_id",
            name="uq_enterprise_limit_enterprise_id_datacenter_id",
        ),
    )
    op.create_index("ix_enterprise_limit_datacenter_id", "enterprise_limit", ["datacenter_id"])
    op.create_table(
        "category",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("erasable", sa.Boolean(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_category"),
        sa.UniqueConstraint("name", name="uq_category_name"),
    )
    op.create_table(
        "system_property",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("description", sa.String(1024), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_system_property"),
    )


def downgrade() -> None:
    op.drop_table("system_property")
    op.drop_table("category")
    op.drop_index("ix_enterprise_limit_datacenter_id", "enterprise_limit")
    op.drop_table("enterprise_limit")
    op.drop_table("datastore")
    op.drop_index("ix_machine_reserved_enterprise_id", "machine")
    op.drop_index("ix_machine_type", "machine")
    op.drop_index("ix_machine_rack_id", "machine")
    op.drop_table("machine")
    op.drop_index("ix_rack_datacenter_id", "rack")
    op.drop_table("rack")
    op.drop_index("ix_remote_service_datacenter_id", "remote_service")
    op.drop_table("remote_service")
    with op.batch_alter_table("user") as batch:
        batch.drop_column("available_vdcs")
        batch.drop_column("auth_type")
    with op.batch_alter_table("role") as batch:
        batch.drop_column("blocked")
    with op.batch_alter_table("datacenter") as batch:
        batch.alter_column("uuid", existing_type=sa.String(36), nullable=False)
