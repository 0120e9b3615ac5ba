"""Machines: the hypervisor hosts of a rack, with their datastores.

A machine is added from what the datacenter discovered at its address, once the
administrator chose one virtual switch and the datastores to enable. The datacenter's
Virtual System Monitor is told to watch it *before* it is saved: when the datacenter
cannot be reached nothing is saved (503). No database transaction is held open across
a request to a datacenter (on SQLite that would stop every other writer), so a save
that fails after the datacenter was told leaves it watching a host central does not
know: harmless, since it reports only the VMs central subscribed to. Removing works the
other way round: the datacenter stops watching the host, then it is deleted; with
`force` it is deleted while the datacenter cannot be told (which then watches the host
until told to stop).

cpuUsed and ramUsed are the allocator's: no change made here touches them, and a machine
where they are not 0 (VMs run there) is not removed. `state` is what the last check
found (MachineState); `available` is whether its datacenter is heard from.

Passwords are stored encrypted (SecretBox) and never handed back.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.paging import Page, PageRequest
from abiquo_central.db.rows import inserted_id, taken
from abiquo_central.events import Action, Actor, Component, record_action
from abiquo_central.infrastructure import datastores as ds
from abiquo_central.infrastructure.datacenters import (
    DatacenterUnlinked,
    reachable_datacenter,
)
from abiquo_central.infrastructure.racks import (
    MACHINE_NOT_FOUND,
    fetch_machine_row,
    fetch_rack,
)
from abiquo_dc.protocol.definitions import Credentials, HypervisorType
from abiquo_dc.protocol.messages import DiscoveredHost
from abiquo_dc.protocol.monitoring import MonitoredHost
from abiquo_runtime.errors import AbiquoError, Conflict, InvalidInput, NotFound, TemporaryError
from abiquo_runtime.secrets import SecretBox

if TYPE_CHECKING:
    from abiquo_central.infrastructure.discovery import DatacenterCalls

DUPLICATED_IP = "MACHINE-1"
INVALID_MACHINE = "MACHINE-2"
MACHINE_IN_USE = "MACHINE-3"
IDENTITY_CHANGE = "MACHINE-4"

NAME_MAX = 255
DESCRIPTION_MAX = 1024
FIELD_MAX = 255
PASSWORD_MAX = 1024
_INT_MAX = 2**31 - 1
_MB = 1024 * 1024


class MachineState(StrEnum):
    """Abiquo's MachineState."""

    STOPPED = "STOPPED"
    PROVISIONED = "PROVISIONED"
    NOT_MANAGED = "NOT_MANAGED"
    MANAGED = "MANAGED"
    HALTED = "HALTED"
    UNLICENSED = "UNLICENSED"
    HA_IN_PROGRESS = "HA_IN_PROGRESS"
    DISABLED_FOR_HA = "DISABLED_FOR_HA"
    HALTED_FOR_SAVE = "HALTED_FOR_SAVE"


# The failures of a check that mean the host did not answer at all; any other failure
# (credentials refused, ...) means something answers that cannot be managed.
_UNREACHABLE = frozenset({"HV-UNREACHABLE", "GEN-4"})

_m = tables.machine
_dc = tables.datacenter
_live = tables.datacenter_liveness

SORTABLE: Mapping[str, ColumnElement[Any]] = MappingProxyType(
    {
        "id": _m.c.id,
        "name": _m.c.name,
        "ip": _m.c.ip,
        "type": _m.c.type,
        "state": _m.c.state,
    }
)


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """A machine as it is posted (or as it was discovered, ready to post)."""

    name: str
    ip: str
    type: HypervisorType
    cpu: int
    ram: int
    virtual_switch: str
    description: str = ""
    ip_service: str = ""
    port: int = 0
    user: str = ""
    # Write-only; None: none given.
    password: str | None = None
    state: MachineState = MachineState.MANAGED
    initiator_iqn: str = ""
    datastores: tuple[ds.DatastoreSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class Machine:
    id: int
    datacenter_id: int
    rack_id: int
    name: str
    description: str
    ip: str
    ip_service: str
    type: str
    port: int
    user: str
    state: str
    cpu: int
    ram: int
    cpu_used: int
    ram_used: int
    virtual_switch: str
    initiator_iqn: str
    datastores: tuple[ds.Datastore, ...]
    reserved_enterprise_id: int | None
    # Whether its datacenter was heard from within the liveness timeout.
    available: bool


def from_discovered(host: DiscoveredHost, *, port: int = 0, user: str = "") -> MachineSpec:
    """A discovered host as a machine to post: every NIC offered as a virtual switch
    (the administrator keeps one), every datastore disabled (the administrator enables
    the ones VM disks may go to)."""
    return MachineSpec(
        name=host.name,
        ip=host.address,
        ip_service=host.address,
        type=host.hypervisor_type,
        port=port,
        user=user,
        state=MachineState.MANAGED,
        # Abiquo counts virtual CPUs: every core of every socket.
        cpu=host.cpu_cores * host.cpu_sockets,
        ram=host.ram_bytes // _MB,
        virtual_switch=",".join(n.name for n in host.nics),
        initiator_iqn=host.initiator_iqn,
        datastores=tuple(
            ds.DatastoreSpec(
                name=d.name,
                root_path=d.path,
                size=d.total_bytes,
                used_size=max(0, d.total_bytes - d.free_bytes),
                enabled=False,
                datastore_uuid=d.uuid,
            )
            for d in host.datastores
        ),
    )


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(message, code=INVALID_MACHINE)


def _address(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise _invalid(f"{what} must be an IPv4 or IPv6 address, not {text!r}") from None


def _check_text(value: str, what: str, most: int) -> None:
    if len(value) > most:
        raise _invalid(f"{what} has at most {most} characters")


def _check_capacity(cpu: int, ram: int) -> None:
    if not 1 <= cpu <= _INT_MAX:
        raise _invalid("cpu (virtual CPUs) must be 1 or more")
    if not 1 <= ram <= _INT_MAX:
        raise _invalid("ram (MB) must be 1 or more")


def _check_switch(virtual_switch: str) -> str:
    switch = virtual_switch.strip()
    if not switch:
        raise _invalid("a machine needs the virtualSwitch its VMs' networks are made on")
    if "," in switch:
        raise _invalid(
            f"choose one virtualSwitch of {switch!r}: the NIC the VMs' networks are made on"
        )
    _check_text(switch, "virtualSwitch", FIELD_MAX)
    return switch


def validate(spec: MachineSpec) -> MachineSpec:
    """`spec` trimmed and canonical (addresses); InvalidInput saying what is wrong."""
    name = spec.name.strip()
    if not name:
        raise _invalid("a machine needs a name")
    _check_text(name, "a machine's name", NAME_MAX)
    _check_text(spec.description, "description", DESCRIPTION_MAX)
    ip = _address(spec.ip, "ip")
    ip_service = _address(spec.ip_service, "ipService") if spec.ip_service.strip() else ip
    if not 0 <= spec.port <= 65535:
        raise _invalid(f"port {spec.port} is out of range (0-65535)")
    _check_text(spec.user, "user", FIELD_MAX)
    _check_text(spec.password or "", "password", PASSWORD_MAX)
    _check_text(spec.initiator_iqn, "initiatorIQN", FIELD_MAX)
    _check_capacity(spec.cpu, spec.ram)
    return replace(
        spec,
        name=name,
        ip=ip,
        ip_service=ip_service,
        virtual_switch=_check_switch(spec.virtual_switch),
        initiator_iqn=spec.initiator_iqn.strip(),
        datastores=ds.validate_all(spec.datastores),
    )


def _target(dc_id: int, rack_id: int, machine_id: int) -> str:
    return f"/admin/datacenters/{dc_id}/racks/{rack_id}/machines/{machine_id}"


async def _record(
    conn: AsyncConnection,
    actor: Actor,
    action: Action,
    row: Any,
    message: str,
) -> None:
    await record_action(
        conn,
        actor,
        component=Component.MACHINE,
        action=action,
        target=_target(row.datacenter_id, row.rack_id, row.id),
        message=message,
        datacenter_id=row.datacenter_id,
    )


def _duplicated(ip: str) -> Conflict:
    return Conflict(f"There is already a machine at {ip} in this datacenter", code=DUPLICATED_IP)


# -- reading ---------------------------------------------------------------------------


def _available(last_seen: datetime | None, now: datetime, liveness_timeout: float) -> bool:
    return last_seen is not None and now - last_seen <= timedelta(seconds=liveness_timeout)


def _machine(
    row: Any, stores: Sequence[ds.Datastore], *, now: datetime, liveness_timeout: float
) -> Machine:
    return Machine(
        id=row.id,
        datacenter_id=row.datacenter_id,
        rack_id=row.rack_id,
        name=row.name,
        description=row.description,
        ip=row.ip,
        ip_service=row.ip_service,
        type=row.type,
        port=row.port,
        user=row.user,
        state=row.state,
        cpu=row.cpu,
        ram=row.ram,
        cpu_used=row.cpu_used,
        ram_used=row.ram_used,
        virtual_switch=row.virtual_switch,
        initiator_iqn=row.initiator_iqn,
        datastores=tuple(stores),
        reserved_enterprise_id=row.reserved_enterprise_id,
        available=_available(row.last_seen, now, liveness_timeout),
    )


def _with_liveness(machines: Any) -> Any:
    """`machines` (the machine table, or a join ending in it) joined to the liveness of
    each machine's datacenter."""
    return machines.join(_dc, _dc.c.id == _m.c.datacenter_id).outerjoin(
        _live, _live.c.dc_uuid == _dc.c.uuid
    )


async def _complete(
    conn: AsyncConnection, rows: Sequence[Any], *, now: datetime, liveness_timeout: float
) -> list[Machine]:
    """Machines from their rows, with their datastores read in one query."""
    stores = await ds.datastores_of(conn, [row.id for row in rows])
    return [
        _machine(row, stores[row.id], now=now, liveness_timeout=liveness_timeout) for row in rows
    ]


async def load_machines(
    conn: AsyncConnection,
    ids: Sequence[int],
    *,
    now: datetime,
    liveness_timeout: float,
    where: Sequence[ColumnElement[bool]] = (),
) -> list[Machine]:
    """The machines with these ids (and `where`), in that order, with their datastores
    and their datacenter's liveness: two queries whatever the number."""
    if not ids:
        return []
    rows = (
        await conn.execute(
            select(*_m.c, _live.c.last_seen)
            .select_from(_with_liveness(_m))
            .where(_m.c.id.in_(ids), *where)
        )
    ).all()
    by_id = {row.id: row for row in rows}
    return await _complete(
        conn,
        [by_id[i] for i in ids if i in by_id],
        now=now,
        liveness_timeout=liveness_timeout,
    )


async def page_of_machines(
    conn: AsyncConnection,
    query: Select[Any],
    page: PageRequest,
    *,
    now: datetime,
    liveness_timeout: float,
) -> Page[Machine]:
    """A page of the machines `query` (a select of machine.id) finds, in three queries:
    the count, the page, its datastores.

    The page is chosen by ids on the machine table alone (an index answers it without
    reading the rows it skips, however deep the page), and only its rows are joined to
    the rest (a "deferred join").
    """
    sort_name = page.by if page.by is not None else "id"
    column = SORTABLE.get(sort_name)
    if column is None:
        known = ", ".join(sorted(SORTABLE))
        raise InvalidInput(f"cannot sort by '{sort_name}'; sort by one of: {known}")
    if page.has:
        query = query.where(_m.c.name.contains(page.has, autoescape=True))
    total = (
        await conn.execute(select(func.count()).select_from(query.order_by(None).subquery()))
    ).scalar_one()
    order = (column.asc(), _m.c.id.asc()) if page.asc else (column.desc(), _m.c.id.desc())
    chosen = query.order_by(*order).offset(page.startwith).limit(page.limit).subquery()
    rows = (
        await conn.execute(
            select(*_m.c, _live.c.last_seen)
            .select_from(_with_liveness(chosen.join(_m, _m.c.id == chosen.c.id)))
            .order_by(*order)
        )
    ).all()
    items = await _complete(conn, rows, now=now, liveness_timeout=liveness_timeout)
    return Page(items=items, total=int(total))


async def list_machines(
    engine: AsyncEngine,
    dc_id: int,
    rack_id: int,
    *,
    page: PageRequest,
    now: datetime,
    liveness_timeout: float,
) -> Page[Machine]:
    """A page of the rack's machines (`has` filters on the name)."""
    async with engine.connect() as conn:
        found = await page_of_machines(
            conn,
            select(_m.c.id).where(_m.c.rack_id == rack_id),
            page,
            now=now,
            liveness_timeout=liveness_timeout,
        )
        # The rack is read only when its machines do not show that it is there, in that
        # datacenter (all of a rack's machines are in its datacenter): NotFound if not.
        if not found.items or found.items[0].datacenter_id != dc_id:
            await fetch_rack(conn, dc_id, rack_id)
        return found


async def _one(
    conn: AsyncConnection,
    machine_id: int,
    *,
    now: datetime,
    liveness_timeout: float,
    where: Sequence[ColumnElement[bool]] = (),
) -> Machine:
    found = await load_machines(
        conn, [machine_id], now=now, liveness_timeout=liveness_timeout, where=where
    )
    if not found:
        raise NotFound("The requested machine does not exist", code=MACHINE_NOT_FOUND)
    return found[0]


async def get_machine(
    engine: AsyncEngine,
    dc_id: int,
    rack_id: int,
    machine_id: int,
    *,
    now: datetime,
    liveness_timeout: float,
) -> Machine:
    async with engine.connect() as conn:
        found = await load_machines(
            conn,
            [machine_id],
            now=now,
            liveness_timeout=liveness_timeout,
            where=(_m.c.rack_id == rack_id, _m.c.datacenter_id == dc_id),
        )
        if not found:
            # Says which of the datacenter, the rack and the machine is missing.
            await fetch_machine_row(conn, dc_id, rack_id, machine_id)
        return found[0]


# -- changing --------------------------------------------------------------------------


def _credentials(user: str, password_secret: str, secrets: SecretBox) -> Credentials:
    return Credentials(
        user=user, password=secrets.decrypt(password_secret) if password_secret else ""
    )


async def _ip_taken(conn: AsyncConnection, dc_id: int, ip: str) -> bool:
    return await taken(conn, _m, _m.c.datacenter_id == dc_id, _m.c.ip == ip)


async def create_machine(
    engine: AsyncEngine,
    calls: DatacenterCalls,
    dc_id: int,
    rack_id: int,
    spec: MachineSpec,
    *,
    actor: Actor,
    secrets: SecretBox,
    now: datetime,
    liveness_timeout: float,
) -> Machine:
    """Add a machine to the rack, watched by its datacenter from now on.

    In this order, so that a failure leaves nothing half-done: the input is checked
    (400), the rack (404) and the address (409, one machine per address in a
    datacenter); the datacenter is asked to watch the host (503 when it cannot be
    reached: nothing is saved); then the machine and its datastores are saved in one
    transaction, with its event. The state saved is MANAGED: the datacenter watches it.
    """
    spec = validate(spec)
    async with engine.connect() as conn:
        await fetch_rack(conn, dc_id, rack_id)
        if await _ip_taken(conn, dc_id, spec.ip):
            raise _duplicated(spec.ip)
    dc = await reachable_datacenter(engine, dc_id, now=now, liveness_timeout=liveness_timeout)
    assert dc.uuid is not None  # reachable_datacenter refuses a datacenter without one
    password = spec.password or ""
    await calls.monitor(
        dc.uuid,
        MonitoredHost(
            address=spec.ip,
            type=spec.type,
            port=spec.port,
            credentials=Credentials(user=spec.user, password=password),
        ),
    )
    try:
        async with engine.begin() as conn:
            machine_id = inserted_id(
                await conn.execute(
                    _m.insert().values(
                        datacenter_id=dc_id,
                        rack_id=rack_id,
                        name=spec.name,
                        description=spec.description,
                        ip=spec.ip,
                        ip_service=spec.ip_service,
                        type=spec.type.value,
                        port=spec.port,
                        user=spec.user,
                        password_secret=secrets.encrypt(password) if password else "",
                        state=MachineState.MANAGED.value,
                        cpu=spec.cpu,
                        ram=spec.ram,
                        cpu_used=0,
                        ram_used=0,
                        virtual_switch=spec.virtual_switch,
                        initiator_iqn=spec.initiator_iqn,
                        reserved_enterprise_id=None,
                        created_at=now,
                    )
                )
            )
            if spec.datastores:
                await conn.execute(
                    tables.datastore.insert(),
                    [{"machine_id": machine_id, **ds.values(d)} for d in spec.datastores],
                )
            row = (await conn.execute(select(_m).where(_m.c.id == machine_id))).one()
            await _record(
                conn,
                actor,
                Action.MACHINE_CREATE,
                row,
                f"Machine {spec.name} ({spec.type.value} at {spec.ip}) added",
            )
            return await _one(conn, machine_id, now=now, liveness_timeout=liveness_timeout)
    except IntegrityError:
        # Another request added a machine at this address meanwhile: the datacenter
        # watches the host for that one, so it is not told to stop.
        raise _duplicated(spec.ip) from None


@dataclass(frozen=True, slots=True)
class DatastoreToggle:
    """A datastore of the machine named in a PUT: by id when given, else by name."""

    name: str
    enabled: bool
    directory: str | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class MachineChange:
    """What a PUT may change of a machine. ip, type and port name the host the
    datacenter watches: when given they must be the stored ones."""

    name: str
    description: str
    ip_service: str
    user: str
    virtual_switch: str
    initiator_iqn: str
    cpu: int
    ram: int
    # None: keep the stored one.
    password: str | None = None
    datastores: tuple[DatastoreToggle, ...] = ()
    ip: str = ""
    type: str = ""
    port: int | None = None


def _check_identity(row: Any, change: MachineChange) -> None:
    differs: list[str] = []
    if change.ip.strip() and _address(change.ip, "ip") != row.ip:
        differs.append("ip")
    if change.type.strip() and change.type.strip().upper() != row.type:
        differs.append("type")
    if change.port is not None and change.port != row.port:
        differs.append("port")
    if differs:
        raise InvalidInput(
            f"{', '.join(differs)} cannot change: they name the host the datacenter "
            "watches. Remove the machine and add it again",
            code=IDENTITY_CHANGE,
        )


async def _toggle_datastores(
    conn: AsyncConnection, machine_id: int, toggles: Sequence[DatastoreToggle]
) -> None:
    if not toggles:
        return
    stored = (await ds.datastores_of(conn, [machine_id]))[machine_id]
    by_id = {d.id: d for d in stored}
    by_name = {d.spec.name: d for d in stored}
    for toggle in toggles:
        found = by_id.get(toggle.id) if toggle.id is not None else by_name.get(toggle.name)
        if found is None:
            raise _invalid(
                f"the machine has no datastore {toggle.name or toggle.id}: add it through "
                "its datastores first"
            )
        directory = found.spec.directory if toggle.directory is None else toggle.directory
        _check_text(directory, "a datastore's directory", ds.PATH_MAX)
        await conn.execute(
            tables.datastore.update()
            .where(tables.datastore.c.id == found.id)
            .values(enabled=toggle.enabled, directory=directory.strip())
        )


async def update_machine(
    engine: AsyncEngine,
    calls: DatacenterCalls,
    dc_id: int,
    rack_id: int,
    machine_id: int,
    change: MachineChange,
    *,
    actor: Actor,
    secrets: SecretBox,
    now: datetime,
    liveness_timeout: float,
) -> Machine:
    """Change what an administrator may change of a machine (see MachineChange) and
    the enabled flag and directory of its datastores. cpuUsed and ramUsed stay.

    New credentials reach the datacenter first (it watches the host with them): 503
    when it cannot be told, and nothing changes.
    """
    name = change.name.strip()
    if not name:
        raise _invalid("a machine needs a name")
    _check_text(name, "a machine's name", NAME_MAX)
    _check_text(change.description, "description", DESCRIPTION_MAX)
    _check_text(change.user, "user", FIELD_MAX)
    _check_text(change.password or "", "password", PASSWORD_MAX)
    _check_text(change.initiator_iqn, "initiatorIQN", FIELD_MAX)
    _check_capacity(change.cpu, change.ram)
    switch = _check_switch(change.virtual_switch)
    async with engine.connect() as conn:
        row = await fetch_machine_row(conn, dc_id, rack_id, machine_id)
    _check_identity(row, change)
    ip_service = _address(change.ip_service, "ipService") if change.ip_service.strip() else row.ip
    stored_password = secrets.decrypt(row.password_secret) if row.password_secret else ""
    password = stored_password if change.password is None else change.password
    if change.user != row.user or password != stored_password:
        dc = await reachable_datacenter(engine, dc_id, now=now, liveness_timeout=liveness_timeout)
        assert dc.uuid is not None
        await calls.monitor(
            dc.uuid,
            MonitoredHost(
                address=row.ip,
                type=HypervisorType(row.type),
                port=row.port,
                credentials=Credentials(user=change.user, password=password),
            ),
        )
    async with engine.begin() as conn:
        row = await fetch_machine_row(conn, dc_id, rack_id, machine_id)
        if change.cpu < row.cpu_used or change.ram < row.ram_used:
            raise Conflict(
                f"VMs use {row.cpu_used} CPUs and {row.ram_used} MB of the machine: "
                "cpu and ram cannot be set below that",
                code=MACHINE_IN_USE,
            )
        await conn.execute(
            _m.update()
            .where(_m.c.id == machine_id)
            .values(
                name=name,
                description=change.description,
                ip_service=ip_service,
                user=change.user,
                password_secret=secrets.encrypt(password) if password else "",
                virtual_switch=switch,
                initiator_iqn=change.initiator_iqn.strip(),
                cpu=change.cpu,
                ram=change.ram,
            )
        )
        await _toggle_datastores(conn, machine_id, change.datastores)
        await _record(conn, actor, Action.MACHINE_MODIFY, row, f"Machine {name} modified")
        return await _one(conn, machine_id, now=now, liveness_timeout=liveness_timeout)


async def delete_machine(
    engine: AsyncEngine,
    calls: DatacenterCalls,
    dc_id: int,
    rack_id: int,
    machine_id: int,
    *,
    actor: Actor,
    secrets: SecretBox,
    now: datetime,
    liveness_timeout: float,
    force: bool = False,
) -> None:
    """Remove a machine where no VM runs (409 otherwise): the datacenter stops watching
    it, then it is deleted with its datastores.

    When the datacenter cannot be told (503 DC-1, 409 DC-2), nothing is deleted unless
    `force`: then the machine goes anyway. Should the allocator place a VM on it between
    the check and the delete, the datacenter is asked to watch it again (409).
    """
    async with engine.connect() as conn:
        row = await fetch_machine_row(conn, dc_id, rack_id, machine_id)
    if row.cpu_used > 0 or row.ram_used > 0:
        raise Conflict(
            f"VMs run on machine {row.name}: undeploy or move them first", code=MACHINE_IN_USE
        )
    dc_uuid: str | None = None
    try:
        dc = await reachable_datacenter(engine, dc_id, now=now, liveness_timeout=liveness_timeout)
        assert dc.uuid is not None
        await calls.stop_monitoring(dc.uuid, row.ip)
        dc_uuid = dc.uuid
    except (TemporaryError, DatacenterUnlinked):
        if not force:
            raise
    try:
        async with engine.begin() as conn:
            await conn.execute(
                tables.datastore.delete().where(tables.datastore.c.machine_id == machine_id)
            )
            gone = await conn.execute(
                _m.delete().where(_m.c.id == machine_id, _m.c.cpu_used == 0, _m.c.ram_used == 0)
            )
            if gone.rowcount != 1:
                # The allocator placed a VM there meanwhile (the datastores come back
                # with the rollback).
                raise Conflict(
                    f"VMs run on machine {row.name}: undeploy or move them first",
                    code=MACHINE_IN_USE,
                )
            await _record(conn, actor, Action.MACHINE_DELETE, row, f"Machine {row.name} removed")
    except Exception:
        if dc_uuid is not None:
            # It stays: the datacenter watches it again (best effort; the failure that
            # kept it is what the caller needs to hear about).
            with contextlib.suppress(AbiquoError):
                await calls.monitor(
                    dc_uuid,
                    MonitoredHost(
                        address=row.ip,
                        type=HypervisorType(row.type),
                        port=row.port,
                        credentials=_credentials(row.user, row.password_secret, secrets),
                    ),
                )
        raise


async def check_machine(
    engine: AsyncEngine,
    calls: DatacenterCalls,
    dc_id: int,
    rack_id: int,
    machine_id: int,
    *,
    actor: Actor,
    secrets: SecretBox,
    now: datetime,
    liveness_timeout: float,
) -> MachineState:
    """Ask the datacenter whether the host answers, with its stored credentials, and
    store what it found: MANAGED when it answers, STOPPED when it does not, NOT_MANAGED
    when something answers that cannot be managed (credentials refused, ...)."""
    async with engine.connect() as conn:
        row = await fetch_machine_row(conn, dc_id, rack_id, machine_id)
    dc = await reachable_datacenter(engine, dc_id, now=now, liveness_timeout=liveness_timeout)
    assert dc.uuid is not None
    found = await calls.discover(
        dc.uuid,
        hypervisor=HypervisorType(row.type),
        addresses=[row.ip],
        port=row.port,
        credentials=_credentials(row.user, row.password_secret, secrets),
    )
    if found.hosts:
        state = MachineState.MANAGED
    elif all(f.code in _UNREACHABLE for f in found.errors):
        state = MachineState.STOPPED
    else:
        state = MachineState.NOT_MANAGED
    async with engine.begin() as conn:
        await conn.execute(_m.update().where(_m.c.id == machine_id).values(state=state.value))
        await _record(
            conn, actor, Action.MACHINE_CHECK, row, f"Machine {row.name} checked: {state.value}"
        )
    return state
