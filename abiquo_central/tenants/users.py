"""Users: creating them (the API's user resource comes with its own issue)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.rows import inserted_id
from abiquo_central.tenants.passwords import Passwords
from abiquo_runtime.errors import NotFound


async def create_user(
    engine: AsyncEngine,
    *,
    passwords: Passwords,
    enterprise_id: int,
    role: str,
    nick: str,
    password: str,
    name: str,
    surname: str = "",
    email: str = "",
    locale: str = "en_US",
    active: bool = True,
    now: datetime | None = None,
) -> int:
    """Create a user with the role named `role`; its id. A taken nick is an IntegrityError."""
    password_hash = await passwords.hash(password)
    async with engine.begin() as conn:
        role_id = (
            await conn.execute(select(tables.role.c.id).where(tables.role.c.name == role))
        ).scalar_one_or_none()
        if role_id is None:
            raise NotFound(f"there is no role named {role}")
        result = await conn.execute(
            tables.user.insert().values(
                enterprise_id=enterprise_id,
                role_id=role_id,
                nick=nick,
                name=name,
                surname=surname,
                email=email,
                password_hash=password_hash,
                active=active,
                locale=locale,
                created_at=now if now is not None else datetime.now(UTC),
            )
        )
        return inserted_id(result)
