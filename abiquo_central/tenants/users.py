"""Users: listing, creating, changing and removing them, and who may do which.

As with roles, the rules depend on what is stored (whose enterprise a user is in, what
its role grants), so they are checked here, in the transaction that acts:

- USERS_VIEW reads the users of one's own enterprise, USERS_MANAGE_USERS creates,
  changes and deletes them; USERS_MANAGE_OTHER_ENTERPRISES extends both to every
  enterprise. Without it another enterprise's users are NotFound, as if absent.
- Every user reads itself, and changes its own name, surname, email, locale and
  password, whatever its privileges; nothing else of itself without USERS_MANAGE_USERS.
- Nobody deletes or deactivates itself (Conflict): an enterprise could be left with no
  one to manage it.
- A caller manages only users whose role grants nothing it does not hold itself, and
  assigns only such roles, global or of the user's enterprise (NotPermitted otherwise):
  an enterprise administrator must not take over a cloud administrator that shares its
  enterprise, nor make one.
- A new password, a deactivation or a deletion ends the user's sessions.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, Row, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import Page, PageRequest, fetch_page
from abiquo_central.db.rows import inserted_id, taken
from abiquo_central.events import Action, Component, record_action
from abiquo_central.tenants import privileges as p
from abiquo_central.tenants.authentication import (
    ABIQUO,
    AUTH_TYPES,
    Principal,
    role_privileges,
)
from abiquo_central.tenants.enterprises import ENTERPRISE_NOT_FOUND
from abiquo_central.tenants.passwords import Passwords
from abiquo_central.tenants.sessions import revoke_user_tokens
from abiquo_runtime.errors import Conflict, InvalidInput, NotFound, NotPermitted

USER_NOT_FOUND = "USER-0"
DUPLICATED_NICK = "USER-1"
INVALID_USER = "USER-2"
ONESELF = "USER-3"
UNAVAILABLE_ROLE = "USER-4"
USER_IN_USE = "USER-5"

# The columns' lengths: longer values are refused rather than cut.
NICK_MAX = 128
NAME_MAX = 128
EMAIL_MAX = 255
LOCALE_MAX = 16
VDCS_MAX = 1024
# argon2 takes any length; a bound keeps a request from making it hash megabytes.
PASSWORD_MAX = 256
_ID_MAX = 2**31 - 1

_LOCALE = re.compile(r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
# A nick travels in HTTP Basic credentials, where a colon ends it.
_NICK = re.compile(r"^[^\s:]+$")

_user = tables.user
_role = tables.role

SORTABLE: Mapping[str, ColumnElement[Any]] = MappingProxyType(
    {
        "id": _user.c.id,
        "name": _user.c.name,
        "nick": _user.c.nick,
        "surname": _user.c.surname,
        "email": _user.c.email,
    }
)
DEFAULT_SORT = "nick"


@dataclass(frozen=True, slots=True)
class User:
    id: int
    enterprise_id: int
    role_id: int
    nick: str
    name: str
    surname: str
    email: str
    locale: str
    active: bool
    auth_type: str
    # Abiquo's availableVirtualDatacenters: "" for all, else VDC ids separated by commas.
    available_vdcs: str


@dataclass(frozen=True, slots=True)
class UserSpec:
    """What a caller sets on a user, creating or replacing it. A password of None (or
    "") keeps the current one."""

    nick: str
    name: str
    role_id: int
    surname: str = ""
    email: str = ""
    locale: str = "en_US"
    active: bool = True
    auth_type: str = ABIQUO
    available_vdcs: str = ""
    password: str | None = None


def _user_of(row: Row[Any]) -> User:
    return User(
        id=row.id,
        enterprise_id=row.enterprise_id,
        role_id=row.role_id,
        nick=row.nick,
        name=row.name,
        surname=row.surname,
        email=row.email,
        locale=row.locale,
        active=bool(row.active),
        auth_type=row.auth_type,
        available_vdcs=row.available_vdcs,
    )


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(message, code=INVALID_USER)


def _not_found() -> NotFound:
    return NotFound("The requested user does not exist", code=USER_NOT_FOUND)


def _enterprise_not_found() -> NotFound:
    return NotFound("The requested enterprise does not exist", code=ENTERPRISE_NOT_FOUND)


def _duplicated(nick: str) -> Conflict:
    return Conflict(f"There is already a user with nick {nick}", code=DUPLICATED_NICK)


def normalise_vdcs(value: str) -> str:
    """availableVirtualDatacenters as stored: ids in order, no repeats, "" for all.

    InvalidInput unless it is positive whole numbers separated by commas.
    """
    parts = [part.strip() for part in value.split(",")] if value.strip() else []
    ids: set[int] = set()
    for part in parts:
        if not part.isascii() or not part.isdigit() or not 0 < int(part) <= _ID_MAX:
            raise _invalid(
                "availableVirtualDatacenters must be virtual datacenter ids separated by "
                f"commas, not '{value}'"
            )
        ids.add(int(part))
    stored = ",".join(str(i) for i in sorted(ids))
    if len(stored) > VDCS_MAX:
        raise _invalid(f"availableVirtualDatacenters has at most {VDCS_MAX} characters")
    return stored


def _bounded(label: str, value: str, top: int, *, required: bool = False) -> str:
    value = value.strip()
    if required and not value:
        raise _invalid(f"a user needs a {label}")
    if len(value) > top:
        raise _invalid(f"a user's {label} has at most {top} characters")
    return value


def validate(spec: UserSpec) -> UserSpec:
    """`spec` trimmed and normalised; InvalidInput saying what is wrong otherwise."""
    nick = _bounded("nick", spec.nick, NICK_MAX, required=True)
    if not _NICK.match(nick):
        raise _invalid("a nick has no spaces nor colons")
    email = _bounded("email", spec.email, EMAIL_MAX)
    if email and not _EMAIL.match(email):
        raise _invalid(f"'{email}' is not an email address")
    locale = _bounded("locale", spec.locale, LOCALE_MAX, required=True)
    if not _LOCALE.match(locale):
        raise _invalid(f"'{locale}' is not a locale (such as en_US)")
    if spec.auth_type not in AUTH_TYPES:
        raise _invalid(f"authType is one of {', '.join(AUTH_TYPES)}, not '{spec.auth_type}'")
    if spec.password is not None and len(spec.password) > PASSWORD_MAX:
        raise _invalid(f"a password has at most {PASSWORD_MAX} characters")
    return dataclasses.replace(
        spec,
        nick=nick,
        name=_bounded("name", spec.name, NAME_MAX, required=True),
        surname=_bounded("surname", spec.surname, NAME_MAX),
        email=email,
        locale=locale,
        available_vdcs=normalise_vdcs(spec.available_vdcs),
        password=spec.password or None,
    )


def _reaches(caller: Principal, enterprise_id: int) -> bool:
    return enterprise_id == caller.enterprise_id or caller.holds(p.USERS_MANAGE_OTHER_ENTERPRISES)


def _require(caller: Principal, privilege: str) -> None:
    if not caller.holds(privilege):
        raise NotPermitted(f"Access is denied: it needs the privilege {privilege}")


async def _enterprise(conn: AsyncConnection, caller: Principal, enterprise_id: int) -> None:
    """NotFound unless the enterprise exists and the caller reaches its users."""
    ent = tables.enterprise
    if not _reaches(caller, enterprise_id):
        raise _enterprise_not_found()
    if (await conn.execute(select(ent.c.id).where(ent.c.id == enterprise_id))).first() is None:
        raise _enterprise_not_found()


async def _find(conn: AsyncConnection, caller: Principal, enterprise_id: int, user_id: int) -> User:
    """The user of that enterprise, if the caller reaches it (itself always)."""
    if user_id != caller.user_id and not _reaches(caller, enterprise_id):
        raise _not_found()
    row = (
        await conn.execute(
            select(_user).where(_user.c.id == user_id, _user.c.enterprise_id == enterprise_id)
        )
    ).one_or_none()
    if row is None:
        raise _not_found()
    return _user_of(row)


async def _may_manage_holder_of(conn: AsyncConnection, caller: Principal, role_id: int) -> None:
    beyond = sorted(await role_privileges(conn, role_id) - caller.privileges)
    if beyond:
        raise NotPermitted(
            "Cannot manage a user whose role grants privileges one does not hold: "
            + ", ".join(beyond)
        )


async def _assignable(
    conn: AsyncConnection, caller: Principal, role_id: int, enterprise_id: int
) -> None:
    """The role is one a user of `enterprise_id` may hold and the caller may give."""
    row = (
        await conn.execute(select(_role.c.enterprise_id).where(_role.c.id == role_id))
    ).one_or_none()
    if row is None or row.enterprise_id not in (None, enterprise_id):
        raise InvalidInput(
            f"role {role_id} is not a role the users of enterprise {enterprise_id} may hold",
            code=UNAVAILABLE_ROLE,
        )
    await _may_manage_holder_of(conn, caller, role_id)


async def _nick_taken(conn: AsyncConnection, nick: str, but: int | None = None) -> bool:
    return await taken(conn, _user, _user.c.nick == nick, but=but)


async def _record(
    conn: AsyncConnection, caller: Principal, action: Action, user: User, message: str
) -> None:
    await record_action(
        conn,
        caller.as_actor(),
        component=Component.USER,
        action=action,
        target=f"/admin/enterprises/{user.enterprise_id}/users/{user.id}",
        message=message,
    )


async def list_users(
    engine: AsyncEngine, caller: Principal, *, page: PageRequest, enterprise_id: int | None
) -> Page[User]:
    """A page of an enterprise's users, or (enterprise_id None) of every enterprise the
    caller reaches. `has` looks in the name, nick, surname and email."""
    _require(caller, p.USERS_VIEW)
    query = select(_user)
    async with engine.connect() as conn:
        if enterprise_id is not None:
            await _enterprise(conn, caller, enterprise_id)
            query = query.where(_user.c.enterprise_id == enterprise_id)
        elif not caller.holds(p.USERS_MANAGE_OTHER_ENTERPRISES):
            query = query.where(_user.c.enterprise_id == caller.enterprise_id)
        if page.has:
            query = query.where(
                or_(
                    *(
                        column.contains(page.has, autoescape=True)
                        for column in (_user.c.name, _user.c.nick, _user.c.surname, _user.c.email)
                    )
                )
            )
        rows, total = await fetch_page(
            conn,
            query,
            dataclasses.replace(page, has=None),
            sortable=SORTABLE,
            default_sort=DEFAULT_SORT,
            tiebreaker=_user.c.id,
        )
    return Page(items=[_user_of(r) for r in rows], total=total)


async def get_user(
    engine: AsyncEngine, caller: Principal, enterprise_id: int, user_id: int
) -> User:
    """One user: itself for anyone, others with USERS_VIEW."""
    async with engine.connect() as conn:
        found = await _find(conn, caller, enterprise_id, user_id)
    if found.id != caller.user_id:
        _require(caller, p.USERS_VIEW)
    return found


async def _password_hash(passwords: Passwords, spec: UserSpec) -> str:
    if spec.password is not None:
        return await passwords.hash(spec.password)
    # A directory user has no password of central's: one nobody knows stands in.
    return await passwords.hash(secrets.token_urlsafe(32))


async def add_user(
    engine: AsyncEngine,
    passwords: Passwords,
    caller: Principal,
    enterprise_id: int,
    spec: UserSpec,
    *,
    now: datetime | None = None,
) -> User:
    """A new user of the enterprise."""
    # Who may act and where, before what: an enterprise the caller may not see is 404
    # whatever the body holds.
    _require(caller, p.USERS_MANAGE_USERS)
    async with engine.connect() as conn:
        await _enterprise(conn, caller, enterprise_id)
    spec = validate(spec)
    if spec.password is None and spec.auth_type == ABIQUO:
        raise _invalid("a user that authenticates with central (ABIQUO) needs a password")
    async with engine.connect() as conn:
        # Checked before hashing, so that a refused request costs no hash.
        await _enterprise(conn, caller, enterprise_id)
        await _assignable(conn, caller, spec.role_id, enterprise_id)
    password_hash = await _password_hash(passwords, spec)
    try:
        async with engine.begin() as conn:
            await _enterprise(conn, caller, enterprise_id)
            await _assignable(conn, caller, spec.role_id, enterprise_id)
            if await _nick_taken(conn, spec.nick):
                raise _duplicated(spec.nick)
            user_id = inserted_id(
                await conn.execute(
                    _user.insert().values(
                        enterprise_id=enterprise_id,
                        role_id=spec.role_id,
                        nick=spec.nick,
                        name=spec.name,
                        surname=spec.surname,
                        email=spec.email,
                        password_hash=password_hash,
                        active=spec.active,
                        locale=spec.locale,
                        auth_type=spec.auth_type,
                        available_vdcs=spec.available_vdcs,
                        created_at=now if now is not None else datetime.now(UTC),
                    )
                )
            )
            created = User(
                id=user_id,
                enterprise_id=enterprise_id,
                role_id=spec.role_id,
                nick=spec.nick,
                name=spec.name,
                surname=spec.surname,
                email=spec.email,
                locale=spec.locale,
                active=spec.active,
                auth_type=spec.auth_type,
                available_vdcs=spec.available_vdcs,
            )
            await _record(conn, caller, Action.USER_CREATE, created, f"User {spec.nick} created")
    except IntegrityError:
        # Another request took the nick between the check and the insert.
        raise _duplicated(spec.nick) from None
    return created


def _check_change(caller: Principal, found: User, spec: UserSpec) -> None:
    """NotPermitted or Conflict for changes the caller may not make to `found`."""
    if found.id == caller.user_id:
        if not spec.active and found.active:
            raise Conflict("A user cannot deactivate itself", code=ONESELF)
        if caller.holds(p.USERS_MANAGE_USERS):
            return
        fixed = {
            "nick": (found.nick, spec.nick),
            "role": (found.role_id, spec.role_id),
            "active": (found.active, spec.active),
            "authType": (found.auth_type, spec.auth_type),
            "availableVirtualDatacenters": (found.available_vdcs, spec.available_vdcs),
        }
        changed = [name for name, (old, new) in fixed.items() if old != new]
        if changed:
            raise NotPermitted(
                f"Changing one's own {', '.join(changed)} needs the privilege "
                f"{p.USERS_MANAGE_USERS}"
            )
        return
    _require(caller, p.USERS_MANAGE_USERS)


async def update_user(
    engine: AsyncEngine,
    passwords: Passwords,
    caller: Principal,
    enterprise_id: int,
    user_id: int,
    spec: UserSpec,
) -> User:
    """Replace the user's fields with `spec`'s (its password only when one is given)."""
    async with engine.connect() as conn:
        found = await _find(conn, caller, enterprise_id, user_id)
    spec = validate(spec)
    _check_change(caller, found, spec)
    password_hash = await passwords.hash(spec.password) if spec.password is not None else None
    try:
        async with engine.begin() as conn:
            found = await _find(conn, caller, enterprise_id, user_id)
            _check_change(caller, found, spec)
            if found.id != caller.user_id:
                await _may_manage_holder_of(conn, caller, found.role_id)
            if spec.role_id != found.role_id:
                await _assignable(conn, caller, spec.role_id, enterprise_id)
            if await _nick_taken(conn, spec.nick, but=user_id):
                raise _duplicated(spec.nick)
            values: dict[str, Any] = {
                "role_id": spec.role_id,
                "nick": spec.nick,
                "name": spec.name,
                "surname": spec.surname,
                "email": spec.email,
                "locale": spec.locale,
                "active": spec.active,
                "auth_type": spec.auth_type,
                "available_vdcs": spec.available_vdcs,
            }
            if password_hash is not None:
                values["password_hash"] = password_hash
            await conn.execute(_user.update().where(_user.c.id == user_id).values(**values))
            if password_hash is not None or not spec.active:
                await revoke_user_tokens(conn, user_id)
            changed = dataclasses.replace(
                found,
                **{k: v for k, v in values.items() if k != "password_hash"},
            )
            await _record(conn, caller, Action.USER_MODIFY, changed, f"User {spec.nick} modified")
    except IntegrityError:
        raise _duplicated(spec.nick) from None
    return changed


async def delete_user(
    engine: AsyncEngine, caller: Principal, enterprise_id: int, user_id: int
) -> None:
    """Remove a user (never oneself), and its sessions with it."""
    try:
        async with engine.begin() as conn:
            found = await _find(conn, caller, enterprise_id, user_id)
            if found.id == caller.user_id:
                raise Conflict("A user cannot delete itself", code=ONESELF)
            _require(caller, p.USERS_MANAGE_USERS)
            await _may_manage_holder_of(conn, caller, found.role_id)
            # session_token cascades in the schema, but SQLite only honours that with
            # foreign keys switched on: delete explicitly to behave the same everywhere.
            await revoke_user_tokens(conn, user_id)
            await conn.execute(_user.delete().where(_user.c.id == user_id))
            await _record(conn, caller, Action.USER_DELETE, found, f"User {found.nick} deleted")
    except IntegrityError:
        # Something still refers to the user (what it owns must go first).
        raise Conflict(
            "The user still owns resources: remove them first", code=USER_IN_USE
        ) from None


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
    """Create a user with the role named `role`, with no questions asked (seeds and
    scripts); its id. A taken nick is an IntegrityError."""
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
