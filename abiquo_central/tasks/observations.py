"""What the datacenters' VSMs see of the VMs, and which VMs central asks them to watch.

A deployed VM is watched: when its deploy finishes, central subscribes it with its
datacenter's VSM (as ON, on its machine); when it is undeployed or found destroyed, it
unsubscribes it. Both go through the outbox, with the change that decides them.

Each VmStateChanged moves the VM's observed state: POWER_ON → ON, POWER_OFF → OFF,
PAUSED → PAUSED, RESUMED → ON, UNKNOWN → UNKNOWN (its host does not answer), MOVED →
the machine it is on now (its CPU and RAM counted there), DESTROYED (gone from every
host, out of band) → NOT_ALLOCATED with its resources freed. An event seen before
central's last change of the VM is stale and changes nothing; a VM a task holds (LOCKED)
is the task's to settle, and one that is not deployed has nothing to move. An event
applied marks the VM with the time it was seen (its updated_at), so that events are
ordered by when the datacenter saw them, not by when central applied them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.allocation import release
from abiquo_central.db import tables
from abiquo_central.events import Action, Component, Severity, record_event
from abiquo_central.tasks.outbox import enqueue
from abiquo_central.tasks.plans import VmState
from abiquo_dc.protocol.jobs import ObservedState
from abiquo_dc.protocol.monitoring import (
    Subscribe,
    Subscription,
    Unsubscribe,
    VmEventKind,
    VmStateChanged,
)

RPC = "rpc"

_vm, _m, _dc = tables.virtual_machine, tables.machine, tables.datacenter

# The states in which a VM is on a hypervisor, as far as central knows.
DEPLOYED = frozenset({VmState.ON, VmState.OFF, VmState.PAUSED, VmState.CONFIGURED, VmState.UNKNOWN})

_STATES = {
    VmEventKind.POWER_ON: VmState.ON,
    VmEventKind.POWER_OFF: VmState.OFF,
    VmEventKind.PAUSED: VmState.PAUSED,
    VmEventKind.RESUMED: VmState.ON,
    VmEventKind.UNKNOWN: VmState.UNKNOWN,
}
_OBSERVED = {
    ObservedState.ON: VmState.ON,
    ObservedState.OFF: VmState.OFF,
    ObservedState.PAUSED: VmState.PAUSED,
    ObservedState.UNKNOWN: VmState.UNKNOWN,
}
_ACTIONS = {
    VmEventKind.POWER_ON: Action.VM_POWERON,
    VmEventKind.POWER_OFF: Action.VM_POWEROFF,
    VmEventKind.PAUSED: Action.VM_PAUSED,
    VmEventKind.RESUMED: Action.VM_RESUMED,
    VmEventKind.UNKNOWN: Action.VM_UNKNOWN,
    VmEventKind.DESTROYED: Action.VM_DESTROY,
    VmEventKind.MOVED: Action.VM_MOVED,
}

_log = structlog.get_logger("abiquo.central.observations")


async def where_it_runs(conn: AsyncConnection, vm_id: int) -> Any:
    """(dc uuid, machine ip) of the VM's machine, or None when it has none."""
    return (
        await conn.execute(
            select(_dc.c.uuid, _m.c.ip)
            .select_from(_vm)
            .join(_m, _m.c.id == _vm.c.machine_id)
            .join(_dc, _dc.c.id == _m.c.datacenter_id)
            .where(_vm.c.id == vm_id)
        )
    ).one_or_none()


async def subscribe(conn: AsyncConnection, vm: Any, state: ObservedState, *, now: datetime) -> None:
    """Queue the VM's subscription with its datacenter's VSM, believed in `state`."""
    found = await where_it_runs(conn, vm.id)
    if found is None or found.uuid is None:
        return
    message = Subscribe(
        subscriptions=[Subscription(vm_uuid=vm.uuid, vm_name=vm.name, host=found.ip, state=state)]
    )
    await enqueue(conn, found.uuid, RPC, message, now=now)


async def unsubscribe(conn: AsyncConnection, vm: Any, *, now: datetime) -> None:
    """Queue the end of the VM's subscription (before its machine is forgotten)."""
    found = await where_it_runs(conn, vm.id)
    if found is None or found.uuid is None:
        return
    await enqueue(conn, found.uuid, RPC, Unsubscribe(vm_uuids=[vm.uuid]), now=now)


async def _move(conn: AsyncConnection, vm: Any, dc_uuid: str, host: str) -> bool:
    """Count the VM on the machine at `host` of the same datacenter; False when central
    knows no such machine (it stays where it was)."""
    target = (
        await conn.execute(
            select(_m.c.id)
            .join(_dc, _dc.c.id == _m.c.datacenter_id)
            .where(_dc.c.uuid == dc_uuid, _m.c.ip == host)
        )
    ).scalar_one_or_none()
    if target is None or target == vm.machine_id:
        return target is not None
    if vm.machine_id is not None:
        await conn.execute(
            _m.update()
            .where(_m.c.id == vm.machine_id)
            .values(cpu_used=_m.c.cpu_used - vm.cpu, ram_used=_m.c.ram_used - vm.ram)
        )
    await conn.execute(
        _m.update()
        .where(_m.c.id == target)
        .values(cpu_used=_m.c.cpu_used + vm.cpu, ram_used=_m.c.ram_used + vm.ram)
    )
    await conn.execute(
        _vm.update().where(_vm.c.id == vm.id).values(machine_id=target, vdrp_ip=host)
    )
    return True


async def apply_vm_event(engine: AsyncEngine, event: VmStateChanged, *, now: datetime) -> None:
    """Move the VM as its datacenter's VSM saw it (see the module's docstring)."""
    async with engine.begin() as conn:
        vm = (
            await conn.execute(select(_vm).where(_vm.c.uuid == event.vm_uuid).with_for_update())
        ).one_or_none()
        if vm is None or VmState(vm.state) not in DEPLOYED:
            return
        if event.observed_at < vm.updated_at:
            _log.info(
                "stale VM event ignored",
                vm=event.vm_uuid,
                kind=event.event.value,
                observed_at=event.observed_at.isoformat(),
                changed_at=vm.updated_at.isoformat(),
            )
            return
        if event.event is VmEventKind.DESTROYED:
            await unsubscribe(conn, vm, now=now)
            await release(conn, vm.id)
        else:
            if event.event is VmEventKind.MOVED:
                await _move(conn, vm, event.dc_uuid, event.host)
            state = _STATES.get(event.event) or _OBSERVED.get(event.state, VmState.UNKNOWN)
            # Marked with when it was seen, not when central got to it: an event seen as
            # early (a domain stopped, then undefined: POWER_OFF and DESTROYED at once)
            # and applied later is no older than this one.
            await conn.execute(
                _vm.update()
                .where(_vm.c.id == vm.id)
                .values(state=state.value, updated_at=event.observed_at)
            )
        await record_event(
            conn,
            severity=Severity.WARNING
            if event.event in (VmEventKind.DESTROYED, VmEventKind.UNKNOWN)
            else Severity.INFO,
            component=Component.VIRTUAL_MACHINE,
            action=_ACTIONS[event.event],
            enterprise_of=vm.enterprise_id,
            target=f"/virtualmachines/{vm.uuid}",
            message=f"Virtual machine {vm.label}: {event.event.value} seen on {event.host}",
            virtual_machine_id=vm.id,
            now=now,
        )


async def subscriptions_of(engine: AsyncEngine, dc_uuid: str) -> list[Subscription]:
    """Every deployed VM of the datacenter, as its VSM should watch it."""
    believed = {
        VmState.ON: ObservedState.ON,
        VmState.OFF: ObservedState.OFF,
        VmState.PAUSED: ObservedState.PAUSED,
    }
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(_vm.c.uuid, _vm.c.name, _vm.c.state, _vm.c.locked_state, _m.c.ip)
                .join(_m, _m.c.id == _vm.c.machine_id)
                .join(_dc, _dc.c.id == _m.c.datacenter_id)
                .where(_dc.c.uuid == dc_uuid)
            )
        ).all()
    return [
        Subscription(
            vm_uuid=r.uuid,
            vm_name=r.name,
            host=r.ip,
            state=believed.get(VmState(r.state)),
        )
        for r in rows
        if VmState(r.state) in DEPLOYED or r.locked_state in DEPLOYED
    ]


# VMs per Subscribe message.
SUBSCRIPTIONS_AT_ONCE = 500


async def resubscribe_all(engine: AsyncEngine, dc_uuid: str, *, now: datetime) -> int:
    """Subscribe every deployed VM of the datacenter again, each with the state central
    believes it in: its VSM reports those it finds otherwise. What a datacenter that was
    away (or restarted) gets, so that what changed meanwhile is known; through the
    outbox, so that it is sent whatever happens to this process. How many VMs."""
    subscriptions = await subscriptions_of(engine, dc_uuid)
    async with engine.begin() as conn:
        for start in range(0, len(subscriptions), SUBSCRIPTIONS_AT_ONCE):
            chunk = subscriptions[start : start + SUBSCRIPTIONS_AT_ONCE]
            await enqueue(conn, dc_uuid, RPC, Subscribe(subscriptions=chunk), now=now)
    return len(subscriptions)
