"""Who is calling: checking a nick and password against the user table.

Session tokens are in `sessions`, the throttling of failed logins in `throttle`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.events import record_login
from abiquo_central.tenants.passwords import Passwords


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user, with what its role allows."""

    user_id: int
    nick: str
    enterprise_id: int
    role: str
    privileges: frozenset[str]

    def holds(self, *privileges: str) -> bool:
        return all(p in self.privileges for p in privileges)


@dataclass(frozen=True, slots=True)
class Account:
    """What a user shows of itself (GET /api/login)."""

    id: int
    nick: str
    name: str
    surname: str
    email: str
    locale: str
    active: bool
    enterprise_id: int
    role_id: int


async def role_privileges(conn: AsyncConnection, role_id: int) -> frozenset[str]:
    """The privileges the role holds."""
    return frozenset(
        (
            await conn.execute(
                select(tables.role_privilege.c.privilege).where(
                    tables.role_privilege.c.role_id == role_id
                )
            )
        ).scalars()
    )


async def get_account(engine: AsyncEngine, user_id: int) -> Account | None:
    """The user with this id, or None when there is none."""
    user = tables.user
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    user.c.id,
                    user.c.nick,
                    user.c.name,
                    user.c.surname,
                    user.c.email,
                    user.c.locale,
                    user.c.active,
                    user.c.enterprise_id,
                    user.c.role_id,
                ).where(user.c.id == user_id)
            )
        ).one_or_none()
    if row is None:
        return None
    return Account(
        id=row.id,
        nick=row.nick,
        name=row.name,
        surname=row.surname,
        email=row.email,
        locale=row.locale,
        active=bool(row.active),
        enterprise_id=row.enterprise_id,
        role_id=row.role_id,
    )


async def authenticate(
    engine: AsyncEngine, passwords: Passwords, *, nick: str, password: str
) -> Principal | None:
    """The user whose nick and password these are, or None (unknown, wrong or inactive)."""
    user, role = tables.user, tables.role
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    user.c.id,
                    user.c.enterprise_id,
                    user.c.password_hash,
                    user.c.active,
                    user.c.role_id,
                    role.c.name.label("role_name"),
                )
                .join(role, role.c.id == user.c.role_id)
                .where(user.c.nick == nick)
            )
        ).one_or_none()
        privileges: frozenset[str] = frozenset()
        if row is not None:
            privileges = await role_privileges(conn, row.role_id)
    # The connection is back in the pool before the slow part: a verification must not
    # hold one of the few database connections for its whole duration.
    if row is None:
        await passwords.verify_nobody(password)
        await record_login(engine, nick=nick, user_id=None, enterprise_id=None, succeeded=False)
        return None
    good = await passwords.verify(row.password_hash, password) and row.active
    if not good:
        # Only failures here: HTTP Basic authenticates every request, and a success
        # recorded each time would bury the log. A login proper (a session token
        # issued) records its success where the token is made.
        await record_login(
            engine, nick=nick, user_id=row.id, enterprise_id=row.enterprise_id, succeeded=False
        )
        return None
    return Principal(
        user_id=row.id,
        nick=nick,
        enterprise_id=row.enterprise_id,
        role=row.role_name,
        privileges=privileges,
    )
