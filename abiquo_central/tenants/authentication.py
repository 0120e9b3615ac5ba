"""Who is calling: checking a nick and password against the user table.

Session tokens are in `sessions`, the throttling of failed logins in `throttle`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.events import Actor, record_login
from abiquo_central.tenants.passwords import Passwords

# How a user authenticates: against central's own password, or (once it is supported)
# against a directory.
ABIQUO = "ABIQUO"
LDAP = "LDAP"
AUTH_TYPES: tuple[str, ...] = (ABIQUO, LDAP)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user, with what its role allows."""

    user_id: int
    nick: str
    enterprise_id: int
    role: str
    privileges: frozenset[str]
    auth_type: str = ABIQUO
    # The only virtual datacenters the user may see and use; empty for every one of its
    # enterprise's.
    available_vdcs: frozenset[int] = frozenset()

    def as_actor(self) -> Actor:
        """The caller as the event log names whoever makes a change."""
        return Actor(user_id=self.user_id, nick=self.nick, enterprise_id=self.enterprise_id)

    def holds(self, *privileges: str) -> bool:
        return all(p in self.privileges for p in privileges)

    def may_use_vdc(self, vdc_id: int) -> bool:
        """Whether the user's restriction to some VDCs (if any) lets it use this one."""
        return not self.available_vdcs or vdc_id in self.available_vdcs


def vdc_ids(stored: str) -> frozenset[int]:
    """The VDC ids a user's available_vdcs column holds ("" for all: empty)."""
    return frozenset(int(part) for part in stored.split(",") if part.strip().isdigit())


def principal_of(row: Row[*tuple[Any, ...]], privileges: frozenset[str]) -> Principal:
    """The Principal of a row with the user's id, nick, enterprise_id, auth_type,
    available_vdcs and its role's name as role_name."""
    return Principal(
        user_id=row.id,
        nick=row.nick,
        enterprise_id=row.enterprise_id,
        role=row.role_name,
        privileges=privileges,
        auth_type=row.auth_type,
        available_vdcs=vdc_ids(row.available_vdcs),
    )


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


class PrivilegeCache:
    """Each role's privileges as this process read them, for at most `ttl` seconds.

    Every authenticated request needs its caller's privileges; read each time, they
    would be a query (and, for a cloud administrator, 53 rows) per request. A role
    changed through this process is forgotten at once (`forget`); another process sees
    the change within `ttl`.
    """

    def __init__(self, ttl: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl, self._clock = ttl, clock
        self._held: dict[int, tuple[float, frozenset[str]]] = {}

    async def of(self, conn: AsyncConnection, role_id: int) -> frozenset[str]:
        now = self._clock()
        found = self._held.get(role_id)
        if found is not None and found[0] > now:
            return found[1]
        privileges = await role_privileges(conn, role_id)
        if len(self._held) > MAX_CACHED_ROLES:
            self._held.clear()
        self._held[role_id] = (now + self._ttl, privileges)
        return privileges

    def forget(self, role_id: int | None = None) -> None:
        """Read this role (every role, without one) afresh next time."""
        if role_id is None:
            self._held.clear()
        else:
            self._held.pop(role_id, None)


# Roles are few; the bound only keeps a pathological number from growing the cache.
MAX_CACHED_ROLES = 10_000


async def authenticate(
    engine: AsyncEngine,
    passwords: Passwords,
    *,
    nick: str,
    password: str,
    privileges: PrivilegeCache | None = None,
) -> Principal | None:
    """The user whose nick and password these are, or None (unknown, wrong or inactive)."""
    user, role = tables.user, tables.role
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    user.c.id,
                    user.c.nick,
                    user.c.enterprise_id,
                    user.c.password_hash,
                    user.c.active,
                    user.c.role_id,
                    user.c.auth_type,
                    user.c.available_vdcs,
                    role.c.name.label("role_name"),
                )
                .join(role, role.c.id == user.c.role_id)
                .where(user.c.nick == nick)
            )
        ).one_or_none()
        held: frozenset[str] = frozenset()
        if row is not None:
            held = await (
                privileges.of(conn, row.role_id)
                if privileges is not None
                else role_privileges(conn, row.role_id)
            )
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
    return principal_of(row, held)
