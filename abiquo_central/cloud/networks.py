"""A VDC's private networks (one VLAN each) and their addresses.

A network's tag is unique in its datacenter (the unique key decides between concurrent
creators: the loser retries with the next free tag), and its host addresses but the
gateway are made with it, each with a MAC unique everywhere. Exactly one network of a
VDC is its default: the one new VMs get their first NIC from.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.allocation.limits import check_vlan_limits
from abiquo_central.cloud.access import Scope, fetch_vdc_row
from abiquo_central.cloud.addressing import (
    INVALID_NETWORK,
    NetworkSpec,
    free_tag,
    host_addresses,
    mac_prefix,
    random_macs,
    validate_network,
)
from abiquo_central.db import tables
from abiquo_central.db.paging import Page, PageRequest, fetch_page
from abiquo_central.db.rows import inserted_id, taken
from abiquo_central.events import Action, Actor, Component, Severity, record_action
from abiquo_runtime.errors import Conflict, NotFound

NETWORK_NOT_FOUND = "VLAN-0"
DUPLICATED_NAME = "VLAN-1"
NO_FREE_TAG = "VLAN-4"
DEFAULT_NETWORK = "VLAN-5"
NETWORK_IN_USE = "VLAN-6"
IP_NOT_FOUND = "VLAN-7"
MACS_EXHAUSTED = "VLAN-8"

# How often a creation is retried when a concurrent one took its tag or a MAC.
ATTEMPTS = 12

_vlan = tables.vlan
_ip = tables.ip
_rack = tables.rack

SORTABLE: Mapping[str, ColumnElement[Any]] = MappingProxyType(
    {"id": _vlan.c.id, "name": _vlan.c.name, "tag": _vlan.c.tag}
)
IP_SORTABLE: Mapping[str, ColumnElement[Any]] = MappingProxyType(
    {"id": _ip.c.id, "ip": _ip.c.id, "mac": _ip.c.mac, "name": _ip.c.name}
)


@dataclass(frozen=True, slots=True)
class Network:
    id: int
    vdc_id: int
    tag: int
    is_default: bool
    spec: NetworkSpec


@dataclass(frozen=True, slots=True)
class Address:
    id: int
    vlan_id: int
    vdc_id: int
    ip: str
    mac: str
    name: str
    quarantine: bool
    virtual_machine_id: int | None
    nic_order: int | None

    @property
    def available(self) -> bool:
        return self.virtual_machine_id is None and not self.quarantine


def network_of(row: Row[Any]) -> Network:
    return Network(
        id=row.id,
        vdc_id=row.vdc_id,
        tag=row.tag,
        is_default=bool(row.is_default),
        spec=NetworkSpec(
            name=row.name,
            address=row.address,
            mask=row.mask,
            gateway=row.gateway,
            primary_dns=row.primary_dns,
            secondary_dns=row.secondary_dns,
            sufix_dns=row.sufix_dns,
            type=row.type,
        ),
    )


def address_of(row: Row[Any]) -> Address:
    return Address(
        id=row.id,
        vlan_id=row.vlan_id,
        vdc_id=row.vdc_id,
        ip=row.ip,
        mac=row.mac,
        name=row.name,
        quarantine=bool(row.quarantine),
        virtual_machine_id=row.virtual_machine_id,
        nic_order=row.nic_order,
    )


def _not_found() -> NotFound:
    return NotFound("The requested private network does not exist", code=NETWORK_NOT_FOUND)


def _duplicated(name: str) -> Conflict:
    return Conflict(
        f"The virtual datacenter already has a network named {name}", code=DUPLICATED_NAME
    )


async def _free_tag(conn: AsyncConnection, datacenter_id: int) -> int:
    racks = (
        await conn.execute(
            select(_rack.c.vlan_id_min, _rack.c.vlan_id_max, _rack.c.vlans_id_avoided).where(
                _rack.c.datacenter_id == datacenter_id
            )
        )
    ).all()
    used = set(
        (
            await conn.execute(select(_vlan.c.tag).where(_vlan.c.datacenter_id == datacenter_id))
        ).scalars()
    )
    tag = free_tag([(r[0], r[1], r[2]) for r in racks], used)
    if tag is None:
        raise Conflict(
            "The datacenter's racks have no VLAN tag left for another network", code=NO_FREE_TAG
        )
    return tag


async def _unused_macs(conn: AsyncConnection, prefix: str, count: int) -> list[str]:
    """`count` distinct MACs that no stored address has (a concurrent insert may still
    take one first: the unique key catches that, and the caller retries)."""
    rng = random.SystemRandom()
    macs = random_macs(prefix, count, rng)
    for _ in range(ATTEMPTS):
        clash: set[str] = set()
        for start in range(0, len(macs), 500):
            chunk = macs[start : start + 500]
            clash.update(
                (await conn.execute(select(_ip.c.mac).where(_ip.c.mac.in_(chunk)))).scalars()
            )
        if not clash:
            return macs
        kept = [m for m in macs if m not in clash]
        macs = kept + random_macs(prefix, len(macs) - len(kept), rng, avoid=[*macs, *clash])
    raise Conflict("Could not find unused MAC addresses: try again", code=MACS_EXHAUSTED)


async def insert_network(
    conn: AsyncConnection,
    *,
    vdc_id: int,
    datacenter_id: int,
    hypervisor_type: str,
    spec: NetworkSpec,
    is_default: bool,
    actor: Actor,
) -> Network:
    """The network and its addresses, in `conn`'s transaction, within the VLAN limits
    (LimitExceeded past a hard one; past a soft one, a warning is recorded). An
    IntegrityError means a concurrent creation took the tag or a MAC: retry the whole
    transaction."""
    crossed = await check_vlan_limits(conn, vdc_id)
    tag = await _free_tag(conn, datacenter_id)
    vlan_id = inserted_id(
        await conn.execute(
            _vlan.insert().values(
                vdc_id=vdc_id,
                datacenter_id=datacenter_id,
                name=spec.name,
                tag=tag,
                address=spec.address,
                mask=spec.mask,
                gateway=spec.gateway,
                primary_dns=spec.primary_dns,
                secondary_dns=spec.secondary_dns,
                sufix_dns=spec.sufix_dns,
                is_default=is_default,
                type=spec.type,
            )
        )
    )
    hosts = host_addresses(spec.address, spec.mask, spec.gateway)
    macs = await _unused_macs(conn, mac_prefix(hypervisor_type), len(hosts))
    await conn.execute(
        _ip.insert(),
        [
            {"vlan_id": vlan_id, "ip": host, "mac": mac, "name": "", "quarantine": False}
            for host, mac in zip(hosts, macs, strict=True)
        ],
    )
    for soft in crossed:
        await record_action(
            conn,
            actor,
            severity=Severity.WARNING,
            component=Component.NETWORK,
            action=Action.SOFT_LIMIT_EXCEEDED,
            target=f"/cloud/virtualdatacenters/{vdc_id}/privatenetworks/{vlan_id}",
            message=f"Network {spec.name} passes the {soft}",
            datacenter_id=datacenter_id,
        )
    return Network(id=vlan_id, vdc_id=vdc_id, tag=tag, is_default=is_default, spec=spec)


async def _record(
    conn: AsyncConnection, actor: Actor, action: Action, net: Network, dc_id: int, verb: str
) -> None:
    await record_action(
        conn,
        actor,
        component=Component.NETWORK,
        action=action,
        target=f"/cloud/virtualdatacenters/{net.vdc_id}/privatenetworks/{net.id}",
        message=f"Private network {net.spec.name} (VLAN {net.tag}) {verb}",
        datacenter_id=dc_id,
    )


async def list_networks(
    engine: AsyncEngine, vdc_id: int, scope: Scope, *, page: PageRequest
) -> Page[Network]:
    async with engine.connect() as conn:
        await fetch_vdc_row(conn, vdc_id, scope)
        rows, total = await fetch_page(
            conn,
            select(_vlan).where(_vlan.c.vdc_id == vdc_id),
            page,
            sortable=SORTABLE,
            default_sort="id",
            tiebreaker=_vlan.c.id,
            name=_vlan.c.name,
        )
    return Page(items=[network_of(r) for r in rows], total=total)


async def _get(conn: AsyncConnection, vdc_id: int, vlan_id: int) -> Network:
    row = (
        await conn.execute(select(_vlan).where(_vlan.c.id == vlan_id, _vlan.c.vdc_id == vdc_id))
    ).one_or_none()
    if row is None:
        raise _not_found()
    return network_of(row)


async def get_network(engine: AsyncEngine, vdc_id: int, vlan_id: int, scope: Scope) -> Network:
    async with engine.connect() as conn:
        await fetch_vdc_row(conn, vdc_id, scope)
        return await _get(conn, vdc_id, vlan_id)


async def default_network(conn: AsyncConnection, vdc_id: int) -> Network | None:
    row = (
        await conn.execute(select(_vlan).where(_vlan.c.vdc_id == vdc_id, _vlan.c.is_default))
    ).first()
    return network_of(row) if row is not None else None


async def get_default_network(engine: AsyncEngine, vdc_id: int, scope: Scope) -> Network:
    async with engine.connect() as conn:
        await fetch_vdc_row(conn, vdc_id, scope)
        found = await default_network(conn, vdc_id)
    if found is None:
        raise _not_found()
    return found


async def create_network(
    engine: AsyncEngine,
    vdc_id: int,
    spec: NetworkSpec,
    scope: Scope,
    *,
    is_default: bool,
    actor: Actor,
) -> Network:
    """Another private network of the VDC; made the default (the previous one no longer
    is) when `is_default`."""
    spec = validate_network(spec)
    for attempt in range(ATTEMPTS):
        try:
            async with engine.begin() as conn:
                vdc = await fetch_vdc_row(conn, vdc_id, scope)
                if await taken(conn, _vlan, _vlan.c.vdc_id == vdc_id, _vlan.c.name == spec.name):
                    raise _duplicated(spec.name)
                if is_default:
                    await conn.execute(
                        _vlan.update().where(_vlan.c.vdc_id == vdc_id).values(is_default=False)
                    )
                net = await insert_network(
                    conn,
                    vdc_id=vdc_id,
                    datacenter_id=vdc.datacenter_id,
                    hypervisor_type=vdc.hypervisor_type,
                    spec=spec,
                    is_default=is_default,
                    actor=actor,
                )
                await _record(conn, actor, Action.VLAN_CREATED, net, vdc.datacenter_id, "created")
                return net
        except IntegrityError:
            if attempt == ATTEMPTS - 1:
                raise Conflict(
                    "Concurrent changes kept taking the network's tag: try again",
                    code=NO_FREE_TAG,
                ) from None
    raise AssertionError("unreachable")


async def update_network(
    engine: AsyncEngine,
    vdc_id: int,
    vlan_id: int,
    spec: NetworkSpec,
    scope: Scope,
    *,
    is_default: bool,
    actor: Actor,
) -> Network:
    """Change the network's name, DNS settings and default flag. Its address, mask and
    gateway are what its addresses were made from: changing them is refused (VLAN-2).
    Making it the default takes the flag from the previous one; a VDC keeps exactly one
    default, so the default's flag cannot be cleared (make another one the default)."""
    spec = validate_network(spec)
    try:
        async with engine.begin() as conn:
            vdc = await fetch_vdc_row(conn, vdc_id, scope)
            found = await _get(conn, vdc_id, vlan_id)
            old = found.spec
            if (spec.address, spec.mask, spec.gateway) != (old.address, old.mask, old.gateway):
                raise Conflict(
                    "A network's address, mask and gateway cannot change", code=INVALID_NETWORK
                )
            if found.is_default and not is_default:
                raise Conflict(
                    "A virtual datacenter always has a default network: make another one "
                    "the default instead",
                    code=DEFAULT_NETWORK,
                )
            if await taken(
                conn, _vlan, _vlan.c.vdc_id == vdc_id, _vlan.c.name == spec.name, but=vlan_id
            ):
                raise _duplicated(spec.name)
            if is_default and not found.is_default:
                await conn.execute(
                    _vlan.update().where(_vlan.c.vdc_id == vdc_id).values(is_default=False)
                )
            await conn.execute(
                _vlan.update()
                .where(_vlan.c.id == vlan_id)
                .values(
                    name=spec.name,
                    primary_dns=spec.primary_dns,
                    secondary_dns=spec.secondary_dns,
                    sufix_dns=spec.sufix_dns,
                    is_default=is_default,
                )
            )
            net = Network(
                id=vlan_id, vdc_id=vdc_id, tag=found.tag, is_default=is_default, spec=spec
            )
            await _record(conn, actor, Action.VLAN_EDITED, net, vdc.datacenter_id, "modified")
    except IntegrityError:
        raise _duplicated(spec.name) from None
    return net


async def delete_network(
    engine: AsyncEngine, vdc_id: int, vlan_id: int, scope: Scope, *, actor: Actor
) -> None:
    """Remove a network and its addresses: never the default, never while a VM holds one
    of its addresses."""
    async with engine.begin() as conn:
        vdc = await fetch_vdc_row(conn, vdc_id, scope)
        found = await _get(conn, vdc_id, vlan_id)
        if found.is_default:
            raise Conflict("The default network cannot be deleted", code=DEFAULT_NETWORK)
        used = (
            await conn.execute(
                select(func.count())
                .select_from(_ip)
                .where(_ip.c.vlan_id == vlan_id, _ip.c.virtual_machine_id.is_not(None))
            )
        ).scalar_one()
        if used:
            raise Conflict(
                f"{used} address(es) of the network are NICs of virtual machines",
                code=NETWORK_IN_USE,
            )
        # Guarded by the same condition: a NIC taken since the count keeps its address.
        await conn.execute(
            _ip.delete().where(_ip.c.vlan_id == vlan_id, _ip.c.virtual_machine_id.is_(None))
        )
        remaining = (
            await conn.execute(
                select(func.count()).select_from(_ip).where(_ip.c.vlan_id == vlan_id)
            )
        ).scalar_one()
        if remaining:
            raise Conflict("The network's addresses are in use", code=NETWORK_IN_USE)
        await conn.execute(_vlan.delete().where(_vlan.c.id == vlan_id))
        await _record(conn, actor, Action.VLAN_DELETED, found, vdc.datacenter_id, "deleted")


def _ip_select() -> Any:
    return select(_ip, _vlan.c.vdc_id).join(_vlan, _vlan.c.id == _ip.c.vlan_id)


async def list_addresses(
    engine: AsyncEngine,
    vdc_id: int,
    scope: Scope,
    *,
    page: PageRequest,
    vlan_id: int | None = None,
) -> Page[Address]:
    """A page of the addresses of one network of the VDC, or of all of them."""
    async with engine.connect() as conn:
        await fetch_vdc_row(conn, vdc_id, scope)
        where = [_vlan.c.vdc_id == vdc_id]
        if vlan_id is not None:
            await _get(conn, vdc_id, vlan_id)
            where.append(_ip.c.vlan_id == vlan_id)
        rows, total = await fetch_page(
            conn,
            _ip_select().where(and_(*where)),
            page,
            sortable=IP_SORTABLE,
            default_sort="id",
            tiebreaker=_ip.c.id,
            name=_ip.c.ip,
        )
    return Page(items=[address_of(r) for r in rows], total=total)


async def get_address(
    engine: AsyncEngine, vdc_id: int, vlan_id: int, ip_id: int, scope: Scope
) -> Address:
    async with engine.connect() as conn:
        await fetch_vdc_row(conn, vdc_id, scope)
        await _get(conn, vdc_id, vlan_id)
        row = (
            await conn.execute(_ip_select().where(_ip.c.id == ip_id, _ip.c.vlan_id == vlan_id))
        ).one_or_none()
    if row is None:
        raise NotFound("The requested IP address does not exist", code=IP_NOT_FOUND)
    return address_of(row)
