"""Virtual datacenters: an enterprise's share of one datacenter, of one hypervisor type.

A VDC is made only where its enterprise may go (it has limits in the datacenter) and of
a hypervisor type the datacenter has machines of; its default private network is made
with it, in the same transaction. It is removed only once it holds no appliance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, Row, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.allocation.limits import lock_enterprise
from abiquo_central.cloud.access import Scope, fetch_vdc_row, vdc_not_found
from abiquo_central.cloud.addressing import NetworkSpec, validate_network
from abiquo_central.cloud.networks import ATTEMPTS, NO_FREE_TAG, insert_network
from abiquo_central.db import tables
from abiquo_central.db.paging import Page, PageRequest, fetch_page
from abiquo_central.db.rows import inserted_id, taken
from abiquo_central.events import Action, Actor, Component, record_action
from abiquo_central.infrastructure.datacenters import DATACENTER_NOT_FOUND
from abiquo_central.tenants.enterprises import ENTERPRISE_NOT_FOUND, Limits, validate_limits
from abiquo_runtime.errors import Conflict, InvalidInput, NotFound

DUPLICATED_NAME = "VDC-1"
INVALID_VDC = "VDC-2"
HYPERVISOR_UNAVAILABLE = "VDC-3"
VDC_IN_USE = "VDC-4"
LOCATION_NOT_ALLOWED = "VDC-6"

NAME_MAX = 255

_vdc = tables.virtual_datacenter
_vlan = tables.vlan

SORTABLE: Mapping[str, ColumnElement[Any]] = MappingProxyType(
    {"id": _vdc.c.id, "name": _vdc.c.name}
)


@dataclass(frozen=True, slots=True)
class VdcLimits:
    """Soft and hard limits; 0 is unlimited. RAM in MB, hd and storage in bytes."""

    cpu_soft: int = 0
    cpu_hard: int = 0
    ram_soft: int = 0
    ram_hard: int = 0
    hd_soft: int = 0
    hd_hard: int = 0
    storage_soft: int = 0
    storage_hard: int = 0
    vlans_soft: int = 0
    vlans_hard: int = 0
    public_ips_soft: int = 0
    public_ips_hard: int = 0

    def values(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class VdcSpec:
    """What a caller sets on a VDC. Creating, every field counts; changing, the
    datacenter, enterprise, hypervisor and network are not changed."""

    name: str
    hypervisor_type: str
    datacenter_id: int
    enterprise_id: int
    network: NetworkSpec = field(default_factory=NetworkSpec)
    limits: VdcLimits = field(default_factory=VdcLimits)


@dataclass(frozen=True, slots=True)
class VirtualDatacenter:
    id: int
    name: str
    enterprise_id: int
    datacenter_id: int
    hypervisor_type: str
    limits: VdcLimits
    # The default network's id and settings (None only for a VDC whose network is gone).
    network_id: int | None
    network: NetworkSpec | None


def _validate_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > NAME_MAX:
        raise InvalidInput(
            f"a virtual datacenter needs a name of 1 to {NAME_MAX} characters", code=INVALID_VDC
        )
    return name


def _validate_limits(limits: VdcLimits) -> VdcLimits:
    # The same rules as an enterprise's (soft within hard, in range), repository aside.
    validate_limits(Limits(**limits.values()))
    return limits


def _select() -> Any:
    return select(
        _vdc,
        _vlan.c.id.label("network_id"),
        *(c.label(f"net_{c.name}") for c in _vlan.c if c.name not in ("id", "vdc_id")),
    ).outerjoin(_vlan, (_vlan.c.vdc_id == _vdc.c.id) & _vlan.c.is_default)


def _vdc_of(row: Row[Any]) -> VirtualDatacenter:
    network = None
    if row.network_id is not None:
        network = NetworkSpec(
            name=row.net_name,
            address=row.net_address,
            mask=row.net_mask,
            gateway=row.net_gateway,
            primary_dns=row.net_primary_dns,
            secondary_dns=row.net_secondary_dns,
            sufix_dns=row.net_sufix_dns,
            type=row.net_type,
        )
    return VirtualDatacenter(
        id=row.id,
        name=row.name,
        enterprise_id=row.enterprise_id,
        datacenter_id=row.datacenter_id,
        hypervisor_type=row.hypervisor_type,
        limits=VdcLimits(**{f.name: int(getattr(row, f.name)) for f in fields(VdcLimits)}),
        network_id=row.network_id,
        network=network,
    )


def _duplicated(name: str) -> Conflict:
    return Conflict(
        f"The enterprise already has a virtual datacenter named {name}", code=DUPLICATED_NAME
    )


async def list_vdcs(
    engine: AsyncEngine,
    scope: Scope,
    *,
    page: PageRequest,
    datacenter_id: int | None = None,
    enterprise_id: int | None = None,
) -> Page[VirtualDatacenter]:
    """A page of the VDCs in `scope` (`has` filters on the name), optionally only those
    in one datacenter or of one enterprise."""
    query = _select().where(scope.condition())
    if datacenter_id is not None:
        query = query.where(_vdc.c.datacenter_id == datacenter_id)
    if enterprise_id is not None:
        query = query.where(_vdc.c.enterprise_id == enterprise_id)
    async with engine.connect() as conn:
        rows, total = await fetch_page(
            conn,
            query,
            page,
            sortable=SORTABLE,
            default_sort="id",
            tiebreaker=_vdc.c.id,
            name=_vdc.c.name,
        )
    return Page(items=[_vdc_of(r) for r in rows], total=total)


async def _get(conn: AsyncConnection, vdc_id: int, scope: Scope) -> VirtualDatacenter:
    await fetch_vdc_row(conn, vdc_id, scope)
    row = (await conn.execute(_select().where(_vdc.c.id == vdc_id))).first()
    if row is None:
        raise vdc_not_found()
    return _vdc_of(row)


async def get_vdc(engine: AsyncEngine, vdc_id: int, scope: Scope) -> VirtualDatacenter:
    async with engine.connect() as conn:
        return await _get(conn, vdc_id, scope)


async def _check_placement(
    conn: AsyncConnection, spec: VdcSpec, *, reveal_datacenters: bool
) -> None:
    """NotFound for a missing enterprise or datacenter; Conflict when the enterprise may
    not use the datacenter (no limits there: 404 instead unless `reveal_datacenters`, so
    that a tenant learns nothing of datacenters it may not use) or has no machine of the
    hypervisor type."""
    ent = tables.enterprise
    if (await conn.execute(select(ent.c.id).where(ent.c.id == spec.enterprise_id))).first() is None:
        raise NotFound("The requested enterprise does not exist", code=ENTERPRISE_NOT_FOUND)
    dc = tables.datacenter
    missing_dc = NotFound("The requested location does not exist", code=DATACENTER_NOT_FOUND)
    if (await conn.execute(select(dc.c.id).where(dc.c.id == spec.datacenter_id))).first() is None:
        raise missing_dc
    lim = tables.enterprise_limit
    allowed = (
        await conn.execute(
            select(lim.c.id).where(
                lim.c.enterprise_id == spec.enterprise_id,
                lim.c.datacenter_id == spec.datacenter_id,
            )
        )
    ).first()
    if allowed is None:
        if not reveal_datacenters:
            raise missing_dc
        raise Conflict(
            "The enterprise may not use this datacenter: it has no limits there",
            code=LOCATION_NOT_ALLOWED,
        )
    machine = tables.machine
    present = (
        await conn.execute(
            select(machine.c.id)
            .where(
                machine.c.datacenter_id == spec.datacenter_id,
                machine.c.type == spec.hypervisor_type,
            )
            .limit(1)
        )
    ).first()
    if present is None:
        raise Conflict(
            f"The datacenter has no machine of hypervisor type {spec.hypervisor_type[:32]}",
            code=HYPERVISOR_UNAVAILABLE,
        )


async def _record(
    conn: AsyncConnection, actor: Actor, action: Action, vdc_id: int, dc_id: int, message: str
) -> None:
    await record_action(
        conn,
        actor,
        component=Component.VIRTUAL_DATACENTER,
        action=action,
        target=f"/cloud/virtualdatacenters/{vdc_id}",
        message=message,
        datacenter_id=dc_id,
    )


async def create_vdc(
    engine: AsyncEngine,
    spec: VdcSpec,
    *,
    actor: Actor,
    reveal_datacenters: bool,
    now: datetime | None = None,
) -> VirtualDatacenter:
    """A new VDC with its default network. A concurrent creation that takes the network's
    tag (or a MAC) first makes this one start over with the next free tag."""
    name = _validate_name(spec.name)
    network = validate_network(spec.network)
    limits = _validate_limits(spec.limits)
    for attempt in range(ATTEMPTS):
        try:
            async with engine.begin() as conn:
                # Locked first: inserting the VDC takes a shared lock on the enterprise's
                # row (its foreign key), which two creations could not both then raise
                # to the lock the VLAN limits' check takes (a deadlock on InnoDB).
                await lock_enterprise(conn, spec.enterprise_id)
                await _check_placement(conn, spec, reveal_datacenters=reveal_datacenters)
                if await taken(
                    conn, _vdc, _vdc.c.enterprise_id == spec.enterprise_id, _vdc.c.name == name
                ):
                    raise _duplicated(name)
                vdc_id = inserted_id(
                    await conn.execute(
                        _vdc.insert().values(
                            enterprise_id=spec.enterprise_id,
                            datacenter_id=spec.datacenter_id,
                            name=name,
                            hypervisor_type=spec.hypervisor_type,
                            created_at=now if now is not None else datetime.now(UTC),
                            **limits.values(),
                        )
                    )
                )
                net = await insert_network(
                    conn,
                    vdc_id=vdc_id,
                    datacenter_id=spec.datacenter_id,
                    hypervisor_type=spec.hypervisor_type,
                    spec=network,
                    is_default=True,
                    actor=actor,
                )
                await _record(
                    conn,
                    actor,
                    Action.VDC_CREATE,
                    vdc_id,
                    spec.datacenter_id,
                    f"Virtual datacenter {name} created with network {network.name} "
                    f"(VLAN {net.tag})",
                )
                return VirtualDatacenter(
                    id=vdc_id,
                    name=name,
                    enterprise_id=spec.enterprise_id,
                    datacenter_id=spec.datacenter_id,
                    hypervisor_type=spec.hypervisor_type,
                    limits=limits,
                    network_id=net.id,
                    network=network,
                )
        except IntegrityError:
            async with engine.connect() as conn:
                if await taken(
                    conn, _vdc, _vdc.c.enterprise_id == spec.enterprise_id, _vdc.c.name == name
                ):
                    raise _duplicated(name) from None
            if attempt == ATTEMPTS - 1:
                raise Conflict(
                    "Concurrent creations kept taking the network's tag: try again",
                    code=NO_FREE_TAG,
                ) from None
    raise AssertionError("unreachable")


async def update_vdc(
    engine: AsyncEngine, vdc_id: int, name: str, limits: VdcLimits, scope: Scope, *, actor: Actor
) -> VirtualDatacenter:
    """Rename the VDC and replace its limits (its place, type and networks stay)."""
    name = _validate_name(name)
    limits = _validate_limits(limits)
    try:
        async with engine.begin() as conn:
            row = await fetch_vdc_row(conn, vdc_id, scope)
            if await taken(
                conn,
                _vdc,
                _vdc.c.enterprise_id == row.enterprise_id,
                _vdc.c.name == name,
                but=vdc_id,
            ):
                raise _duplicated(name)
            await conn.execute(
                _vdc.update().where(_vdc.c.id == vdc_id).values(name=name, **limits.values())
            )
            await _record(
                conn,
                actor,
                Action.VDC_MODIFY,
                vdc_id,
                row.datacenter_id,
                f"Virtual datacenter {name} modified",
            )
            return await _get(conn, vdc_id, scope)
    except IntegrityError:
        raise _duplicated(name) from None


async def delete_vdc(engine: AsyncEngine, vdc_id: int, scope: Scope, *, actor: Actor) -> None:
    """Remove the VDC with its networks and their addresses; refused while it holds
    virtual appliances."""
    vapp = tables.virtual_appliance
    try:
        async with engine.begin() as conn:
            row = await fetch_vdc_row(conn, vdc_id, scope)
            held = (
                await conn.execute(
                    select(func.count()).select_from(vapp).where(vapp.c.vdc_id == vdc_id)
                )
            ).scalar_one()
            if held:
                raise Conflict(
                    f"The virtual datacenter still holds {held} virtual appliance(s)",
                    code=VDC_IN_USE,
                )
            networks = select(_vlan.c.id).where(_vlan.c.vdc_id == vdc_id)
            await conn.execute(tables.ip.delete().where(tables.ip.c.vlan_id.in_(networks)))
            await conn.execute(_vlan.delete().where(_vlan.c.vdc_id == vdc_id))
            await conn.execute(_vdc.delete().where(_vdc.c.id == vdc_id))
            await _record(
                conn,
                actor,
                Action.VDC_DELETE,
                vdc_id,
                row.datacenter_id,
                f"Virtual datacenter {row.name} deleted",
            )
    except IntegrityError:
        # An appliance was made in it between the check and the delete.
        raise Conflict("The virtual datacenter is in use", code=VDC_IN_USE) from None
