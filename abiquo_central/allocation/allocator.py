"""The allocator: a machine with room for a VM, and a datastore of it for the VM's disk.

Candidates are the machines of the VDC's datacenter and hypervisor type that are
MANAGED, not reserved for another enterprise (and, for an enterprise restricted to its
reservations, reserved for it), with enough free CPU and RAM and an enabled datastore
with room for the disk. The one with the most free RAM is tried first (VMs spread over
the machines), and on it the datastore with the most free space.

Claims are atomic in the database, never in a process: one transaction adds the VM's
CPU and RAM to the machine with an UPDATE whose WHERE says there is still room, the
same for the datastore, and moves the VM from NOT_ALLOCATED to ALLOCATED. When a claim
finds no room (another central process took it since the candidates were read) the
transaction is rolled back and the next candidate is tried. Two processes allocating at
once can therefore never over-commit a machine, and no lock outlives a transaction. The
machine's row, locked by its UPDATE until the commit, also serialises the choice of a
remote-display port among the VMs of that machine.

No claim reads with a lock on the VMs' machine index: InnoDB would lock the gaps of that
index, and two claims on neighbouring machines, each inserting its VM where the other
locked, deadlock. A claim InnoDB still picks as a deadlock's victim is tried again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.retry import deadlocked
from abiquo_central.db.rows import by_primary_key
from abiquo_runtime.errors import Conflict, NotFound

NO_ROOM = "SCHEDULER-1"
NOT_ALLOCATABLE = "SCHEDULER-2"
VM_NOT_FOUND = "VM-0"

# The remote display ports of a machine's VMs start here (VNC's first display).
FIRST_DISPLAY_PORT = 5900
# How many candidates one allocation tries before it gives up (each lost a race).
MAX_ATTEMPTS = 16
# How often a claim InnoDB rolled back as a deadlock's victim is tried again.
DEADLOCK_RETRIES = 3

_m, _ds, _vm = tables.machine, tables.datastore, tables.virtual_machine


class NoRoom(Conflict):
    """No machine of the VDC's datacenter and type has room for the VM (409)."""

    code = NO_ROOM


@dataclass(frozen=True, slots=True)
class Allocation:
    machine_id: int
    datastore_id: int
    # Where the VM's console answers: the machine's address and a port of its own there.
    vdrp_ip: str
    vdrp_port: int


@dataclass(frozen=True, slots=True)
class _Need:
    vm_id: int
    cpu: int
    ram: int
    hd: int
    datacenter_id: int
    hypervisor_type: str
    enterprise_id: int
    restricted: bool


async def _need(conn: AsyncConnection, vm_id: int) -> _Need:
    vdc, ent = tables.virtual_datacenter, tables.enterprise
    row = (
        await conn.execute(
            select(
                _vm.c.cpu,
                _vm.c.ram,
                _vm.c.hd_bytes,
                _vm.c.state,
                vdc.c.datacenter_id,
                vdc.c.hypervisor_type,
                vdc.c.enterprise_id,
                ent.c.is_reservation_restricted,
            )
            .join(vdc, vdc.c.id == _vm.c.vdc_id)
            .join(ent, ent.c.id == vdc.c.enterprise_id)
            .where(_vm.c.id == vm_id)
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"there is no virtual machine {vm_id}", code=VM_NOT_FOUND)
    if row.state != "NOT_ALLOCATED":
        raise Conflict(
            f"virtual machine {vm_id} is {row.state}: only a NOT_ALLOCATED one is allocated",
            code=NOT_ALLOCATABLE,
        )
    return _Need(
        vm_id=vm_id,
        cpu=row.cpu,
        ram=row.ram,
        hd=row.hd_bytes,
        datacenter_id=row.datacenter_id,
        hypervisor_type=row.hypervisor_type,
        enterprise_id=row.enterprise_id,
        restricted=bool(row.is_reservation_restricted),
    )


async def _candidates(
    conn: AsyncConnection, need: _Need, *, now: datetime, liveness_timeout: float
) -> list[Any]:
    """(machine id, ip, datastore id) pairs with room, best first."""
    live = tables.datacenter_liveness
    dc = tables.datacenter
    reserved = (
        _m.c.reserved_enterprise_id == need.enterprise_id
        if need.restricted
        else or_(
            _m.c.reserved_enterprise_id.is_(None), _m.c.reserved_enterprise_id == need.enterprise_id
        )
    )
    free_ds = (_ds.c.size - _ds.c.used_size).label("free_ds")
    query = (
        select(_m.c.id, _m.c.ip, _ds.c.id.label("datastore_id"), free_ds)
        .join(_ds, and_(_ds.c.machine_id == _m.c.id, _ds.c.enabled.is_(True)))
        .join(dc, dc.c.id == _m.c.datacenter_id)
        .join(live, live.c.dc_uuid == dc.c.uuid)
        .where(
            _m.c.datacenter_id == need.datacenter_id,
            _m.c.type == need.hypervisor_type,
            _m.c.state == "MANAGED",
            reserved,
            _m.c.cpu - _m.c.cpu_used >= need.cpu,
            _m.c.ram - _m.c.ram_used >= need.ram,
            _ds.c.size - _ds.c.used_size >= need.hd,
            # A machine whose datacenter is not heard from cannot be deployed on.
            live.c.last_seen >= now - timedelta(seconds=liveness_timeout),
        )
        .order_by((_m.c.ram - _m.c.ram_used).desc(), free_ds.desc(), _m.c.id, _ds.c.id)
    )
    rows = (await conn.execute(query)).all()
    # One datastore per machine: the first, which has the most free space.
    seen: set[int] = set()
    best = []
    for row in rows:
        if row.id not in seen:
            seen.add(row.id)
            best.append(row)
    return best


class _Lost(Exception):
    """A claim found no room any more: roll back, try the next candidate."""


async def _claim(conn: AsyncConnection, need: _Need, candidate: Any) -> Allocation:
    claimed = await conn.execute(
        _m.update()
        .where(
            _m.c.id == candidate.id,
            _m.c.cpu_used + need.cpu <= _m.c.cpu,
            _m.c.ram_used + need.ram <= _m.c.ram,
        )
        .values(cpu_used=_m.c.cpu_used + need.cpu, ram_used=_m.c.ram_used + need.ram)
    )
    if claimed.rowcount != 1:
        raise _Lost
    stored = await conn.execute(
        _ds.update()
        .where(
            _ds.c.id == candidate.datastore_id,
            _ds.c.enabled.is_(True),
            _ds.c.used_size + need.hd <= _ds.c.size,
        )
        .values(used_size=_ds.c.used_size + need.hd)
    )
    if stored.rowcount != 1:
        raise _Lost
    # The machine's row is locked by the UPDATE above until the commit, so every claim
    # on it before this one has committed: this transaction's first plain read (its
    # snapshot is taken now, under that lock) sees every port they took. A plain read:
    # a locking one would lock the index's gaps (see the module).
    taken = (
        await conn.execute(
            select(func.max(_vm.c.vdrp_port)).where(_vm.c.machine_id == candidate.id)
        )
    ).scalar_one_or_none()
    port = max(FIRST_DISPLAY_PORT, (taken or 0) + 1)
    moved = await conn.execute(
        by_primary_key(
            _vm.update()
            .where(_vm.c.id == need.vm_id, _vm.c.state == "NOT_ALLOCATED")
            .values(
                state="ALLOCATED",
                machine_id=candidate.id,
                datastore_id=candidate.datastore_id,
                vdrp_ip=candidate.ip,
                vdrp_port=port,
            )
        )
    )
    if moved.rowcount != 1:
        raise Conflict(
            f"virtual machine {need.vm_id} was allocated meanwhile", code=NOT_ALLOCATABLE
        )
    return Allocation(
        machine_id=candidate.id,
        datastore_id=candidate.datastore_id,
        vdrp_ip=candidate.ip,
        vdrp_port=port,
    )


async def allocate(
    engine: AsyncEngine, vm_id: int, *, now: datetime, liveness_timeout: float
) -> Allocation:
    """Allocate the NOT_ALLOCATED VM: it is ALLOCATED on the machine and datastore
    returned, whose capacity it now counts against. NoRoom (409) when none has room."""
    async with engine.connect() as conn:
        need = await _need(conn, vm_id)
        candidates = await _candidates(conn, need, now=now, liveness_timeout=liveness_timeout)
    for candidate in candidates[:MAX_ATTEMPTS]:
        for _ in range(DEADLOCK_RETRIES + 1):
            try:
                async with engine.begin() as conn:
                    return await _claim(conn, need, candidate)
            except _Lost:
                break
            except OperationalError as exc:
                # Rolled back whole by the database: the same claim may be tried again.
                if not deadlocked(exc):
                    raise
        # Lost the race for this one, or a deadlock's victim every time: the next.
    raise NoRoom(
        f"no {need.hypervisor_type} machine of the datacenter has room for "
        f"{need.cpu} CPU, {need.ram} MB of RAM and {need.hd} bytes of disk"
    )


async def claim_more(conn: AsyncConnection, machine_id: int, *, cpu: int, ram: int) -> None:
    """Count `cpu` and `ram` more (or, negative, less) against the machine, in `conn`'s
    transaction; NoRoom when it has not that much room left (nothing is counted then)."""
    if cpu <= 0 and ram <= 0:
        await conn.execute(
            _m.update()
            .where(_m.c.id == machine_id)
            .values(cpu_used=_less(_m.c.cpu_used, -cpu), ram_used=_less(_m.c.ram_used, -ram))
        )
        return
    claimed = await conn.execute(
        _m.update()
        .where(
            _m.c.id == machine_id,
            _m.c.cpu_used + cpu <= _m.c.cpu,
            _m.c.ram_used + ram <= _m.c.ram,
        )
        .values(cpu_used=_m.c.cpu_used + cpu, ram_used=_m.c.ram_used + ram)
    )
    if claimed.rowcount != 1:
        raise NoRoom(f"its machine has no room for {cpu} more CPU and {ram} MB more RAM")


def _less(column: Any, amount: int) -> Any:
    """`column - amount`, never below 0 (a usage fixed by hand must not go negative)."""
    return case((column < amount, 0), else_=column - amount)


async def deallocate(engine: AsyncEngine, vm_id: int) -> None:
    """Give back what the VM held: it is NOT_ALLOCATED, its machine and datastore count
    it no more. Nothing happens to a VM that holds nothing."""
    async with engine.begin() as conn:
        await release(conn, vm_id)


async def release(conn: AsyncConnection, vm_id: int) -> None:
    """`deallocate` in `conn`'s transaction (with the change that ends the VM's use)."""
    row = (
        await conn.execute(
            select(_vm.c.machine_id, _vm.c.datastore_id, _vm.c.cpu, _vm.c.ram, _vm.c.hd_bytes)
            .where(_vm.c.id == vm_id)
            .with_for_update()
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"there is no virtual machine {vm_id}", code=VM_NOT_FOUND)
    if row.machine_id is not None:
        await conn.execute(
            _m.update()
            .where(_m.c.id == row.machine_id)
            .values(cpu_used=_less(_m.c.cpu_used, row.cpu), ram_used=_less(_m.c.ram_used, row.ram))
        )
    if row.datastore_id is not None:
        await conn.execute(
            _ds.update()
            .where(_ds.c.id == row.datastore_id)
            .values(used_size=_less(_ds.c.used_size, row.hd_bytes))
        )
    await conn.execute(
        _vm.update()
        .where(_vm.c.id == vm_id)
        .values(
            state="NOT_ALLOCATED",
            locked_state=None,
            machine_id=None,
            datastore_id=None,
            vdrp_ip="",
            vdrp_port=0,
        )
    )
