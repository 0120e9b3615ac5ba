"""Enterprises (tenants): their allocation limits, and creating, changing and removing them.

Who may do what is the caller's business (the API decides); this module takes `visible_to`
(the only enterprise a caller may see, None for all) and the acting user, and keeps the
data consistent: unique names, soft limits within hard ones, no enterprise removed while
anything still belongs to it. Every change records its event in its own transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, Row, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import Page, PageRequest, fetch_page
from abiquo_central.db.rows import inserted_id, taken
from abiquo_central.events import Action, Actor, Component, record_action
from abiquo_runtime.errors import Conflict, InvalidInput, NotFound

ENTERPRISE_NOT_FOUND = "EN-0"
DUPLICATED_NAME = "EN-1"
INVALID_LIMITS = "EN-2"
ENTERPRISE_IN_USE = "EN-3"
OWN_ENTERPRISE = "EN-4"

_ent = tables.enterprise

# The column's length: longer names are refused rather than cut (MariaDB in strict mode
# would refuse them anyway, with a less helpful message).
NAME_MAX = 128

# The resources an enterprise is limited in, by the prefix of their columns.
RESOURCES: tuple[str, ...] = ("cpu", "ram", "hd", "storage", "repository", "vlans", "public_ips")

# The largest value each limit's column holds.
_INT_MAX = 2**31 - 1
_BIGINT_MAX = 2**63 - 1
LIMIT_MAX: Mapping[str, int] = MappingProxyType(
    {r: _BIGINT_MAX if r in ("hd", "storage", "repository") else _INT_MAX for r in RESOURCES}
)

SORTABLE: Mapping[str, ColumnElement[Any]] = MappingProxyType(
    {"id": _ent.c.id, "name": _ent.c.name}
)
DEFAULT_SORT = "name"


@dataclass(frozen=True, slots=True)
class Limits:
    """Soft and hard limits per resource; 0 is unlimited. Crossing a soft limit warns,
    a hard one refuses."""

    cpu_soft: int = 0
    cpu_hard: int = 0
    ram_soft: int = 0
    ram_hard: int = 0
    hd_soft: int = 0
    hd_hard: int = 0
    storage_soft: int = 0
    storage_hard: int = 0
    repository_soft: int = 0
    repository_hard: int = 0
    vlans_soft: int = 0
    vlans_hard: int = 0
    public_ips_soft: int = 0
    public_ips_hard: int = 0

    def values(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class EnterpriseSpec:
    """What a caller sets on an enterprise, creating or replacing it."""

    name: str
    is_reservation_restricted: bool = False
    limits: Limits = Limits()


@dataclass(frozen=True, slots=True)
class Enterprise:
    id: int
    name: str
    is_reservation_restricted: bool
    limits: Limits


def validate(spec: EnterpriseSpec) -> EnterpriseSpec:
    """`spec` with its name trimmed; InvalidInput saying what is wrong otherwise."""
    name = spec.name.strip()
    if not name:
        raise InvalidInput("an enterprise needs a name")
    if len(name) > NAME_MAX:
        raise InvalidInput(f"an enterprise's name has at most {NAME_MAX} characters")
    return EnterpriseSpec(
        name=name,
        is_reservation_restricted=spec.is_reservation_restricted,
        limits=validate_limits(spec.limits),
    )


def validate_limits(limits: Limits) -> Limits:
    """`limits` when every value fits its column and no soft limit is above its hard one;
    InvalidInput (INVALID_LIMITS) listing every problem otherwise. Shared by the
    enterprise's own limits and its limits per datacenter, which follow the same rules."""
    problems: list[str] = []
    for resource in RESOURCES:
        soft = getattr(limits, f"{resource}_soft")
        hard = getattr(limits, f"{resource}_hard")
        top = LIMIT_MAX[resource]
        if not (0 <= soft <= top and 0 <= hard <= top):
            problems.append(f"{resource} limits must be between 0 and {top}")
        elif hard != 0 and soft > hard:
            # A hard limit of 0 is no limit at all, so any soft limit fits under it.
            problems.append(f"{resource} soft limit {soft} is above its hard limit {hard}")
    if problems:
        raise InvalidInput("; ".join(problems), code=INVALID_LIMITS)
    return limits


def _enterprise(row: Row[Any]) -> Enterprise:
    return Enterprise(
        id=row.id,
        name=row.name,
        is_reservation_restricted=bool(row.is_reservation_restricted),
        limits=Limits(**{f.name: int(getattr(row, f.name)) for f in fields(Limits)}),
    )


def _not_found() -> NotFound:
    return NotFound("The requested enterprise does not exist", code=ENTERPRISE_NOT_FOUND)


def _duplicated(name: str) -> Conflict:
    return Conflict(f"There is already an enterprise named {name}", code=DUPLICATED_NAME)


async def list_enterprises(
    engine: AsyncEngine, *, page: PageRequest, visible_to: int | None = None
) -> Page[Enterprise]:
    """A page of enterprises (`has` filters on the name); only `visible_to` unless None."""
    query = select(_ent)
    if visible_to is not None:
        query = query.where(_ent.c.id == visible_to)
    async with engine.connect() as conn:
        rows, total = await fetch_page(
            conn,
            query,
            page,
            sortable=SORTABLE,
            default_sort=DEFAULT_SORT,
            tiebreaker=_ent.c.id,
            name=_ent.c.name,
        )
    return Page(items=[_enterprise(r) for r in rows], total=total)


async def _get(conn: AsyncConnection, enterprise_id: int, visible_to: int | None) -> Enterprise:
    # An enterprise the caller may not see is as absent as one that does not exist, so
    # that probing ids tells nobody which tenants there are.
    if visible_to is not None and enterprise_id != visible_to:
        raise _not_found()
    row = (await conn.execute(select(_ent).where(_ent.c.id == enterprise_id))).one_or_none()
    if row is None:
        raise _not_found()
    return _enterprise(row)


async def get_enterprise(
    engine: AsyncEngine, enterprise_id: int, *, visible_to: int | None = None
) -> Enterprise:
    """One enterprise; NotFound also when it is not `visible_to` (unless that is None)."""
    async with engine.connect() as conn:
        return await _get(conn, enterprise_id, visible_to)


async def _name_taken(conn: AsyncConnection, name: str, but: int | None = None) -> bool:
    return await taken(conn, _ent, _ent.c.name == name, but=but)


async def _record(
    conn: AsyncConnection, actor: Actor, action: Action, enterprise_id: int, message: str
) -> None:
    await record_action(
        conn,
        actor,
        component=Component.ENTERPRISE,
        action=action,
        target=f"/admin/enterprises/{enterprise_id}",
        message=message,
    )


async def create_enterprise(
    engine: AsyncEngine, spec: EnterpriseSpec, *, actor: Actor, now: datetime | None = None
) -> Enterprise:
    """A new enterprise; Conflict when its name is taken."""
    spec = validate(spec)
    try:
        async with engine.begin() as conn:
            if await _name_taken(conn, spec.name):
                raise _duplicated(spec.name)
            enterprise_id = inserted_id(
                await conn.execute(
                    _ent.insert().values(
                        name=spec.name,
                        is_reservation_restricted=spec.is_reservation_restricted,
                        created_at=now if now is not None else datetime.now(UTC),
                        **spec.limits.values(),
                    )
                )
            )
            await _record(
                conn,
                actor,
                Action.ENTERPRISE_CREATE,
                enterprise_id,
                f"Enterprise {spec.name} created",
            )
    except IntegrityError:
        # Another request took the name between the check and the insert.
        raise _duplicated(spec.name) from None
    return Enterprise(
        id=enterprise_id,
        name=spec.name,
        is_reservation_restricted=spec.is_reservation_restricted,
        limits=spec.limits,
    )


async def update_enterprise(
    engine: AsyncEngine,
    enterprise_id: int,
    spec: EnterpriseSpec,
    *,
    actor: Actor,
    visible_to: int | None = None,
) -> Enterprise:
    """Replace the enterprise's name, reservation flag and limits with `spec`'s."""
    spec = validate(spec)
    try:
        async with engine.begin() as conn:
            await _get(conn, enterprise_id, visible_to)
            if await _name_taken(conn, spec.name, but=enterprise_id):
                raise _duplicated(spec.name)
            await conn.execute(
                _ent.update()
                .where(_ent.c.id == enterprise_id)
                .values(
                    name=spec.name,
                    is_reservation_restricted=spec.is_reservation_restricted,
                    **spec.limits.values(),
                )
            )
            await _record(
                conn,
                actor,
                Action.ENTERPRISE_MODIFY,
                enterprise_id,
                f"Enterprise {spec.name} modified",
            )
    except IntegrityError:
        raise _duplicated(spec.name) from None
    return Enterprise(
        id=enterprise_id,
        name=spec.name,
        is_reservation_restricted=spec.is_reservation_restricted,
        limits=spec.limits,
    )


async def delete_enterprise(
    engine: AsyncEngine, enterprise_id: int, *, actor: Actor, visible_to: int | None = None
) -> None:
    """Remove an enterprise, the roles of its own and its limits per datacenter; the
    machines reserved for it are released.

    Refused (Conflict) for the actor's own enterprise, which would leave the actor
    without one, and while users belong to it or hold one of its roles: removing them
    is a decision to make one by one, not a side effect.
    """
    role, user = tables.role, tables.user
    if enterprise_id == actor.enterprise_id:
        raise Conflict("An enterprise cannot delete itself", code=OWN_ENTERPRISE)
    try:
        async with engine.begin() as conn:
            found = await _get(conn, enterprise_id, visible_to)
            own_roles = select(role.c.id).where(role.c.enterprise_id == enterprise_id)
            users = (
                await conn.execute(
                    select(func.count())
                    .select_from(user)
                    .where(
                        or_(user.c.enterprise_id == enterprise_id, user.c.role_id.in_(own_roles))
                    )
                )
            ).scalar_one()
            if users:
                raise Conflict(
                    f"Enterprise {found.name} still has {users} user(s): delete them first",
                    code=ENTERPRISE_IN_USE,
                )
            # role_privilege cascades in the schema, but SQLite only honours that with
            # foreign keys switched on: delete explicitly to behave the same everywhere.
            await conn.execute(
                tables.role_privilege.delete().where(tables.role_privilege.c.role_id.in_(own_roles))
            )
            await conn.execute(role.delete().where(role.c.enterprise_id == enterprise_id))
            # Its limits go with it, and the machines kept for it are anyone's again.
            await conn.execute(
                tables.enterprise_limit.delete().where(
                    tables.enterprise_limit.c.enterprise_id == enterprise_id
                )
            )
            await conn.execute(
                tables.machine.update()
                .where(tables.machine.c.reserved_enterprise_id == enterprise_id)
                .values(reserved_enterprise_id=None)
            )
            await conn.execute(_ent.delete().where(_ent.c.id == enterprise_id))
            await _record(
                conn,
                actor,
                Action.ENTERPRISE_DELETE,
                enterprise_id,
                f"Enterprise {found.name} deleted",
            )
    except IntegrityError:
        # A user was added to it between the check and the delete.
        raise Conflict(
            "The enterprise is still in use: delete its users first", code=ENTERPRISE_IN_USE
        ) from None
