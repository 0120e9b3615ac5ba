"""Roles in the domain: visibility, who may change which, races on a name."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.tenants import privileges, roles
from abiquo_central.tenants.authentication import Principal
from abiquo_runtime.errors import Conflict, NotPermitted
from tests.central.conftest import Seeded


def _caller(*held: str, enterprise_id: int = 1) -> Principal:
    return Principal(
        user_id=1, nick="c", enterprise_id=enterprise_id, role="R", privileges=frozenset(held)
    )


def test_who_sees_which_role() -> None:
    plain = _caller(privileges.USERS_VIEW)
    assert roles.may_see(plain, None) and roles.may_see(plain, 1)
    assert not roles.may_see(plain, 2)
    assert roles.may_see(_caller(privileges.USERS_MANAGE_ROLES_OTHER_ENTERPRISES), 2)


async def test_who_may_create_which_role(engine: AsyncEngine, seeded: Seeded) -> None:
    ent = seeded.enterprise_id
    manager = _caller(privileges.USERS_MANAGE_ROLES, privileges.VDC_ENUMERATE, enterprise_id=ent)
    spec = roles.RoleSpec(name="ops", enterprise_id=ent, privileges=frozenset({"VDC_ENUMERATE"}))
    made = await roles.create_role(engine, spec, manager)
    assert (made.name, made.enterprise_id, made.blocked) == ("ops", ent, False)
    for refused in (
        roles.RoleSpec(name="global"),
        roles.RoleSpec(name="b", enterprise_id=ent + 1),
        roles.RoleSpec(name="up", enterprise_id=ent, privileges=frozenset({"PRICING_MANAGE"})),
    ):
        with pytest.raises(NotPermitted):
            await roles.create_role(engine, refused, manager)
    system = _caller(
        privileges.USERS_MANAGE_ROLES, privileges.USERS_MANAGE_SYSTEM_ROLES, enterprise_id=ent
    )
    assert (await roles.create_role(engine, roles.RoleSpec(name="global"), system)).id > 0


async def test_two_requests_for_one_name(engine: AsyncEngine, seeded: Seeded) -> None:
    admin = _caller(*privileges.ALL, enterprise_id=seeded.enterprise_id)
    spec = roles.RoleSpec(name="twin")
    results = await asyncio.gather(
        *(roles.create_role(engine, spec, admin) for _ in range(3)), return_exceptions=True
    )
    assert sum(isinstance(r, roles.Role) for r in results) == 1
    assert all(
        isinstance(r, Conflict) and r.code == roles.DUPLICATED_NAME
        for r in results
        if not isinstance(r, roles.Role)
    )
