"""Templates, virtual datacenters with their networks and addresses, virtual appliances
and machines, their tasks and jobs, and the outbox of messages to datacenters.

Revision ID: 0007
Revises: 0006
Create Date: 2025-04-15
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc_datetime() -> sa.types.TypeEngine[datetime]:
    # Written out here rather than imported from db.types: a migration must keep
    # creating what it created on the day it was written, whatever the code becomes.
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dc_uuid", sa.String(length=36), nullable=False),
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", _utc_datetime(), nullable=False),
        sa.Column("sent_at", _utc_datetime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_sent_at", "outbox", ["sent_at"], unique=False)

    op.create_table(
        "virtual_datacenter",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("enterprise_id", sa.Integer(), nullable=False),
        sa.Column("datacenter_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("hypervisor_type", sa.String(length=32), nullable=False),
        sa.Column("cpu_soft", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cpu_hard", sa.Integer(), server_default="0", nullable=False),
        sa.Column("ram_soft", sa.Integer(), server_default="0", nullable=False),
        sa.Column("ram_hard", sa.Integer(), server_default="0", nullable=False),
        sa.Column("hd_soft", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("hd_hard", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("storage_soft", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("storage_hard", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("vlans_soft", sa.Integer(), server_default="0", nullable=False),
        sa.Column("vlans_hard", sa.Integer(), server_default="0", nullable=False),
        sa.Column("public_ips_soft", sa.Integer(), server_default="0", nullable=False),
        sa.Column("public_ips_hard", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", _utc_datetime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["datacenter_id"],
            ["datacenter.id"],
            name="fk_virtual_datacenter_datacenter_id_datacenter",
        ),
        sa.ForeignKeyConstraint(
            ["enterprise_id"],
            ["enterprise.id"],
            name="fk_virtual_datacenter_enterprise_id_enterprise",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_virtual_datacenter"),
        sa.UniqueConstraint(
            "enterprise_id", "name", name="uq_virtual_datacenter_enterprise_id_name"
        ),
    )
    op.create_index(
        "ix_virtual_datacenter_datacenter_id", "virtual_datacenter", ["datacenter_id"], unique=False
    )
    op.create_index(
        "ix_virtual_datacenter_enterprise_id", "virtual_datacenter", ["enterprise_id"], unique=False
    )

    op.create_table(
        "virtual_machine_template",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("enterprise_id", sa.Integer(), nullable=False),
        sa.Column("datacenter_id", sa.Integer(), nullable=False),
        sa.Column("ovf_id", sa.String(length=1024), nullable=False),
        sa.Column("ovf_key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("disk_path", sa.String(length=1024), nullable=False),
        sa.Column("disk_format", sa.String(length=32), nullable=False),
        sa.Column("disk_file_size", sa.BigInteger(), nullable=False),
        sa.Column("hd_required", sa.BigInteger(), nullable=False),
        sa.Column("cpu_required", sa.Integer(), nullable=False),
        sa.Column("ram_required", sa.Integer(), nullable=False),
        sa.Column("category_id", sa.Integer(), nullable=True),
        sa.Column("icon_url", sa.String(length=1024), nullable=False),
        sa.Column("cost_code", sa.Integer(), nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("creation_user", sa.String(length=128), nullable=False),
        sa.Column("created_at", _utc_datetime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["category_id"],
            ["category.id"],
            name="fk_virtual_machine_template_category_id_category",
        ),
        sa.ForeignKeyConstraint(
            ["datacenter_id"],
            ["datacenter.id"],
            name="fk_virtual_machine_template_datacenter_id_datacenter",
        ),
        sa.ForeignKeyConstraint(
            ["enterprise_id"],
            ["enterprise.id"],
            name="fk_virtual_machine_template_enterprise_id_enterprise",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_virtual_machine_template"),
        sa.UniqueConstraint(
            "enterprise_id",
            "datacenter_id",
            "ovf_key",
            name="uq_virtual_machine_template_enterprise_id_datacenter_id_ovf_key",
        ),
    )
    op.create_index(
        "ix_virtual_machine_template_datacenter_id",
        "virtual_machine_template",
        ["datacenter_id"],
        unique=False,
    )

    op.create_table(
        "template_conversion",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("target_format", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _utc_datetime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["virtual_machine_template.id"],
            name="fk_template_conversion_template_id_virtual_machine_template",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_template_conversion"),
        sa.UniqueConstraint(
            "template_id", "target_format", name="uq_template_conversion_template_id_target_format"
        ),
    )
    op.create_table(
        "virtual_appliance",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("vdc_id", sa.Integer(), nullable=False),
        sa.Column("enterprise_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("high_disponibility", sa.Boolean(), nullable=False),
        sa.Column("public_app", sa.Boolean(), nullable=False),
        sa.Column("nodeconnections", sa.Text(), nullable=False),
        sa.Column("error", sa.Boolean(), nullable=False),
        sa.Column("created_at", _utc_datetime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["enterprise_id"],
            ["enterprise.id"],
            name="fk_virtual_appliance_enterprise_id_enterprise",
        ),
        sa.ForeignKeyConstraint(
            ["vdc_id"],
            ["virtual_datacenter.id"],
            name="fk_virtual_appliance_vdc_id_virtual_datacenter",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_virtual_appliance"),
    )
    op.create_index("ix_virtual_appliance_vdc_id", "virtual_appliance", ["vdc_id"], unique=False)

    op.create_table(
        "vlan",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("vdc_id", sa.Integer(), nullable=False),
        sa.Column("datacenter_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("tag", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=45), nullable=False),
        sa.Column("mask", sa.Integer(), nullable=False),
        sa.Column("gateway", sa.String(length=45), nullable=False),
        sa.Column("primary_dns", sa.String(length=45), nullable=False),
        sa.Column("secondary_dns", sa.String(length=45), nullable=False),
        sa.Column("sufix_dns", sa.String(length=255), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["datacenter_id"], ["datacenter.id"], name="fk_vlan_datacenter_id_datacenter"
        ),
        sa.ForeignKeyConstraint(
            ["vdc_id"],
            ["virtual_datacenter.id"],
            name="fk_vlan_vdc_id_virtual_datacenter",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_vlan"),
        sa.UniqueConstraint("datacenter_id", "tag", name="uq_vlan_datacenter_id_tag"),
        sa.UniqueConstraint("vdc_id", "name", name="uq_vlan_vdc_id_name"),
    )
    op.create_index("ix_vlan_vdc_id", "vlan", ["vdc_id"], unique=False)

    op.create_table(
        "virtual_machine",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("vapp_id", sa.Integer(), nullable=False),
        sa.Column("vdc_id", sa.Integer(), nullable=False),
        sa.Column("enterprise_id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("cpu", sa.Integer(), nullable=False),
        sa.Column("ram", sa.Integer(), nullable=False),
        sa.Column("hd_bytes", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("locked_state", sa.String(length=16), nullable=True),
        sa.Column("machine_id", sa.Integer(), nullable=True),
        sa.Column("datastore_id", sa.Integer(), nullable=True),
        sa.Column("vdrp_ip", sa.String(length=45), nullable=False),
        sa.Column("vdrp_port", sa.Integer(), nullable=False),
        sa.Column("password", sa.String(length=255), nullable=False),
        sa.Column("high_disponibility", sa.Boolean(), nullable=False),
        sa.Column("created_at", _utc_datetime(), nullable=False),
        sa.Column("updated_at", _utc_datetime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["datastore_id"], ["datastore.id"], name="fk_virtual_machine_datastore_id_datastore"
        ),
        sa.ForeignKeyConstraint(
            ["enterprise_id"], ["enterprise.id"], name="fk_virtual_machine_enterprise_id_enterprise"
        ),
        sa.ForeignKeyConstraint(
            ["machine_id"], ["machine.id"], name="fk_virtual_machine_machine_id_machine"
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["virtual_machine_template.id"],
            name="fk_virtual_machine_template_id_virtual_machine_template",
        ),
        sa.ForeignKeyConstraint(
            ["vapp_id"],
            ["virtual_appliance.id"],
            name="fk_virtual_machine_vapp_id_virtual_appliance",
        ),
        sa.ForeignKeyConstraint(
            ["vdc_id"],
            ["virtual_datacenter.id"],
            name="fk_virtual_machine_vdc_id_virtual_datacenter",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_virtual_machine"),
        sa.UniqueConstraint("uuid", name="uq_virtual_machine_uuid"),
    )
    op.create_index(
        "ix_virtual_machine_enterprise_id", "virtual_machine", ["enterprise_id"], unique=False
    )
    op.create_index(
        "ix_virtual_machine_machine_id", "virtual_machine", ["machine_id"], unique=False
    )
    op.create_index("ix_virtual_machine_state", "virtual_machine", ["state"], unique=False)
    op.create_index("ix_virtual_machine_vapp_id", "virtual_machine", ["vapp_id"], unique=False)

    op.create_table(
        "ip",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("vlan_id", sa.Integer(), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("quarantine", sa.Boolean(), nullable=False),
        sa.Column("virtual_machine_id", sa.Integer(), nullable=True),
        sa.Column("nic_order", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["virtual_machine_id"],
            ["virtual_machine.id"],
            name="fk_ip_virtual_machine_id_virtual_machine",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["vlan_id"], ["vlan.id"], name="fk_ip_vlan_id_vlan", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_ip"),
        sa.UniqueConstraint("mac", name="uq_ip_mac"),
        sa.UniqueConstraint("vlan_id", "ip", name="uq_ip_vlan_id_ip"),
    )
    op.create_index("ix_ip_virtual_machine_id", "ip", ["virtual_machine_id"], unique=False)

    op.create_table(
        "task",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("virtual_machine_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("enterprise_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("created_at", _utc_datetime(), nullable=False),
        sa.Column("updated_at", _utc_datetime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["virtual_machine_id"],
            ["virtual_machine.id"],
            name="fk_task_virtual_machine_id_virtual_machine",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_task"),
    )
    op.create_index("ix_task_state", "task", ["state"], unique=False)
    op.create_index("ix_task_updated_at", "task", ["updated_at"], unique=False)
    op.create_index("ix_task_virtual_machine_id", "task", ["virtual_machine_id"], unique=False)

    op.create_table(
        "job",
        sa.Column("id", sa.String(length=80), nullable=False),
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("rollback_state", sa.String(length=32), nullable=False),
        sa.Column("description", sa.String(length=1024), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("updated_at", _utc_datetime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["task.id"], name="fk_job_task_id_task", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_job"),
        sa.UniqueConstraint("task_id", "sequence", name="uq_job_task_id_sequence"),
    )


def downgrade() -> None:
    # Dropping a table drops its indexes: dropping them first would fail on MySQL where
    # a foreign key still needs one.
    for table in (
        "job",
        "task",
        "ip",
        "virtual_machine",
        "vlan",
        "virtual_appliance",
        "template_conversion",
        "virtual_machine_template",
        "virtual_datacenter",
        "outbox",
    ):
        op.drop_table(table)
