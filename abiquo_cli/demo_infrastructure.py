"""The all-in-one's infrastructure, registered as an administrator would over the API.

Its datacenter with the six remote services at the DC's own URLs, a rack, the demo KVM
host discovered through the DC and added as a machine with its datastores enabled, and
the administrator's enterprise allowed in the datacenter (so that a VDC can be made
there, from the demo template, at once).
Every step looks first and does nothing when it is there already, so each start of the
same state directory finds what the last one made.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import aiohttp
import structlog
from sqlalchemy import select

from abiquo_central.app import Central
from abiquo_central.db import tables
from abiquo_central.events import Actor
from abiquo_central.infrastructure import machines, racks
from abiquo_central.infrastructure.datacenters import DatacenterAway, ensure_datacenter
from abiquo_central.infrastructure.discovery import DatacenterCalls, discover_single
from abiquo_central.infrastructure.remote_services import DC_PATHS, register_remote_service
from abiquo_central.tenants.seed import ADMIN_NICK
from abiquo_dc.protocol.definitions import HypervisorType

DEMO_RACK = "rack-1"
# How long the datacenter may take to be heard from (its first heartbeat).
READY_TIMEOUT = 30.0


async def _admin(central: Central) -> Actor:
    user = tables.user
    async with central.engine.connect() as conn:
        row = (
            await conn.execute(
                select(user.c.id, user.c.enterprise_id).where(user.c.nick == ADMIN_NICK)
            )
        ).one()
    return Actor(user_id=row.id, nick=ADMIN_NICK, enterprise_id=row.enterprise_id)


async def _rack(central: Central, dc_id: int, actor: Actor) -> int:
    rack = tables.rack
    async with central.engine.connect() as conn:
        found = (
            await conn.execute(
                select(rack.c.id).where(rack.c.datacenter_id == dc_id).order_by(rack.c.id)
            )
        ).first()
    if found is not None:
        return int(found.id)
    made = await racks.create_rack(
        central.engine, dc_id, racks.RackSpec(name=DEMO_RACK), actor=actor
    )
    return made.id


async def _may_use(central: Central, enterprise_id: int, dc_id: int) -> None:
    """The administrator's enterprise may use the datacenter (limits there, all
    unlimited): its VDCs, and the demo template's, are there."""
    lim = tables.enterprise_limit
    async with central.engine.connect() as conn:
        found = (
            await conn.execute(
                select(lim.c.id).where(
                    lim.c.enterprise_id == enterprise_id, lim.c.datacenter_id == dc_id
                )
            )
        ).first()
    if found is None:
        async with central.engine.begin() as conn:
            await conn.execute(
                lim.insert().values(enterprise_id=enterprise_id, datacenter_id=dc_id)
            )


async def _machine_at(central: Central, dc_id: int, address: str) -> Any:
    """The machine at `address` (its id, rack and port), or None."""
    m = tables.machine
    async with central.engine.connect() as conn:
        return (
            await conn.execute(
                select(m.c.id, m.c.rack_id, m.c.port).where(
                    m.c.datacenter_id == dc_id, m.c.ip == address
                )
            )
        ).first()


def _as_added(found: machines.MachineSpec) -> machines.MachineSpec:
    """What an administrator posts for the demo host: its first NIC as the virtual
    switch, every datastore enabled."""
    return replace(
        found,
        virtual_switch=found.virtual_switch.split(",")[0],
        datastores=tuple(replace(d, enabled=True) for d in found.datastores),
    )


async def register_demo_infrastructure(
    central: Central,
    *,
    dc_uuid: str,
    dc_url: str,
    name: str,
    location: str,
    host_address: str,
    host_port: int,
) -> None:
    """Register (or find) the datacenter, its services, a rack and the demo KVM host."""
    engine, settings = central.engine, central.settings.datacenters
    log = structlog.get_logger("abiquo.all-in-one")
    actor = await _admin(central)
    dc_id = await ensure_datacenter(engine, uuid=dc_uuid, name=name, location=location)
    async with aiohttp.ClientSession() as session:
        for kind, path in DC_PATHS.items():
            await register_remote_service(
                engine, session, dc_id, kind, f"{dc_url}/{path}", link=central.link, actor=actor
            )
    rack_id = await _rack(central, dc_id, actor)
    await _may_use(central, actor.enterprise_id, dc_id)

    calls = DatacenterCalls(link=central.link, request_timeout=settings.request_timeout)
    existing = await _machine_at(central, dc_id, host_address)
    if existing is not None and existing.port == host_port:
        return
    if existing is not None:
        # The demo AIM listens on another port than last time: the machine goes, and
        # comes back as discovered now.
        await machines.delete_machine(
            engine,
            calls,
            dc_id,
            existing.rack_id,
            existing.id,
            actor=actor,
            secrets=central.secrets,
            now=central.clock(),
            liveness_timeout=settings.liveness_timeout,
            force=True,
        )
    async with asyncio.timeout(READY_TIMEOUT):
        while True:
            try:
                found = await discover_single(
                    engine,
                    calls,
                    dc_id,
                    ip=host_address,
                    hypervisor=HypervisorType.KVM,
                    port=host_port,
                    now=central.clock(),
                    liveness_timeout=settings.liveness_timeout,
                )
                break
            except DatacenterAway:
                # Its first heartbeat has not arrived yet.
                await asyncio.sleep(0.2)
    made = await machines.create_machine(
        engine,
        calls,
        dc_id,
        rack_id,
        _as_added(found),
        actor=actor,
        secrets=central.secrets,
        now=central.clock(),
        liveness_timeout=settings.liveness_timeout,
    )
    log.info("demo host registered", machine=made.id, address=host_address, port=host_port)
