"""Virtual appliances: groups of VMs in a VDC, whose state is derived from their VMs'.

An appliance is removed only while none of its VMs exists anywhere but here (all
NOT_ALLOCATED); its VMs go with it, giving their addresses back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, Row, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.cloud.access import Scope, fetch_vdc_row
from abiquo_central.cloud.states import VappState, VmState, vapp_state
from abiquo_central.db import tables
from abiquo_central.db.paging import Page, PageRequest, fetch_page
from abiquo_central.db.rows import inserted_id
from abiquo_central.events import Action, Actor, Component, record_action
from abiquo_runtime.errors import Conflict, InvalidInput, NotFound

VAPP_NOT_FOUND = "VAPP-0"
INVALID_VAPP = "VAPP-1"
VAPP_DEPLOYED = "VAPP-2"

NAME_MAX = 255
NODECONNECTIONS_MAX = 65_535

_va = tables.virtual_appliance
_vm = tables.virtual_machine

SORTABLE: Mapping[str, ColumnElement[Any]] = MappingProxyType({"id": _va.c.id, "name": _va.c.name})


@dataclass(frozen=True, slots=True)
class VappSpec:
    name: str
    high_disponibility: bool = False
    public_app: bool = False
    nodeconnections: str = ""


@dataclass(frozen=True, slots=True)
class VirtualAppliance:
    id: int
    vdc_id: int
    enterprise_id: int
    spec: VappSpec
    error: bool
    state: VappState


def validate(spec: VappSpec) -> VappSpec:
    name = spec.name.strip()
    if not name or len(name) > NAME_MAX:
        raise InvalidInput(
            f"a virtual appliance needs a name of 1 to {NAME_MAX} characters", code=INVALID_VAPP
        )
    if len(spec.nodeconnections) > NODECONNECTIONS_MAX:
        raise InvalidInput(
            f"nodeconnections has at most {NODECONNECTIONS_MAX} characters", code=INVALID_VAPP
        )
    return VappSpec(
        name=name,
        high_disponibility=spec.high_disponibility,
        public_app=spec.public_app,
        nodeconnections=spec.nodeconnections,
    )


def _vapp_of(row: Row[Any], states: Sequence[str]) -> VirtualAppliance:
    return VirtualAppliance(
        id=row.id,
        vdc_id=row.vdc_id,
        enterprise_id=row.enterprise_id,
        spec=VappSpec(
            name=row.name,
            high_disponibility=bool(row.high_disponibility),
            public_app=bool(row.public_app),
            nodeconnections=row.nodeconnections,
        ),
        error=bool(row.error),
        state=vapp_state(states),
    )


async def _states(conn: AsyncConnection, vapp_ids: Sequence[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = defaultdict(list)
    if vapp_ids:
        rows = await conn.execute(
            select(_vm.c.vapp_id, _vm.c.state).where(_vm.c.vapp_id.in_(list(vapp_ids)))
        )
        for vapp_id, state in rows:
            found[vapp_id].append(state)
    return found


def vapp_not_found() -> NotFound:
    return NotFound("The requested virtual appliance does not exist", code=VAPP_NOT_FOUND)


async def fetch_vapp_row(conn: AsyncConnection, vdc_id: int, vapp_id: int) -> Row[Any]:
    row = (
        await conn.execute(select(_va).where(_va.c.id == vapp_id, _va.c.vdc_id == vdc_id))
    ).one_or_none()
    if row is None:
        raise vapp_not_found()
    return row


async def list_vapps(
    engine: AsyncEngine, vdc_id: int, scope: Scope, *, page: PageRequest
) -> Page[VirtualAppliance]:
    async with engine.connect() as conn:
        await fetch_vdc_row(conn, vdc_id, scope)
        rows, total = await fetch_page(
            conn,
            select(_va).where(_va.c.vdc_id == vdc_id),
            page,
            sortable=SORTABLE,
            default_sort="id",
            tiebreaker=_va.c.id,
            name=_va.c.name,
        )
        states = await _states(conn, [r.id for r in rows])
    return Page(items=[_vapp_of(r, states.get(r.id, [])) for r in rows], total=total)


async def _get(conn: AsyncConnection, vdc_id: int, vapp_id: int) -> VirtualAppliance:
    row = await fetch_vapp_row(conn, vdc_id, vapp_id)
    states = await _states(conn, [vapp_id])
    return _vapp_of(row, states.get(vapp_id, []))


async def get_vapp(
    engine: AsyncEngine, vdc_id: int, vapp_id: int, scope: Scope
) -> VirtualAppliance:
    async with engine.connect() as conn:
        await fetch_vdc_row(conn, vdc_id, scope)
        return await _get(conn, vdc_id, vapp_id)


async def _record(
    conn: AsyncConnection,
    actor: Actor,
    action: Action,
    vdc_id: int,
    vapp_id: int,
    dc_id: int,
    message: str,
) -> None:
    await record_action(
        conn,
        actor,
        component=Component.VIRTUAL_APPLIANCE,
        action=action,
        target=f"/cloud/virtualdatacenters/{vdc_id}/virtualappliances/{vapp_id}",
        message=message,
        datacenter_id=dc_id,
    )


async def create_vapp(
    engine: AsyncEngine,
    vdc_id: int,
    spec: VappSpec,
    scope: Scope,
    *,
    actor: Actor,
    now: datetime | None = None,
) -> VirtualAppliance:
    spec = validate(spec)
    async with engine.begin() as conn:
        vdc = await fetch_vdc_row(conn, vdc_id, scope)
        vapp_id = inserted_id(
            await conn.execute(
                _va.insert().values(
                    vdc_id=vdc_id,
                    enterprise_id=vdc.enterprise_id,
                    name=spec.name,
                    high_disponibility=spec.high_disponibility,
                    public_app=spec.public_app,
                    nodeconnections=spec.nodeconnections,
                    error=False,
                    created_at=now if now is not None else datetime.now(UTC),
                )
            )
        )
        await _record(
            conn,
            actor,
            Action.VAPP_CREATE,
            vdc_id,
            vapp_id,
            vdc.datacenter_id,
            f"Virtual appliance {spec.name} created",
        )
    return VirtualAppliance(
        id=vapp_id,
        vdc_id=vdc_id,
        enterprise_id=vdc.enterprise_id,
        spec=spec,
        error=False,
        state=VappState.NOT_DEPLOYED,
    )


async def update_vapp(
    engine: AsyncEngine, vdc_id: int, vapp_id: int, spec: VappSpec, scope: Scope, *, actor: Actor
) -> VirtualAppliance:
    spec = validate(spec)
    async with engine.begin() as conn:
        vdc = await fetch_vdc_row(conn, vdc_id, scope)
        await fetch_vapp_row(conn, vdc_id, vapp_id)
        await conn.execute(
            _va.update()
            .where(_va.c.id == vapp_id)
            .values(
                name=spec.name,
                high_disponibility=spec.high_disponibility,
                public_app=spec.public_app,
                nodeconnections=spec.nodeconnections,
            )
        )
        await _record(
            conn,
            actor,
            Action.VAPP_MODIFY,
            vdc_id,
            vapp_id,
            vdc.datacenter_id,
            f"Virtual appliance {spec.name} modified",
        )
        return await _get(conn, vdc_id, vapp_id)


async def delete_vapp(
    engine: AsyncEngine, vdc_id: int, vapp_id: int, scope: Scope, *, actor: Actor
) -> None:
    """Remove the appliance and its VMs (their addresses become available); refused
    while any VM is anything but NOT_ALLOCATED."""
    async with engine.begin() as conn:
        vdc = await fetch_vdc_row(conn, vdc_id, scope)
        row = await fetch_vapp_row(conn, vdc_id, vapp_id)
        busy = (
            await conn.execute(
                select(_vm.c.id)
                .where(_vm.c.vapp_id == vapp_id, _vm.c.state != VmState.NOT_ALLOCATED)
                .limit(1)
            )
        ).first()
        if busy is not None:
            raise Conflict(
                "The virtual appliance has virtual machines that are deployed or being "
                "deployed: undeploy them first",
                code=VAPP_DEPLOYED,
            )
        vms = select(_vm.c.id).where(_vm.c.vapp_id == vapp_id)
        await conn.execute(
            tables.ip.update()
            .where(tables.ip.c.virtual_machine_id.in_(vms))
            .values(virtual_machine_id=None, nic_order=None)
        )
        # Only the VMs still NOT_ALLOCATED: one a concurrent deploy has just taken keeps
        # the appliance (its foreign key refuses the delete below).
        await conn.execute(
            _vm.delete().where(_vm.c.vapp_id == vapp_id, _vm.c.state == VmState.NOT_ALLOCATED)
        )
        remaining = (await conn.execute(select(_vm.c.id).where(_vm.c.vapp_id == vapp_id))).first()
        if remaining is not None:
            raise Conflict("The virtual appliance is being deployed", code=VAPP_DEPLOYED)
        await conn.execute(_va.delete().where(_va.c.id == vapp_id))
        await _record(
            conn,
            actor,
            Action.VAPP_DELETE,
            vdc_id,
            vapp_id,
            vdc.datacenter_id,
            f"Virtual appliance {row.name} deleted",
        )
