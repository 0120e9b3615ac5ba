from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.tenants import privileges
from abiquo_central.tenants.authentication import authenticate
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
