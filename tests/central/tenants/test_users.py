"""Users in the domain: validation, what a Principal carries, self-service, races."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables
from abiquo_central.tenants import privileges, users
from abiquo_central.tenants.authentication import Principal, authenticate
from abiquo_central.tenants.passwords import Passwords
from abiquo_central.tenants.sessions import issue_token, resolve_token
from abiquo_runtime.errors import Conflict, InvalidInput, NotPermitted
from tests.central.conftest import USER_NICK, USER_PASSWORD, Seeded

NOW = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("given", "stored"),
    [("", ""), ("  ", ""), ("5", "5"), ("3, 1,3", "1,3"), ("10,2", "2,10")],
)
def test_available_vdcs_are_normalised(given: str, stored: str) -> None:
    assert users.normalise_vdcs(given) == stored


@pytest.mark.parametrize("given", ["x", "1,,2", "0", "-1", "1.5", "²", str(2**31), "1;2"])
def test_available_vdcs_are_ids(given: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        users.normalise_vdcs(given)
    assert caught.value.code == users.INVALID_USER


async def _principal(engine: AsyncEngine, passwords: Passwords) -> Principal:
    found = await authenticate(engine, passwords, nick=USER_NICK, password=USER_PASSWORD)
    assert found is not None
    return found


async def test_the_principal_carries_auth_type_and_vdcs(
    engine: AsyncEngine, seeded: Seeded, fast_passwords: Passwords
) -> None:
    user = tables.user
    async with engine.begin() as conn:
        await conn.execute(
            user.update().where(user.c.id == seeded.user_id).values(available_vdcs="2,7")
        )
    found = await _principal(engine, fast_passwords)
    assert (found.auth_type, found.available_vdcs) == ("ABIQUO", frozenset({2, 7}))
    assert found.may_use_vdc(7) and not found.may_use_vdc(3)
    token = await issue_token(engine, user_id=seeded.user_id, now=NOW, ttl=60, max_age=600)
    by_token = await resolve_token(engine, token, now=NOW, ttl=60, max_age=600)
    assert by_token == found
    async with engine.begin() as conn:
        await conn.execute(
            user.update().where(user.c.id == seeded.user_id).values(available_vdcs="")
        )
    assert (await _principal(engine, fast_passwords)).may_use_vdc(3)


async def test_a_user_without_privileges_serves_itself(
    engine: AsyncEngine, seeded: Seeded, fast_passwords: Passwords
) -> None:
    me = await _principal(engine, fast_passwords)
    assert not me.holds(privileges.USERS_VIEW)
    found = await users.get_user(engine, me, seeded.enterprise_id, seeded.user_id)
    spec = users.UserSpec(
        nick=found.nick,
        name="Janet",
        role_id=found.role_id,
        email="janet@example.com",
        password="renewed",
    )
    token = await issue_token(engine, user_id=me.user_id, now=NOW, ttl=60, max_age=600)
    changed = await users.update_user(
        engine, fast_passwords, me, seeded.enterprise_id, seeded.user_id, spec
    )
    assert (changed.name, changed.email) == ("Janet", "janet@example.com")
    assert await resolve_token(engine, token, now=NOW, ttl=60, max_age=600) is None
    assert await authenticate(engine, fast_passwords, nick=USER_NICK, password="renewed")
    with pytest.raises(NotPermitted):
        await users.update_user(
            engine,
            fast_passwords,
            me,
            seeded.enterprise_id,
            seeded.user_id,
            users.UserSpec(nick=found.nick, name="J", role_id=found.role_id, available_vdcs="1"),
        )
    with pytest.raises(NotPermitted):
        await users.get_user(engine, me, seeded.enterprise_id, 1 if me.user_id != 1 else 2)
    with pytest.raises(Conflict):
        await users.delete_user(engine, me, seeded.enterprise_id, seeded.user_id)


async def test_two_requests_for_one_nick(
    engine: AsyncEngine, seeded: Seeded, fast_passwords: Passwords
) -> None:
    admin = await authenticate(engine, fast_passwords, nick="admin", password="admin-secret")
    assert admin is not None
    async with engine.connect() as conn:
        role_id = (
            await conn.execute(
                select(tables.role.c.id).where(tables.role.c.name == privileges.USER)
            )
        ).scalar_one()
    spec = users.UserSpec(nick="twin", name="Twin", role_id=role_id, password="p")
    results = await asyncio.gather(
        *(
            users.add_user(engine, fast_passwords, admin, seeded.enterprise_id, spec)
            for _ in range(3)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, users.User) for r in results) == 1
    assert all(
        isinstance(r, Conflict) and r.code == users.DUPLICATED_NICK
        for r in results
        if not isinstance(r, users.User)
    )
