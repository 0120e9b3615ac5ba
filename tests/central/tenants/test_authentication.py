from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.tenants import privileges
from abiquo_central.tenants.authentication import PrivilegeCache, authenticate
from abiquo_central.tenants.passwords import Passwords
from tests.central.conftest import ADMIN_PASSWORD, USER_NICK, USER_PASSWORD, Seeded


async def test_right_password(
    engine: AsyncEngine, seeded: Seeded, fast_passwords: Passwords
) -> None:
    user = await authenticate(engine, fast_passwords, nick=USER_NICK, password=USER_PASSWORD)
    assert user is not None
    assert (user.user_id, user.enterprise_id, user.role) == (
        seeded.user_id,
        seeded.enterprise_id,
        privileges.USER,
    )
    assert user.holds(privileges.VDC_ENUMERATE)
    assert not user.holds(privileges.VDC_ENUMERATE, privileges.PHYS_DC_ENUMERATE)
    admin = await authenticate(engine, fast_passwords, nick="admin", password=ADMIN_PASSWORD)
    assert admin is not None and admin.holds(privileges.PHYS_DC_ENUMERATE)


async def test_wrong_password_unknown_nick_inactive_user(
    engine: AsyncEngine, seeded: Seeded, fast_passwords: Passwords
) -> None:
    assert await authenticate(engine, fast_passwords, nick=USER_NICK, password="nope") is None
    assert await authenticate(engine, fast_passwords, nick="ghost", password=USER_PASSWORD) is None
    async with engine.begin() as conn:
        await conn.execute(
            tables.user.update().where(tables.user.c.id == seeded.user_id).values(active=False)
        )
    assert (
        await authenticate(engine, fast_passwords, nick=USER_NICK, password=USER_PASSWORD) is None
    )


async def test_privileges_are_cached_for_their_ttl_and_forgotten_on_demand(
    engine: AsyncEngine, seeded: Seeded
) -> None:
    now = [0.0]
    cache = PrivilegeCache(ttl=2.0, clock=lambda: now[0])
    rp = tables.role_privilege
    async with engine.connect() as conn:
        role_id = (
            await conn.execute(
                select(tables.role.c.id).where(tables.role.c.name == privileges.USER)
            )
        ).scalar_one()
        before = await cache.of(conn, role_id)
    assert privileges.VDC_ENUMERATE in before
    async with engine.begin() as conn:
        await conn.execute(
            rp.delete().where(rp.c.role_id == role_id, rp.c.privilege == privileges.VDC_ENUMERATE)
        )
    async with engine.connect() as conn:
        # Within the TTL, what was read; after it, or once forgotten, what is stored.
        assert await cache.of(conn, role_id) == before
        now[0] = 2.5
        assert privileges.VDC_ENUMERATE not in await cache.of(conn, role_id)
    async with engine.begin() as conn:
        await conn.execute(rp.insert().values(role_id=role_id, privilege=privileges.VDC_ENUMERATE))
    async with engine.connect() as conn:
        assert privileges.VDC_ENUMERATE not in await cache.of(conn, role_id)
        cache.forget(role_id)
        assert await cache.of(conn, role_id) == before
