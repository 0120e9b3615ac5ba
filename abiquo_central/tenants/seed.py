"""What a new installation starts with: the Abiquo enterprise, the seeded roles, admin.

Every step is idempotent and safe when two central processes start together: each one
inserts in its own transaction and takes a unique-key violation to mean that the other
process got there first.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.rows import inserted_id
from abiquo_central.tenants import privileges
from abiquo_central.tenants.passwords import Passwords

ADMIN_ENTERPRISE = "Abiquo"
ADMIN_NICK = "admin"


async def ensure_enterprise(engine: AsyncEngine, name: str, *, now: datetime) -> int:
    """The id of the enterprise named `name`, created when absent."""
    enterprise = tables.enterprise
    query = select(enterprise.c.id).where(enterprise.c.name == name)
    async with engine.connect() as conn:
        found = (await conn.execute(query)).scalar_one_or_none()
    if found is not None:
        return int(found)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(
                enterprise.insert().values(
                    name=name, is_reservation_restricted=False, created_at=now
                )
            )
            return inserted_id(result)
    except IntegrityError:
        async with engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())


async def _ensure_role(engine: AsyncEngine, name: str, granted: tuple[str, ...]) -> int:
    role, role_privilege = tables.role, tables.role_privilege
    query = select(role.c.id).where(role.c.name == name)
    # CLOUD_ADMIN is blocked: nobody edits or deletes it, so that there is always a role
    # that can do everything (and an upgrade blocks it where an older seed did not).
    blocked = name == privileges.CLOUD_ADMIN
    created = False
    async with engine.connect() as conn:
        role_id = (await conn.execute(query)).scalar_one_or_none()
    if role_id is None:
        try:
            async with engine.begin() as conn:
                result = await conn.execute(
                    role.insert().values(name=name, enterprise_id=None, blocked=blocked)
                )
                role_id = inserted_id(result)
                created = True
        except IntegrityError:
            async with engine.connect() as conn:
                role_id = (await conn.execute(query)).scalar_one()
    if blocked and not created:
        async with engine.begin() as conn:
            await conn.execute(role.update().where(role.c.id == role_id).values(blocked=True))
    # A new role gets its privileges. An existing one keeps what administrators made of
    # it, except CLOUD_ADMIN, which cannot be edited and always holds every privilege
    # this version knows (so an upgrade that adds privileges reaches it).
    if created or name == privileges.CLOUD_ADMIN:
        async with engine.connect() as conn:
            held = set(
                (
                    await conn.execute(
                        select(role_privilege.c.privilege).where(
                            role_privilege.c.role_id == role_id
                        )
                    )
                ).scalars()
            )
        missing = [p for p in granted if p not in held]
        if missing:
            try:
                async with engine.begin() as conn:
                    await conn.execute(
                        role_privilege.insert(),
                        [{"role_id": role_id, "privilege": p} for p in missing],
                    )
            except IntegrityError:
                pass  # another process granted them meanwhile
    return int(role_id)


async def ensure_roles(engine: AsyncEngine) -> dict[str, int]:
    """The seeded roles by name, with their ids; created (with privileges) when absent."""
    return {
        name: await _ensure_role(engine, name, granted)
        for name, granted in privileges.SEEDED_ROLES.items()
    }


async def ensure_admin(
    engine: AsyncEngine,
    *,
    password: str | None,
    passwords: Passwords | None = None,
    now: datetime | None = None,
) -> str | None:
    """Seed the Abiquo enterprise, the seeded roles and the `admin` cloud administrator.

    Returns the password when it generated one (to be shown once), and None when it did
    not: the user existed already, or `password` was given.
    """
    passwords = passwords if passwords is not None else Passwords()
    now = now if now is not None else datetime.now(UTC)
    enterprise_id = await ensure_enterprise(engine, ADMIN_ENTERPRISE, now=now)
    roles = await ensure_roles(engine)
    user = tables.user
    async with engine.connect() as conn:
        exists = (
            await conn.execute(select(user.c.id).where(user.c.nick == ADMIN_NICK))
        ).first() is not None
    if exists:
        return None
    secret = password if password is not None else secrets.token_urlsafe(18)
    password_hash = await passwords.hash(secret)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                user.insert().values(
                    enterprise_id=enterprise_id,
                    role_id=roles[privileges.CLOUD_ADMIN],
                    nick=ADMIN_NICK,
                    name="Cloud",
                    surname="Administrator",
                    email="",
                    password_hash=password_hash,
                    active=True,
                    locale="en_US",
                    created_at=now,
                )
            )
    except IntegrityError:
        # Another process seeded admin with its own password: ours was never stored.
        return None
    return secret if password is None else None
