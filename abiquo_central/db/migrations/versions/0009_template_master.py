"""A template made from a virtual machine's disk (an instance) knows its master: the
template that virtual machine was made from.

Revision ID: 0009
Revises: 0008
Create Date: 2025-04-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("virtual_machine_template") as batch:
        batch.add_column(sa.Column("master_id", sa.Integer(), nullable=True))
        batch.create_index("ix_virtual_machine_template_master_id", ["master_id"])
        batch.create_foreign_key(
            "fk_virtual_machine_template_master_id_virtual_machine_template",
            "virtual_machine_template",
            ["master_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("virtual_machine_template") as batch:
        batch.drop_constraint(
            "fk_virtual_machine_template_master_id_virtual_machine_template", type_="foreignkey"
        )
        batch.drop_index("ix_virtual_machine_template_master_id")
        batch.drop_column("master_id")
