"""Fixtures for the event log: a second enterprise, and users that see more or less."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.events import Action, Component, Ref, Severity, record_event
from abiquo_central.tenants import privileges
from abiquo_central.tenants.passwords import Passwords
from abiquo_central.tenants.seed import ensure_enterprise
from abiquo_central.tenants.users import create_user
from tests.central.conftest import T0, USER_NICK, Seeded, basic

PASSWORD = "events-secret"
ENT_ADMIN_A = basic("aadmin", PASSWORD)
ENT_ADMIN_B = basic("badmin", PASSWORD)
NO_EVENTLOG = basic("nolog", PASSWORD)


@dataclass(frozen=True)
class Tenants:
    a: int  # the seeded enterprise, "Abiquo"
    b: int
    a_admin: int
    b_admin: int
    nolog: int


@pytest.fixture
async def tenants(engine: AsyncEngine, seeded: Seeded, fast_passwords: Passwords) -> Tenants:
    b = await ensure_enterprise(engine, "Other", now=T0)
    a_admin = await create_user(
        engine,
        passwords=fast_passwords,
        enterprise_id=seeded.enterprise_id,
        role=privileges.ENTERPRISE_ADMIN,
        nick="aadmin",
        password=PASSWORD,
        name="Ann",
        now=T0,
    )
    b_admin = await create_user(
        engine,
        passwords=fast_passwords,
        enterprise_id=b,
        role=privileges.ENTERPRISE_ADMIN,
        nick="badmin",
        password=PASSWORD,
        name="Bob",
        now=T0,
    )
    # A role of the enterprise's own that holds neither event log privilege.
    async with engine.begin() as conn:
        result = await conn.execute(
            tables.role.insert().values(name="NO_EVENTLOG", enterprise_id=seeded.enterprise_id)
        )
        role_id = result.inserted_primary_key[0]  # type: ignore[index]
        await conn.execute(
            tables.role_privilege.insert().values(
                role_id=role_id, privilege=privileges.VDC_ENUMERATE
            )
        )
    nolog = await create_user(
        engine,
        passwords=fast_passwords,
        enterprise_id=seeded.enterprise_id,
        role="NO_EVENTLOG",
        nick="nolog",
        password=PASSWORD,
        name="Nol",
        now=T0,
    )
    return Tenants(a=seeded.enterprise_id, b=b, a_admin=a_admin, b_admin=b_admin, nolog=nolog)


@dataclass(frozen=True)
class Recorded:
    """Ids of the events `history` recorded, oldest first."""

    a: list[int]
    b: list[int]


@pytest.fixture
async def history(engine: AsyncEngine, tenants: Tenants, seeded: Seeded) -> Recorded:
    """Six events a minute apart from T0: four in enterprise A, two in B.

    They are older than any login the requests of a test record (those are stamped
    with the real time), so filtering by date or component leaves those out.
    """
    a_ent, b_ent = Ref(tenants.a, "Abiquo"), Ref(tenants.b, "Other")
    jdoe, bob = Ref(seeded.user_id, USER_NICK), Ref(tenants.b_admin, "badmin")
    plan = [
        (a_ent, jdoe, Severity.INFO, Component.VIRTUAL_MACHINE, Action.VM_DEPLOY, None, 7),
        (b_ent, bob, Severity.INFO, Component.VIRTUAL_MACHINE, Action.VM_DEPLOY, None, 8),
        (a_ent, jdoe, Severity.MAJOR, Component.VIRTUAL_MACHINE, Action.VM_UNDEPLOY, None, 7),
        (a_ent, None, Severity.WARNING, Component.DATACENTER, Action.DC_MODIFY, 3, None),
        (b_ent, bob, Severity.CRITICAL, Component.VIRTUAL_MACHINE, Action.VM_DESTROY, None, 8),
        (a_ent, jdoe, Severity.INFO, Component.VIRTUAL_MACHINE, Action.VM_POWEROFF, None, 7),
    ]
    ids: dict[int, list[int]] = {tenants.a: [], tenants.b: []}
    for minute, (ent, user, sev, comp, action, dc, vm) in enumerate(plan):
        assert ent.id is not None
        ids[ent.id].append(
            await record_event(
                engine,
                severity=sev,
                component=comp,
                action=action,
                user=user,
                enterprise=ent,
                target=f"/api/things/{minute}",
                message=f"{action.value} number {minute}",
                datacenter_id=dc,
                virtual_machine_id=vm,
                now=T0 + timedelta(minutes=minute),
            )
        )
    return Recorded(a=ids[tenants.a], b=ids[tenants.b])
