from __future__ import annotations

import asyncio

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.tenants import privileges
from abiquo_central.tenants.authentication import authenticate
from abiquo_central.tenants.passwords import Passwords
from abiquo_central.tenants.seed import ensure_admin


async def _privileges_of(engine: AsyncEngine, role: str) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(tables.role_privilege.c.privilege)
            .join(tables.role, tables.role.c.id == tables.role_privilege.c.role_id)
            .where(tables.role.c.name == role)
        )
        return set(rows.scalars())


async def _count(engine: AsyncEngine, table: object) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def test_generates_a_password_once(engine: AsyncEngine, fast_passwords: Passwords) -> None:
    generated = await ensure_admin(engine, password=None, passwords=fast_passwords)
    assert generated is not None and len(generated) >= 16
    assert await ensure_admin(engine, password=None, passwords=fast_passwords) is None
    admin = await authenticate(engine, fast_passwords, nick="admin", password=generated)
    assert admin is not None
    assert admin.role == privileges.CLOUD_ADMIN
    assert admin.privileges == frozenset(privileges.ALL)
    assert await _count(engine, tables.user) == 1
    assert await _count(engine, tables.enterprise) == 1


async def test_a_given_password_is_not_returned(
    engine: AsyncEngine, fast_passwords: Passwords
) -> None:
    assert await ensure_admin(engine, password="chosen", passwords=fast_passwords) is None
    assert await authenticate(engine, fast_passwords, nick="admin", password="chosen") is not None


async def test_seeded_roles_and_their_privileges(
    engine: AsyncEngine, fast_passwords: Passwords
) -> None:
    await ensure_admin(engine, password="x", passwords=fast_passwords)
    assert await _privileges_of(engine, privileges.CLOUD_ADMIN) == set(privileges.ALL)
    enterprise_admin = await _privileges_of(engine, privileges.ENTERPRISE_ADMIN)
    user = await _privileges_of(engine, privileges.USER)
    assert enterprise_admin == set(privileges.ENTERPRISE_ADMIN_PRIVILEGES)
    assert user == set(privileges.USER_PRIVILEGES)
    assert user < enterprise_admin < set(privileges.ALL)
    assert privileges.PHYS_DC_ENUMERATE not in enterprise_admin
    assert len(set(privileges.ALL)) == len(privileges.ALL)


async def test_cloud_admin_regains_privileges_others_keep_their_edits(
    engine: AsyncEngine, fast_passwords: Passwords
) -> None:
    await ensure_admin(engine, password="x", passwords=fast_passwords)
    rp, role = tables.role_privilege, tables.role
    async with engine.begin() as conn:
        for name, privilege in [
            (privileges.CLOUD_ADMIN, privileges.PRICING_MANAGE),
            (privileges.USER, privileges.VDC_ENUMERATE),
        ]:
            role_id = select(role.c.id).where(role.c.name == name).scalar_subquery()
            await conn.execute(
                rp.delete().where(rp.c.role_id == role_id, rp.c.privilege == privilege)
            )
    await ensure_admin(engine, password="x", passwords=fast_passwords)
    assert privileges.PRICING_MANAGE in await _privileges_of(engine, privileges.CLOUD_ADMIN)
    assert privileges.VDC_ENUMERATE not in await _privileges_of(engine, privileges.USER)


async def test_two_processes_seeding_at_once(
    engine: AsyncEngine, fast_passwords: Passwords
) -> None:
    results = await asyncio.gather(
        *(ensure_admin(engine, password=None, passwords=fast_passwords) for _ in range(3))
    )
    generated = [r for r in results if r is not None]
    # Whoever stored admin, and only it, reports the password (others' were never saved).
    assert len(generated) <= 1
    assert await _count(engine, tables.user) == 1
    assert await _count(engine, tables.enterprise) == 1
    assert await _count(engine, tables.role) == 3
    if generated:
        assert await authenticate(engine, fast_passwords, nick="admin", password=generated[0])


async def _blocked(engine: AsyncEngine) -> dict[str, bool]:
    role = tables.role
    async with engine.connect() as conn:
        rows = await conn.execute(select(role.c.name, role.c.blocked))
        return {r.name: bool(r.blocked) for r in rows}


async def test_cloud_admin_is_blocked_and_stays_so(
    engine: AsyncEngine, fast_passwords: Passwords
) -> None:
    await ensure_admin(engine, password="x", passwords=fast_passwords)
    assert await _blocked(engine) == {
        privileges.CLOUD_ADMIN: True,
        privileges.ENTERPRISE_ADMIN: False,
        privileges.USER: False,
    }
    # A database seeded before roles could be blocked gets CLOUD_ADMIN blocked.
    async with engine.begin() as conn:
        await conn.execute(tables.role.update().values(blocked=False))
    await ensure_admin(engine, password="x", passwords=fast_passwords)
    await ensure_admin(engine, password="x", passwords=fast_passwords)
    assert (await _blocked(engine))[privileges.CLOUD_ADMIN] is True
    assert (await _blocked(engine))[privileges.USER] is False
