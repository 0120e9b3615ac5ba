"""Reserved machines: machines kept for one enterprise's VMs alone.

A machine is reserved for at most one enterprise at a time: reserving one that another
enterprise holds is a conflict (release it first), reserving it again for the same one
changes nothing. `visible_to` is the only enterprise a caller may see (None: all); any
other enterprise is as absent as one that does not exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import Page, PageRequest
from abiquo_central.events import Action, Actor, Component, record_action
from abiquo_central.infrastructure.machines import (
    Machine,
    load_machines,
    page_of_machines,
)
from abiquo_central.infrastructure.racks import MACHINE_NOT_FOUND
from abiquo_central.tenants.enterprises import ENTERPRISE_NOT_FOUND
from abiquo_runtime.errors import Conflict, NotFound

RESERVED_BY_ANOTHER = "MACHINE-5"
NOT_RESERVED = "MACHINE-6"

_m = tables.machine
_ent = tables.enterprise


async def _enterprise_name(
    conn: AsyncConnection, enterprise_id: int, visible_to: int | None
) -> str:
    if visible_to is not None and enterprise_id != visible_to:
        raise NotFound("The requested enterprise does not exist", code=ENTERPRISE_NOT_FOUND)
    name = (
        await conn.execute(select(_ent.c.name).where(_ent.c.id == enterprise_id))
    ).scalar_one_or_none()
    if name is None:
        raise NotFound("The requested enterprise does not exist", code=ENTERPRISE_NOT_FOUND)
    return str(name)


async def list_reserved(
    engine: AsyncEngine,
    enterprise_id: int,
    *,
    page: PageRequest,
    now: datetime,
    liveness_timeout: float,
    visible_to: int | None = None,
) -> Page[Machine]:
    """A page of the machines reserved for the enterprise."""
    async with engine.connect() as conn:
        await _enterprise_name(conn, enterprise_id, visible_to)
        return await page_of_machines(
            conn,
            select(_m.c.id).where(_m.c.reserved_enterprise_id == enterprise_id),
            page,
            now=now,
            liveness_timeout=liveness_timeout,
        )


def _not_reserved() -> NotFound:
    return NotFound("The machine is not reserved for this enterprise", code=NOT_RESERVED)


async def get_reserved(
    engine: AsyncEngine,
    enterprise_id: int,
    machine_id: int,
    *,
    now: datetime,
    liveness_timeout: float,
    visible_to: int | None = None,
) -> Machine:
    async with engine.connect() as conn:
        await _enterprise_name(conn, enterprise_id, visible_to)
        found = await load_machines(conn, [machine_id], now=now, liveness_timeout=liveness_timeout)
    if not found or found[0].reserved_enterprise_id != enterprise_id:
        raise _not_reserved()
    return found[0]


async def _record(
    conn: AsyncConnection, actor: Actor, action: Action, row: Any, message: str
) -> None:
    dc_id, rack_id, machine_id = row.datacenter_id, row.rack_id, row.id
    await record_action(
        conn,
        actor,
        component=Component.MACHINE,
        action=action,
        target=f"/admin/datacenters/{dc_id}/racks/{rack_id}/machines/{machine_id}",
        message=message,
        datacenter_id=dc_id,
    )


async def reserve_machine(
    engine: AsyncEngine,
    enterprise_id: int,
    machine_id: int,
    *,
    actor: Actor,
    now: datetime,
    liveness_timeout: float,
    visible_to: int | None = None,
    where: tuple[int, int] | None = None,
) -> Machine:
    """Keep the machine for the enterprise; Conflict when another enterprise has it.

    `where` (datacenter and rack), when given, is where the machine must be: the caller
    named it by a path that said so.
    """
    async with engine.begin() as conn:
        name = await _enterprise_name(conn, enterprise_id, visible_to)
        row = (await conn.execute(select(_m).where(_m.c.id == machine_id))).one_or_none()
        if row is None or (where is not None and (row.datacenter_id, row.rack_id) != where):
            raise NotFound("The requested machine does not exist", code=MACHINE_NOT_FOUND)
        if row.reserved_enterprise_id not in (None, enterprise_id):
            raise Conflict(
                f"Machine {row.name} is reserved for another enterprise: release it first",
                code=RESERVED_BY_ANOTHER,
            )
        if row.reserved_enterprise_id is None:
            # Compare-and-set: of two enterprises reserving it at once, one wins.
            done = await conn.execute(
                _m.update()
                .where(_m.c.id == machine_id, _m.c.reserved_enterprise_id.is_(None))
                .values(reserved_enterprise_id=enterprise_id)
            )
            if done.rowcount != 1:
                raise Conflict(
                    f"Machine {row.name} is reserved for another enterprise: release it first",
                    code=RESERVED_BY_ANOTHER,
                )
            await _record(
                conn,
                actor,
                Action.MACHINE_RESERVED,
                row,
                f"Machine {row.name} reserved for enterprise {name}",
            )
        return (
            await load_machines(conn, [machine_id], now=now, liveness_timeout=liveness_timeout)
        )[0]


async def release_machine(
    engine: AsyncEngine,
    enterprise_id: int,
    machine_id: int,
    *,
    actor: Actor,
    visible_to: int | None = None,
) -> None:
    """The machine is anyone's again; NotFound when it is not reserved for the enterprise."""
    async with engine.begin() as conn:
        name = await _enterprise_name(conn, enterprise_id, visible_to)
        row = (
            await conn.execute(
                select(_m).where(
                    _m.c.id == machine_id, _m.c.reserved_enterprise_id == enterprise_id
                )
            )
        ).one_or_none()
        if row is None:
            raise _not_reserved()
        await conn.execute(
            _m.update()
            .where(_m.c.id == machine_id, _m.c.reserved_enterprise_id == enterprise_id)
            .values(reserved_enterprise_id=None)
        )
        await _record(
            conn,
            actor,
            Action.MACHINE_RELEASED,
            row,
            f"Machine {row.name} released by enterprise {name}",
        )
