"""Session tokens: issued by GET /api/login, then sent instead of a password.

A token is 32 random bytes (URL-safe base64). The database keeps only its SHA-256:
a fast hash is enough for a value that random (nothing to guess from a dictionary), and
it lets a token be looked up by its hash directly. Tokens live in the database rather
than in a process because central runs as several stateless processes.

A token expires `ttl` seconds after its last use (each use extends it) and at the
latest `max_age` seconds after it was issued. It stops working at once when its user is
deactivated or deleted (the lookup joins the user and wants it active; deleting the
user deletes its tokens). A new password, a deactivation or a deletion made through
the API also deletes them (`revoke_user_tokens`), so that a reactivated user starts afresh.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.tenants.authentication import (
    Principal,
    PrivilegeCache,
    principal_of,
    role_privileges,
)

_st = tables.session_token

# The longest a token's recorded last use may lag behind its true one (seconds).
REFRESH_MAX = 60.0


def token_hash(token: str) -> str:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _expiry(now: datetime, created: datetime, *, ttl: float, max_age: float) -> datetime:
    return min(now + timedelta(seconds=ttl), created + timedelta(seconds=max_age))


async def issue_token(
    engine: AsyncEngine, *, user_id: int, now: datetime, ttl: float, max_age: float
) -> str:
    """A new token for the user (the only time it is seen in clear)."""
    token = secrets.token_urlsafe(32)
    async with engine.begin() as conn:
        # Expired tokens are swept here rather than by a timer: logins are frequent
        # enough to keep the table small, and no process has to own the chore.
        await conn.execute(_st.delete().where(_st.c.expires_at <= now))
        await conn.execute(
            _st.insert().values(
                token_hash=token_hash(token),
                user_id=user_id,
                created_at=now,
                last_used_at=now,
                expires_at=_expiry(now, now, ttl=ttl, max_age=max_age),
            )
        )
    return token


async def resolve_token(
    engine: AsyncEngine,
    token: str,
    *,
    now: datetime,
    ttl: float,
    max_age: float,
    privileges: PrivilegeCache | None = None,
) -> Principal | None:
    """The user the token was issued to, or None (unknown, expired, or user inactive).

    A good token's expiry moves on by `ttl` (never past its absolute end). Not at every
    request: that would make every authenticated request a write, all of a client's
    concurrent requests queueing on its token's row. The expiry is moved when the last
    recorded use is older than a tenth of `ttl` (at most a minute), so a token may lapse
    up to that much before `ttl` of true idleness.
    """
    user, role = tables.user, tables.role
    digest = token_hash(token)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    _st.c.created_at,
                    _st.c.last_used_at,
                    _st.c.expires_at,
                    user.c.id,
                    user.c.nick,
                    user.c.enterprise_id,
                    user.c.active,
                    user.c.role_id,
                    user.c.auth_type,
                    user.c.available_vdcs,
                    role.c.name.label("role_name"),
                )
                .join(user, user.c.id == _st.c.user_id)
                .join(role, role.c.id == user.c.role_id)
                .where(_st.c.token_hash == digest)
            )
        ).one_or_none()
        if row is None or not row.active:
            return None
        if row.expires_at <= now:
            await conn.execute(_st.delete().where(_st.c.token_hash == digest))
            await conn.commit()
            return None
        held = await (
            privileges.of(conn, row.role_id)
            if privileges is not None
            else role_privileges(conn, row.role_id)
        )
        if now - row.last_used_at >= timedelta(seconds=min(REFRESH_MAX, ttl / 10)):
            await conn.execute(
                _st.update()
                .where(_st.c.token_hash == digest)
                .values(
                    last_used_at=now,
                    expires_at=_expiry(now, row.created_at, ttl=ttl, max_age=max_age),
                )
            )
            await conn.commit()
    return principal_of(row, held)


async def revoke_token(engine: AsyncEngine, token: str) -> None:
    """The token stops working (nothing happens if it did not)."""
    async with engine.begin() as conn:
        await conn.execute(_st.delete().where(_st.c.token_hash == token_hash(token)))


async def revoke_user_tokens(conn: AsyncConnection, user_id: int) -> None:
    """Every token of the user stops working, in `conn`'s transaction: what a change of
    password, a deactivation or a deletion does to the sessions opened before it."""
    await conn.execute(_st.delete().where(_st.c.user_id == user_id))
