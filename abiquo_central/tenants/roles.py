"""Roles: named sets of privileges, global or of one enterprise, that users hold.

Unlike enterprises, who may do what to a role depends on the role as stored (whether it
is global, whose enterprise it belongs to, what it grants), so the rules are checked
here, in the transaction that acts, against the caller's `Principal`:

- A caller sees the global roles and its own enterprise's; another enterprise's roles
  only with USERS_MANAGE_ROLES_OTHER_ENTERPRISES (otherwise they are NotFound, as if
  they did not exist).
- Changing (creating, modifying, deleting) a role needs USERS_MANAGE_ROLES, plus
  USERS_MANAGE_ROLES_OTHER_ENTERPRISES for another enterprise's role and
  USERS_MANAGE_SYSTEM_ROLES for a global one (NotPermitted otherwise).
- Nobody grants a privilege it does not hold itself (NotPermitted): a role manager
  could otherwise make a role above its own and give it to itself.
- A blocked role (CLOUD_ADMIN) is never changed nor deleted, and a role that users hold
  is not deleted (Conflict).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import Page, PageRequest, fetch_page
from abiquo_central.db.rows import inserted_id, taken
from abiquo_central.events import Action, Component, record_action
from abiquo_central.tenants import privileges as p
from abiquo_central.tenants.authentication import Principal, role_privileges
from abiquo_runtime.errors import Conflict, InvalidInput, NotFound, NotPermitted

ROLE_NOT_FOUND = "ROLE-0"
DUPLICATED_NAME = "ROLE-1"
ROLE_BLOCKED = "ROLE-2"
ROLE_IN_USE = "ROLE-3"
INVALID_ROLE = "ROLE-4"
HELD_ELSEWHERE = "ROLE-5"

NAME_MAX = 64

_role = tables.role
_rp = tables.role_privilege
_user = tables.user

SORTABLE: Mapping[str, ColumnElement[Any]] = MappingProxyType(
    {"id": _role.c.id, "name": _role.c.name}
)
DEFAULT_SORT = "name"


@dataclass(frozen=True, slots=True)
class Role:
    id: int
    name: str
    # None for a global role, which every enterprise's users may hold.
    enterprise_id: int | None
    blocked: bool


@dataclass(frozen=True, slots=True)
class RoleSpec:
    """What a caller sets on a role, creating or replacing it."""

    name: str
    enterprise_id: int | None = None
    privileges: frozenset[str] = frozenset()


def _role_of(row: Row[Any]) -> Role:
    return Role(
        id=row.id, name=row.name, enterprise_id=row.enterprise_id, blocked=bool(row.blocked)
    )


def _not_found() -> NotFound:
    return NotFound("The requested role does not exist", code=ROLE_NOT_FOUND)


def _duplicated(name: str) -> Conflict:
    return Conflict(f"There is already a role named {name}", code=DUPLICATED_NAME)


def may_see(caller: Principal, enterprise_id: int | None) -> bool:
    """Whether the caller may see a role of this enterprise (None: a global role)."""
    return (
        enterprise_id is None
        or enterprise_id == caller.enterprise_id
        or caller.holds(p.USERS_MANAGE_ROLES_OTHER_ENTERPRISES)
    )


def _visible(caller: Principal) -> ColumnElement[bool] | None:
    if caller.holds(p.USERS_MANAGE_ROLES_OTHER_ENTERPRISES):
        return None
    return or_(_role.c.enterprise_id.is_(None), _role.c.enterprise_id == caller.enterprise_id)


def _authorise(caller: Principal, enterprise_id: int | None) -> None:
    """NotPermitted unless the caller may change a role of this enterprise (or global)."""
    needed = [p.USERS_MANAGE_ROLES]
    if enterprise_id is None:
        needed.append(p.USERS_MANAGE_SYSTEM_ROLES)
    elif enterprise_id != caller.enterprise_id:
        needed.append(p.USERS_MANAGE_ROLES_OTHER_ENTERPRISES)
    missing = [n for n in needed if not caller.holds(n)]
    if missing:
        kind = "a global role" if enterprise_id is None else "this role"
        raise NotPermitted(f"Changing {kind} needs the privilege {', '.join(missing)}")


def _may_grant(caller: Principal, granted: frozenset[str]) -> None:
    beyond = sorted(granted - caller.privileges)
    if beyond:
        raise NotPermitted(f"Cannot grant privileges one does not hold: {', '.join(beyond)}")


def validate(spec: RoleSpec) -> RoleSpec:
    """`spec` with its name trimmed; InvalidInput saying what is wrong otherwise."""
    name = spec.name.strip()
    if not name:
        raise InvalidInput("a role needs a name", code=INVALID_ROLE)
    if len(name) > NAME_MAX:
        raise InvalidInput(f"a role's name has at most {NAME_MAX} characters", code=INVALID_ROLE)
    return RoleSpec(
        name=name, enterprise_id=spec.enterprise_id, privileges=p.known(spec.privileges)
    )


async def list_roles(
    engine: AsyncEngine, caller: Principal, *, page: PageRequest, enterprise_id: int | None = None
) -> Page[Role]:
    """A page of the roles the caller sees (`has` filters on the name); with
    `enterprise_id`, only the global ones and that enterprise's."""
    query = select(_role)
    visible = _visible(caller)
    if visible is not None:
        query = query.where(visible)
    if enterprise_id is not None:
        query = query.where(
            or_(_role.c.enterprise_id.is_(None), _role.c.enterprise_id == enterprise_id)
        )
    async with engine.connect() as conn:
        rows, total = await fetch_page(
            conn,
            query,
            page,
            sortable=SORTABLE,
            default_sort=DEFAULT_SORT,
            tiebreaker=_role.c.id,
            name=_role.c.name,
        )
    return Page(items=[_role_of(r) for r in rows], total=total)


async def find_role(conn: AsyncConnection, role_id: int, caller: Principal) -> Role:
    """The role, if the caller may see it; NotFound otherwise."""
    row = (await conn.execute(select(_role).where(_role.c.id == role_id))).one_or_none()
    if row is None or not may_see(caller, row.enterprise_id):
        raise _not_found()
    return _role_of(row)


async def get_role(engine: AsyncEngine, role_id: int, caller: Principal) -> Role:
    async with engine.connect() as conn:
        return await find_role(conn, role_id, caller)


async def get_role_privileges(engine: AsyncEngine, role_id: int, caller: Principal) -> list[str]:
    """The privileges of a role the caller sees, in Abiquo's order."""
    async with engine.connect() as conn:
        await find_role(conn, role_id, caller)
        held = await role_privileges(conn, role_id)
    return [name for name in p.ALL if name in held]


async def _enterprise_exists(conn: AsyncConnection, enterprise_id: int) -> None:
    ent = tables.enterprise
    found = (await conn.execute(select(ent.c.id).where(ent.c.id == enterprise_id))).first()
    if found is None:
        raise InvalidInput(f"there is no enterprise {enterprise_id}", code=INVALID_ROLE)


async def _name_taken(conn: AsyncConnection, name: str, but: int | None = None) -> bool:
    return await taken(conn, _role, _role.c.name == name, but=but)


async def _record(
    conn: AsyncConnection, caller: Principal, action: Action, role_id: int, message: str
) -> None:
    await record_action(
        conn,
        caller.as_actor(),
        component=Component.USER,
        action=action,
        target=f"/admin/roles/{role_id}",
        message=message,
    )


async def create_role(engine: AsyncEngine, spec: RoleSpec, caller: Principal) -> Role:
    """A new role with the spec's privileges."""
    spec = validate(spec)
    _authorise(caller, spec.enterprise_id)
    _may_grant(caller, spec.privileges)
    try:
        async with engine.begin() as conn:
            if spec.enterprise_id is not None:
                await _enterprise_exists(conn, spec.enterprise_id)
            if await _name_taken(conn, spec.name):
                raise _duplicated(spec.name)
            role_id = inserted_id(
                await conn.execute(
                    _role.insert().values(
                        name=spec.name, enterprise_id=spec.enterprise_id, blocked=False
                    )
                )
            )
            if spec.privileges:
                await conn.execute(
                    _rp.insert(), [{"role_id": role_id, "privilege": n} for n in spec.privileges]
                )
            await _record(conn, caller, Action.ROLE_CREATED, role_id, f"Role {spec.name} created")
    except IntegrityError:
        # Another request took the name between the check and the insert.
        raise _duplicated(spec.name) from None
    return Role(id=role_id, name=spec.name, enterprise_id=spec.enterprise_id, blocked=False)


async def _held_elsewhere(conn: AsyncConnection, role_id: int, enterprise_id: int) -> int:
    return int(
        (
            await conn.execute(
                select(func.count())
                .select_from(_user)
                .where(and_(_user.c.role_id == role_id, _user.c.enterprise_id != enterprise_id))
            )
        ).scalar_one()
    )


async def update_role(engine: AsyncEngine, role_id: int, spec: RoleSpec, caller: Principal) -> Role:
    """Replace the role's name, enterprise and privileges with `spec`'s."""
    spec = validate(spec)
    try:
        async with engine.begin() as conn:
            found = await find_role(conn, role_id, caller)
            _authorise(caller, found.enterprise_id)
            if spec.enterprise_id != found.enterprise_id:
                _authorise(caller, spec.enterprise_id)
            if found.blocked:
                raise Conflict(f"Role {found.name} is blocked: it cannot change", code=ROLE_BLOCKED)
            current = await role_privileges(conn, role_id)
            _may_grant(caller, spec.privileges - current)
            if spec.enterprise_id is not None and spec.enterprise_id != found.enterprise_id:
                await _enterprise_exists(conn, spec.enterprise_id)
                # A role of one enterprise is for its users only.
                others = await _held_elsewhere(conn, role_id, spec.enterprise_id)
                if others:
                    raise Conflict(
                        f"{others} user(s) of other enterprises hold role {found.name}",
                        code=HELD_ELSEWHERE,
                    )
            if await _name_taken(conn, spec.name, but=role_id):
                raise _duplicated(spec.name)
            await conn.execute(
                _role.update()
                .where(_role.c.id == role_id)
                .values(name=spec.name, enterprise_id=spec.enterprise_id)
            )
            await conn.execute(_rp.delete().where(_rp.c.role_id == role_id))
            if spec.privileges:
                await conn.execute(
                    _rp.insert(), [{"role_id": role_id, "privilege": n} for n in spec.privileges]
                )
            await _record(conn, caller, Action.ROLE_MODIFIED, role_id, f"Role {spec.name} modified")
    except IntegrityError:
        raise _duplicated(spec.name) from None
    return Role(id=role_id, name=spec.name, enterprise_id=spec.enterprise_id, blocked=False)


async def delete_role(engine: AsyncEngine, role_id: int, caller: Principal) -> None:
    """Remove a role no user holds."""
    try:
        async with engine.begin() as conn:
            found = await find_role(conn, role_id, caller)
            _authorise(caller, found.enterprise_id)
            if found.blocked:
                raise Conflict(
                    f"Role {found.name} is blocked: it cannot be deleted", code=ROLE_BLOCKED
                )
            holders = (
                await conn.execute(
                    select(func.count()).select_from(_user).where(_user.c.role_id == role_id)
                )
            ).scalar_one()
            if holders:
                raise Conflict(f"Role {found.name} is held by {holders} user(s)", code=ROLE_IN_USE)
            # role_privilege cascades in the schema, but SQLite only honours that with
            # foreign keys switched on: delete explicitly to behave the same everywhere.
            await conn.execute(_rp.delete().where(_rp.c.role_id == role_id))
            await conn.execute(_role.delete().where(_role.c.id == role_id))
            await _record(conn, caller, Action.ROLE_DELETED, role_id, f"Role {found.name} deleted")
    except IntegrityError:
        # A user was given the role between the check and the delete.
        raise Conflict("The role is held by users", code=ROLE_IN_USE) from None
