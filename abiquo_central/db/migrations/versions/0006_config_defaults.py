"""The default template category and the system properties, with their default values.

Data only, no schema change. The category is Abiquo's "Others": templates without a
category are filed under it, so it is not erasable. The properties are the web
console's settings that administrators change at run time (Abiquo's names).

Revision ID: 0006
Revises: 0005
Create Date: 2025-04-15
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Declared here rather than imported from db.tables: a migration must keep writing what
# it wrote when it was written, whatever the tables become later.
category = sa.table(
    "category",
    sa.column("name", sa.String),
    sa.column("erasable", sa.Boolean),
    sa.column("is_default", sa.Boolean),
)
system_property = sa.table(
    "system_property",
    sa.column("name", sa.String),
    sa.column("value", sa.Text),
    sa.column("description", sa.String),
)

DEFAULT_CATEGORY = "Others"

CATEGORIES: list[dict[str, object]] = [
    {"name": DEFAULT_CATEGORY, "erasable": False, "is_default": True},
]

PROPERTIES: list[dict[str, str]] = [
    {
        "name": "client.main.billingUrl",
        "value": "",
        "description": "Address of the billing site the web console links to from its "
        "menu; empty for no link",
    },
    {
        "name": "client.main.enterpriseLogoURL",
        "value": "http://www.abiquo.com",
        "description": "Address the logo in the web console's header links to",
    },
    {
        "name": "client.main.allowLogout",
        "value": "1",
        "description": "Whether the web console offers to log out (1) or not (0), as when "
        "it is embedded in a portal that logs users out itself",
    },
    {
        "name": "client.main.disableChangePassword",
        "value": "0",
        "description": "Whether users may change their own password in the web console "
        "(0) or not (1), as when passwords are managed elsewhere",
    },
    {
        "name": "client.logout.url",
        "value": "",
        "description": "Address the web console sends users to after they log out; "
        "empty for its own login page",
    },
    {
        "name": "client.dashboard.showStartUpAlert",
        "value": "1",
        "description": "Whether the web console shows its start-up alert on the dashboard "
        "(1) or not (0)",
    },
    {
        "name": "client.infra.InfrastructureUpdateInterval",
        "value": "30",
        "description": "Seconds between two refreshes of the infrastructure view in the "
        "web console",
    },
    {
        "name": "client.virtual.virtualAppliancesUpdateInterval",
        "value": "5",
        "description": "Seconds between two refreshes of the virtual appliances view in "
        "the web console (their state and their virtual machines')",
    },
]


def upgrade() -> None:
    op.bulk_insert(category, CATEGORIES)
    op.bulk_insert(system_property, PROPERTIES)


def downgrade() -> None:
    op.execute(
        system_property.delete().where(system_property.c.name.in_([p["name"] for p in PROPERTIES]))
    )
    op.execute(category.delete().where(category.c.name == DEFAULT_CATEGORY))
