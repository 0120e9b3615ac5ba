"""An enterprise's limits in each datacenter, and the datacenters it may therefore use.

An enterprise's own limits bound what it consumes across every datacenter; a row here
bounds it in one of them, with the same rules (0 unlimited, soft within hard). Having a
row is also what lets the enterprise use that datacenter at all: its "locations" are the
datacenters it has limits in.

Who may do what is the caller's business (the API decides); functions take `visible_to`
(the only enterprise a caller may see, None for all) and the acting user. Every change
records its event in its own transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import Page, PageRequest, fetch_page
from abiquo_central.db.rows import inserted_id
from abiquo_central.events import Action, Actor, Component, record_action
from abiquo_central.infrastructure.datacenters import DATACENTER_NOT_FOUND
from abiquo_central.tenants.enterprises import Limits, get_enterprise, validate_limits
from abiquo_runtime.errors import Conflict, InvalidInput, NotFound

LIMIT_NOT_FOUND = "LIMIT-2"
DUPLICATED_LIMIT = "LIMIT-3"
# The body of a new limit names no datacenter, or names it with a malformed link.
LOCATION_REQUIRED = "LIMIT-4"
LOCATION_IMMUTABLE = "LIMIT-5"
LOCATION_NOT_FOUND = "LIMIT-6"

_lim = tables.enterprise_limit
_dc = tables.datacenter

SORTABLE: Mapping[str, ColumnElement[Any]] = MappingProxyType(
    {"id": _lim.c.id, "datacenter": _dc.c.name}
)
LOCATION_SORTABLE: Mapping[str, ColumnElement[Any]] = MappingProxyType(
    {"id": _dc.c.id, "name": _dc.c.name, "location": _dc.c.location}
)

_LIMIT_COLUMNS = tuple(f.name for f in fields(Limits))


@dataclass(frozen=True, slots=True)
class DatacenterLimits:
    id: int
    enterprise_id: int
    datacenter_id: int
    # For messages and titles.
    datacenter_name: str
    limits: Limits


@dataclass(frozen=True, slots=True)
class Location:
    """A datacenter as a tenant sees it: no uuid, no remote services."""

    id: int
    name: str
    location: str


def _select() -> Select[Any]:
    return select(_lim, _dc.c.name.label("datacenter_name")).join(
        _dc, _dc.c.id == _lim.c.datacenter_id
    )


def _limits(row: Row[Any]) -> DatacenterLimits:
    return DatacenterLimits(
        id=row.id,
        enterprise_id=row.enterprise_id,
        datacenter_id=row.datacenter_id,
        datacenter_name=row.datacenter_name,
        limits=Limits(**{name: int(getattr(row, name)) for name in _LIMIT_COLUMNS}),
    )


def _not_found() -> NotFound:
    return NotFound("The requested limits do not exist", code=LIMIT_NOT_FOUND)


def _duplicated(datacenter: str) -> Conflict:
    return Conflict(
        f"The enterprise already has limits in datacenter {datacenter}", code=DUPLICATED_LIMIT
    )


async def list_limits(
    engine: AsyncEngine,
    enterprise_id: int,
    *,
    page: PageRequest,
    datacenter_id: int | None = None,
    visible_to: int | None = None,
) -> Page[DatacenterLimits]:
    """A page of the enterprise's limits (`has` filters on the datacenter's name), only in
    `datacenter_id` when given; NotFound when the enterprise is not `visible_to`."""
    await get_enterprise(engine, enterprise_id, visible_to=visible_to)
    query = _select().where(_lim.c.enterprise_id == enterprise_id)
    if datacenter_id is not None:
        query = query.where(_lim.c.datacenter_id == datacenter_id)
    async with engine.connect() as conn:
        rows, total = await fetch_page(
            conn,
            query,
            page,
            sortable=SORTABLE,
            default_sort="id",
            tiebreaker=_lim.c.id,
            name=_dc.c.name,
        )
    return Page(items=[_limits(r) for r in rows], total=total)


async def _get(conn: AsyncConnection, enterprise_id: int, limit_id: int) -> DatacenterLimits:
    row = (
        await conn.execute(
            _select().where(_lim.c.id == limit_id, _lim.c.enterprise_id == enterprise_id)
        )
    ).one_or_none()
    if row is None:
        raise _not_found()
    return _limits(row)


async def get_limit(
    engine: AsyncEngine, enterprise_id: int, limit_id: int, *, visible_to: int | None = None
) -> DatacenterLimits:
    """One of the enterprise's limits; NotFound also when it is another enterprise's."""
    await get_enterprise(engine, enterprise_id, visible_to=visible_to)
    async with engine.connect() as conn:
        return await _get(conn, enterprise_id, limit_id)


async def _record(
    conn: AsyncConnection, actor: Actor, action: Action, found: DatacenterLimits, verb: str
) -> None:
    await record_action(
        conn,
        actor,
        component=Component.ENTERPRISE,
        action=action,
        target=f"/admin/enterprises/{found.enterprise_id}/limits/{found.id}",
        message=f"Limits of enterprise {found.enterprise_id} in datacenter "
        f"{found.datacenter_name} {verb}",
        datacenter_id=found.datacenter_id,
    )


async def create_limit(
    engine: AsyncEngine,
    enterprise_id: int,
    datacenter_id: int,
    limits: Limits,
    *,
    actor: Actor,
    visible_to: int | None = None,
) -> DatacenterLimits:
    """The enterprise's limits in a datacenter; NotFound when either does not exist,
    Conflict when it has limits there already."""
    limits = validate_limits(limits)
    await get_enterprise(engine, enterprise_id, visible_to=visible_to)
    dc_name = "?"
    try:
        async with engine.begin() as conn:
            dc_name = await _datacenter_name(conn, datacenter_id)
            taken = select(_lim.c.id).where(
                _lim.c.enterprise_id == enterprise_id, _lim.c.datacenter_id == datacenter_id
            )
            if (await conn.execute(taken)).first() is not None:
                raise _duplicated(dc_name)
            limit_id = inserted_id(
                await conn.execute(
                    _lim.insert().values(
                        enterprise_id=enterprise_id,
                        datacenter_id=datacenter_id,
                        **limits.values(),
                    )
                )
            )
            created = DatacenterLimits(
                id=limit_id,
                enterprise_id=enterprise_id,
                datacenter_id=datacenter_id,
                datacenter_name=dc_name,
                limits=limits,
            )
            await _record(conn, actor, Action.ENTERPRISE_LIMIT_CREATE, created, "created")
    except IntegrityError:
        # Another request made the same pair between the check and the insert, or the
        # enterprise or datacenter went away meanwhile.
        raise _duplicated(dc_name) from None
    return created


async def _datacenter_name(conn: AsyncConnection, datacenter_id: int) -> str:
    name = (
        await conn.execute(select(_dc.c.name).where(_dc.c.id == datacenter_id))
    ).scalar_one_or_none()
    if name is None:
        raise NotFound("The requested datacenter does not exist", code=DATACENTER_NOT_FOUND)
    return str(name)


async def update_limit(
    engine: AsyncEngine,
    enterprise_id: int,
    limit_id: int,
    limits: Limits,
    *,
    actor: Actor,
    datacenter_id: int | None = None,
    visible_to: int | None = None,
) -> DatacenterLimits:
    """Replace the values of one of the enterprise's limits. Its datacenter stays: a
    `datacenter_id` (what the body's location names, if it names one) must be it."""
    limits = validate_limits(limits)
    await get_enterprise(engine, enterprise_id, visible_to=visible_to)
    async with engine.begin() as conn:
        found = await _get(conn, enterprise_id, limit_id)
        if datacenter_id is not None and datacenter_id != found.datacenter_id:
            raise InvalidInput(
                "The datacenter of a limit cannot change: delete it and create another",
                code=LOCATION_IMMUTABLE,
            )
        await conn.execute(_lim.update().where(_lim.c.id == limit_id).values(**limits.values()))
        changed = DatacenterLimits(
            id=found.id,
            enterprise_id=found.enterprise_id,
            datacenter_id=found.datacenter_id,
            datacenter_name=found.datacenter_name,
            limits=limits,
        )
        await _record(conn, actor, Action.ENTERPRISE_LIMIT_MODIFY, changed, "modified")
    return changed


async def delete_limit(
    engine: AsyncEngine,
    enterprise_id: int,
    limit_id: int,
    *,
    actor: Actor,
    visible_to: int | None = None,
) -> None:
    """Remove one of the enterprise's limits: it no longer may use that datacenter."""
    await get_enterprise(engine, enterprise_id, visible_to=visible_to)
    async with engine.begin() as conn:
        found = await _get(conn, enterprise_id, limit_id)
        await conn.execute(_lim.delete().where(_lim.c.id == limit_id))
        await _record(conn, actor, Action.ENTERPRISE_LIMIT_DELETE, found, "deleted")


# -- locations ------------------------------------------------------------------------


def _locations(enterprise_id: int) -> Select[Any]:
    allowed = select(_lim.c.datacenter_id).where(_lim.c.enterprise_id == enterprise_id)
    return select(_dc.c.id, _dc.c.name, _dc.c.location).where(_dc.c.id.in_(allowed))


def _location(row: Row[Any]) -> Location:
    return Location(id=row.id, name=row.name, location=row.location)


async def list_locations(
    engine: AsyncEngine, enterprise_id: int, *, page: PageRequest
) -> Page[Location]:
    """A page of the datacenters the enterprise has limits in (`has` on the name)."""
    async with engine.connect() as conn:
        rows, total = await fetch_page(
            conn,
            _locations(enterprise_id),
            page,
            sortable=LOCATION_SORTABLE,
            default_sort="id",
            tiebreaker=_dc.c.id,
            name=_dc.c.name,
        )
    return Page(items=[_location(r) for r in rows], total=total)


async def get_location(engine: AsyncEngine, enterprise_id: int, datacenter_id: int) -> Location:
    """One datacenter the enterprise has limits in; NotFound for any other, so that a
    tenant learns nothing of the datacenters it may not use."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(_locations(enterprise_id).where(_dc.c.id == datacenter_id))
        ).one_or_none()
    if row is None:
        raise NotFound("The requested location does not exist", code=LOCATION_NOT_FOUND)
    return _location(row)
